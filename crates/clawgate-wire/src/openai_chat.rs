//! `openai-completions`: `POST {baseUrl}/chat/completions` (WIRE-1).

use serde_json::{json, Map, Value};

use crate::decode::{parse_json, str_at, stream_error, u64_at, Common, Decoder};
use crate::endpoint::{Endpoint, MaxTokensField};
use crate::error::{WireError, WireErrorKind};
use crate::sse::SseEvent;
use crate::types::{ChatRequest, Event, Part, Role, StopReason, ToolChoice, Usage};

fn flatten(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.clone()),
            Part::Image { url } => Some(format!("[image: {url}]")),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn content(parts: &[Part], string_only: bool) -> Value {
    let has_image = parts.iter().any(|p| matches!(p, Part::Image { .. }));
    if string_only || !has_image {
        return Value::String(flatten(parts));
    }
    Value::Array(
        parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(json!({"type": "text", "text": t})),
                Part::Image { url } => {
                    Some(json!({"type": "image_url", "image_url": {"url": url}}))
                }
                _ => None,
            })
            .collect(),
    )
}

/// The request body.
pub fn body(ep: &Endpoint, req: &ChatRequest) -> Value {
    let sh = &ep.shaping;
    let mut messages = Vec::new();
    if let Some(s) = &req.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    for m in &req.messages {
        let visible: Vec<Part> = m
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Text(_) | Part::Image { .. }))
            .cloned()
            .collect();
        match m.role {
            Role::User => {
                for p in &m.parts {
                    if let Part::ToolResult { id, content, .. } = p {
                        let mut msg = json!({"role": "tool", "content": content});
                        if !sh.strict_message_keys {
                            msg["tool_call_id"] = json!(id);
                        }
                        messages.push(msg);
                    }
                }
                if !visible.is_empty() {
                    messages.push(
                        json!({"role": "user", "content": content(&visible, sh.string_content)}),
                    );
                }
            }
            Role::Assistant => {
                let calls: Vec<Value> = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolCall {
                            id,
                            name,
                            arguments,
                        } => Some(json!({
                            "id": id, "type": "function",
                            "function": {"name": name, "arguments": arguments}
                        })),
                        _ => None,
                    })
                    .collect();
                let mut msg = json!({"role": "assistant", "content": flatten(&visible)});
                if !calls.is_empty() && !sh.strict_message_keys {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
        }
    }
    let mut b = Map::new();
    b.insert("model".into(), json!(req.model));
    b.insert("messages".into(), Value::Array(messages));
    if sh.tools && !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "parameters": t.parameters});
                if let Some(d) = &t.description {
                    f["description"] = json!(d);
                }
                json!({"type": "function", "function": f})
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
                    ToolChoice::Named(n) => json!({"type": "function", "function": {"name": n}}),
                },
            );
        }
    }
    if let Some(mt) = req.max_tokens {
        let field = sh.max_tokens_field.unwrap_or(if ep.is_native_openai() {
            MaxTokensField::MaxCompletionTokens
        } else {
            MaxTokensField::MaxTokens
        });
        let key = match field {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        };
        b.insert(key.into(), json!(mt));
    }
    if !req.stop.is_empty() {
        b.insert("stop".into(), json!(req.stop));
    }
    if let Some(e) = &req.reasoning_effort {
        b.insert("reasoning_effort".into(), json!(e));
    }
    if req.stream && sh.usage_in_stream {
        b.insert("stream_options".into(), json!({"include_usage": true}));
    }
    crate::finish_body(b, req, ep)
}

fn finish_reason(s: &str) -> Result<StopReason, WireError> {
    Ok(match s {
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        "error" => {
            return Err(WireError::new(
                WireErrorKind::StreamError,
                "the server ended the answer with finish_reason \"error\"",
            ))
        }
        other => StopReason::Other(other.to_string()),
    })
}

fn usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    Some(Usage {
        input: u64_at(u, &["prompt_tokens"]),
        output: u64_at(u, &["completion_tokens"]),
        cache_read: u64_at(u, &["prompt_tokens_details", "cached_tokens"]),
        cache_write: 0,
        reasoning: u64_at(u, &["completion_tokens_details", "reasoning_tokens"]),
    })
}

#[derive(Default)]
pub struct ChatDecoder {
    c: Common,
    done: bool,
}

impl ChatDecoder {
    fn reasoning_field(&mut self, v: &Value, out: &mut Vec<Event>) {
        // llama.cpp/vLLM/DeepSeek use `reasoning_content`; OpenRouter and
        // Ollama use `reasoning`.
        for key in ["reasoning_content", "reasoning"] {
            if let Some(r) = v.get(key).and_then(Value::as_str) {
                self.c.reasoning(r, out);
            }
        }
    }
}

impl Decoder for ChatDecoder {
    fn on_sse(&mut self, ev: &SseEvent, out: &mut Vec<Event>) -> Result<(), WireError> {
        if ev.is_done() {
            self.done = true;
            return Ok(());
        }
        let v = parse_json(&ev.data)?;
        if let Some(e) = stream_error(&v) {
            return Err(e);
        }
        if let Some(u) = v.get("usage").and_then(usage) {
            self.c.usage = Some(u);
        }
        for choice in v
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            self.reasoning_field(delta, out);
            if let Some(t) = delta.get("content").and_then(Value::as_str) {
                self.c.text(t, out);
            }
            for tc in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = tc
                    .get("index")
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| str_at(tc, "id").to_string());
                let f = tc.get("function").unwrap_or(&Value::Null);
                let index = match self.c.tool_index(&key) {
                    Some(i) => i,
                    None => self
                        .c
                        .tool_start(&key, str_at(tc, "id"), str_at(f, "name"), out),
                };
                self.c.tool_args(index, str_at(f, "arguments"), out);
            }
            if let Some(fr) = choice.get("finish_reason").and_then(Value::as_str) {
                self.c.stop = Some(finish_reason(fr)?);
            }
        }
        Ok(())
    }

    fn on_body(&mut self, v: &Value, out: &mut Vec<Event>) -> Result<(), WireError> {
        if let Some(e) = stream_error(v) {
            return Err(e);
        }
        let choice = v
            .get("choices")
            .and_then(|c| c.get(0))
            .ok_or_else(|| WireError::new(WireErrorKind::Malformed, "response has no choices"))?;
        let msg = choice.get("message").unwrap_or(&Value::Null);
        self.reasoning_field(msg, out);
        if let Some(t) = msg.get("content").and_then(Value::as_str) {
            self.c.text(t, out);
        }
        for (i, tc) in msg
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let f = tc.get("function").unwrap_or(&Value::Null);
            let index = self
                .c
                .tool_start(&i.to_string(), str_at(tc, "id"), str_at(f, "name"), out);
            self.c.tool_args(index, str_at(f, "arguments"), out);
        }
        if let Some(fr) = choice.get("finish_reason").and_then(Value::as_str) {
            self.c.stop = Some(finish_reason(fr)?);
        }
        self.c.usage = v.get("usage").and_then(usage);
        self.c.finish(out);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Event>) -> Result<(), WireError> {
        if !self.done && self.c.stop.is_none() {
            return Err(WireError::new(
                WireErrorKind::Truncated,
                "stream ended without finish_reason or [DONE]",
            ));
        }
        self.c.finish(out);
        Ok(())
    }
}
