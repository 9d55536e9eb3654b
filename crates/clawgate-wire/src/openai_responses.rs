//! `openai-responses`: `POST {baseUrl}/responses` (WIRE-2). No `store`,
//! `service_tier` or other OpenAI-only fields go to custom endpoints.

use serde_json::{json, Map, Value};

use crate::decode::{parse_json, str_at, stream_error, u64_at, Common, Decoder};
use crate::endpoint::Endpoint;
use crate::error::{WireError, WireErrorKind};
use crate::sse::SseEvent;
use crate::types::{ChatRequest, Event, Part, Role, StopReason, ToolChoice, Usage};

pub fn body(ep: &Endpoint, req: &ChatRequest) -> Value {
    let mut input = Vec::new();
    for m in &req.messages {
        let mut content = Vec::new();
        for p in &m.parts {
            match (m.role, p) {
                (Role::User, Part::Text(t)) => {
                    content.push(json!({"type": "input_text", "text": t}))
                }
                (Role::User, Part::Image { url }) => {
                    content.push(json!({"type": "input_image", "image_url": url}))
                }
                (Role::Assistant, Part::Text(t)) => {
                    content.push(json!({"type": "output_text", "text": t}))
                }
                (
                    _,
                    Part::ToolCall {
                        id,
                        name,
                        arguments,
                    },
                ) => input.push(json!({
                    "type": "function_call", "call_id": id, "name": name, "arguments": arguments
                })),
                (_, Part::ToolResult { id, content: c, .. }) => input.push(json!({
                    "type": "function_call_output", "call_id": id, "output": c
                })),
                _ => {}
            }
        }
        if !content.is_empty() {
            let role = if m.role == Role::User {
                "user"
            } else {
                "assistant"
            };
            if ep.shaping.string_content {
                let text: Vec<&str> = content.iter().filter_map(|c| c["text"].as_str()).collect();
                input.push(json!({"role": role, "content": text.join("\n")}));
            } else {
                input.push(json!({"role": role, "content": content}));
            }
        }
    }
    let mut b = Map::new();
    b.insert("model".into(), json!(req.model));
    b.insert("input".into(), Value::Array(input));
    if let Some(s) = &req.system {
        b.insert("instructions".into(), json!(s));
    }
    if ep.shaping.tools && !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"type": "function", "name": t.name, "parameters": t.parameters});
                if let Some(d) = &t.description {
                    f["description"] = json!(d);
                }
                f
            })
            .collect();
        b.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &req.tool_choice {
            b.insert(
                "tool_choice".into(),
                match tc {
                    ToolChoice::Auto => json!("auto"),
                    ToolChoice::None => json!("none"),
                    ToolChoice::Required => json!("required"),
                    ToolChoice::Named(n) => json!({"type": "function", "name": n}),
                },
            );
        }
    }
    if let Some(mt) = req.max_tokens {
        b.insert("max_output_tokens".into(), json!(mt));
    }
    if let Some(e) = &req.reasoning_effort {
        b.insert("reasoning".into(), json!({"effort": e}));
    }
    crate::finish_body(b, req, ep)
}

fn usage(u: &Value) -> Option<Usage> {
    u.is_object().then(|| Usage {
        input: u64_at(u, &["input_tokens"]),
        output: u64_at(u, &["output_tokens"]),
        cache_read: u64_at(u, &["input_tokens_details", "cached_tokens"]),
        cache_write: 0,
        reasoning: u64_at(u, &["output_tokens_details", "reasoning_tokens"]),
    })
}

#[derive(Default)]
pub struct ResponsesDecoder {
    c: Common,
    /// Tool calls whose arguments arrived as deltas (so `done` adds none).
    streamed_args: Vec<usize>,
}

impl ResponsesDecoder {
    fn tool_key(v: &Value) -> String {
        v.get("output_index")
            .map(|i| i.to_string())
            .or_else(|| v.get("item_id").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default()
    }

    fn completed(&mut self, resp: &Value) {
        self.c.usage = resp.get("usage").and_then(usage);
        let incomplete = str_at(resp, "status") == "incomplete";
        let reason = resp
            .get("incomplete_details")
            .map(|d| str_at(d, "reason"))
            .unwrap_or_default();
        if incomplete && reason.contains("max_output_tokens") {
            self.c.stop = Some(StopReason::MaxTokens);
        } else if incomplete && reason.contains("content_filter") {
            self.c.stop = Some(StopReason::ContentFilter);
        }
        self.c.finished = true;
    }

    fn failed(resp: &Value) -> WireError {
        let err = resp.get("error").unwrap_or(resp);
        let mut e = WireError::new(WireErrorKind::StreamError, str_at(err, "message"));
        e.code = err.get("code").and_then(Value::as_str).map(str::to_string);
        e.error_type = err.get("type").and_then(Value::as_str).map(str::to_string);
        e
    }
}

impl Decoder for ResponsesDecoder {
    fn on_sse(&mut self, ev: &SseEvent, out: &mut Vec<Event>) -> Result<(), WireError> {
        if ev.is_done() {
            return Ok(());
        }
        let v = parse_json(&ev.data)?;
        let kind = ev.event.as_deref().unwrap_or_else(|| str_at(&v, "type"));
        match kind {
            "response.output_text.delta" => self.c.text(str_at(&v, "delta"), out),
            "response.reasoning_text.delta"
            | "response.reasoning_summary_text.delta"
            | "response.reasoning.delta" => self.c.reasoning(str_at(&v, "delta"), out),
            "response.output_item.added" => {
                let item = v.get("item").unwrap_or(&Value::Null);
                if str_at(item, "type") == "function_call" {
                    let key = Self::tool_key(&v);
                    self.c
                        .tool_start(&key, str_at(item, "call_id"), str_at(item, "name"), out);
                }
            }
            "response.function_call_arguments.delta" => {
                if let Some(i) = self.c.tool_index(&Self::tool_key(&v)) {
                    self.streamed_args.push(i);
                    self.c.tool_args(i, str_at(&v, "delta"), out);
                }
            }
            "response.output_item.done" => {
                let item = v.get("item").unwrap_or(&Value::Null);
                if str_at(item, "type") == "function_call" {
                    let key = Self::tool_key(&v);
                    let i = match self.c.tool_index(&key) {
                        Some(i) => i,
                        None => self.c.tool_start(
                            &key,
                            str_at(item, "call_id"),
                            str_at(item, "name"),
                            out,
                        ),
                    };
                    if !self.streamed_args.contains(&i) {
                        self.c.tool_args(i, str_at(item, "arguments"), out);
                    }
                    self.c.tool_end(i, out);
                }
            }
            "response.completed" | "response.incomplete" => {
                let resp = v.get("response").unwrap_or(&Value::Null);
                self.completed(resp);
                if kind == "response.incomplete" && self.c.stop.is_none() {
                    self.c.stop = Some(StopReason::MaxTokens);
                }
            }
            "response.failed" => {
                return Err(Self::failed(v.get("response").unwrap_or(&Value::Null)))
            }
            "error" => return Err(Self::failed(&v)),
            _ => {
                if let Some(e) = stream_error(&v).filter(|_| kind.is_empty()) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn on_body(&mut self, v: &Value, out: &mut Vec<Event>) -> Result<(), WireError> {
        if let Some(e) = stream_error(v) {
            return Err(e);
        }
        if str_at(v, "status") == "failed" {
            return Err(Self::failed(v));
        }
        for item in v
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match str_at(item, "type") {
                "message" => {
                    for c in item
                        .get("content")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if str_at(c, "type") == "output_text" {
                            self.c.text(str_at(c, "text"), out);
                        }
                    }
                }
                "reasoning" => {
                    for key in ["content", "summary"] {
                        for c in item
                            .get(key)
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            self.c.reasoning(str_at(c, "text"), out);
                        }
                    }
                }
                "function_call" => {
                    let key = str_at(item, "call_id").to_string();
                    let i =
                        self.c
                            .tool_start(&key, str_at(item, "call_id"), str_at(item, "name"), out);
                    self.c.tool_args(i, str_at(item, "arguments"), out);
                    self.c.tool_end(i, out);
                }
                _ => {}
            }
        }
        self.completed(v);
        self.c.finish(out);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Event>) -> Result<(), WireError> {
        if !self.c.finished {
            return Err(WireError::new(
                WireErrorKind::Truncated,
                "stream ended before response.completed",
            ));
        }
        self.c.finish(out);
        Ok(())
    }
}
