//! `anthropic-messages`: `POST {baseUrl}/messages` with `x-api-key` and
//! `anthropic-version` (WIRE-3).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::decode::{parse_json, str_at, stream_error, u64_at, Common, Decoder};
use crate::endpoint::Endpoint;
use crate::error::{WireError, WireErrorKind};
use crate::sse::SseEvent;
use crate::types::{ChatRequest, Event, Part, Role, StopReason, ToolChoice, Usage};

pub const VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the caller gives none.
pub const DEFAULT_MAX_TOKENS: u64 = 8192;

fn image(url: &str) -> Value {
    // data:<media>;base64,<data> → a base64 source; anything else by URL.
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((meta, data)) = rest.split_once(',') {
            let media = meta.trim_end_matches(";base64");
            return json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}});
        }
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

pub fn body(ep: &Endpoint, req: &ChatRequest) -> Value {
    let mut messages = Vec::new();
    for m in &req.messages {
        let role = if m.role == Role::User {
            "user"
        } else {
            "assistant"
        };
        let mut content = Vec::new();
        for p in &m.parts {
            match p {
                Part::Text(t) if !t.is_empty() => content.push(json!({"type": "text", "text": t})),
                Part::Image { url } => content.push(image(url)),
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    let input: Value =
                        serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                    content
                        .push(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
                }
                Part::ToolResult {
                    id,
                    content: c,
                    is_error,
                } => content.push(json!({
                    "type": "tool_result", "tool_use_id": id, "content": c, "is_error": is_error
                })),
                _ => {}
            }
        }
        if content.is_empty() {
            continue;
        }
        let all_text = content.iter().all(|c| c["type"] == "text");
        if ep.shaping.string_content && all_text {
            let text: Vec<&str> = content.iter().filter_map(|c| c["text"].as_str()).collect();
            messages.push(json!({"role": role, "content": text.join("\n")}));
        } else {
            messages.push(json!({"role": role, "content": content}));
        }
    }
    let mut b = Map::new();
    b.insert("model".into(), json!(req.model));
    b.insert("messages".into(), Value::Array(messages));
    if let Some(s) = &req.system {
        b.insert("system".into(), json!(s));
    }
    b.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if ep.shaping.tools && !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "input_schema": t.parameters});
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
                    ToolChoice::Auto => json!({"type": "auto"}),
                    ToolChoice::None => json!({"type": "none"}),
                    ToolChoice::Required => json!({"type": "any"}),
                    ToolChoice::Named(n) => json!({"type": "tool", "name": n}),
                },
            );
        }
    }
    if !req.stop.is_empty() {
        b.insert("stop_sequences".into(), json!(req.stop));
    }
    crate::finish_body(b, req, ep)
}

fn stop_reason(s: &str) -> StopReason {
    match s {
        "end_turn" => StopReason::EndTurn,
        "max_tokens" => StopReason::MaxTokens,
        "tool_use" => StopReason::ToolUse,
        "stop_sequence" => StopReason::StopSequence,
        "refusal" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_string()),
    }
}

fn add_usage(acc: &mut Usage, u: &Value) {
    let input = u64_at(u, &["input_tokens"]);
    if input > 0 {
        acc.input = input;
    }
    let output = u64_at(u, &["output_tokens"]);
    if output > 0 {
        acc.output = output;
    }
    let cr = u64_at(u, &["cache_read_input_tokens"]);
    if cr > 0 {
        acc.cache_read = cr;
    }
    let cw = u64_at(u, &["cache_creation_input_tokens"]);
    if cw > 0 {
        acc.cache_write = cw;
    }
}

/// The accumulated Anthropic counts (`input` as Anthropic means it) in
/// the one internal meaning (see [`Usage`]).
fn total(raw: &Usage) -> Usage {
    Usage::from_anthropic(raw.input, raw.output, raw.cache_read, raw.cache_write)
}

#[derive(Default)]
pub struct MessagesDecoder {
    c: Common,
    /// Anthropic's own counts as they arrive (input excludes the cache).
    usage: Usage,
    saw_usage: bool,
    /// Block index → our tool index.
    tool_blocks: HashMap<u64, usize>,
}

impl Decoder for MessagesDecoder {
    fn on_sse(&mut self, ev: &SseEvent, out: &mut Vec<Event>) -> Result<(), WireError> {
        let v = parse_json(&ev.data)?;
        let kind = ev.event.as_deref().unwrap_or_else(|| str_at(&v, "type"));
        match kind {
            "message_start" => {
                if let Some(u) = v.get("message").and_then(|m| m.get("usage")) {
                    add_usage(&mut self.usage, u);
                    self.saw_usage = true;
                }
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match str_at(block, "type") {
                    "tool_use" | "server_tool_use" => {
                        let i = self.c.tool_start(
                            &format!("block{idx}"),
                            str_at(block, "id"),
                            str_at(block, "name"),
                            out,
                        );
                        self.tool_blocks.insert(idx, i);
                    }
                    "text" => self.c.text(str_at(block, "text"), out),
                    "thinking" => self.c.reasoning(str_at(block, "thinking"), out),
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = v.get("delta").unwrap_or(&Value::Null);
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match str_at(d, "type") {
                    "text_delta" => self.c.text(str_at(d, "text"), out),
                    "thinking_delta" => self.c.reasoning(str_at(d, "thinking"), out),
                    "input_json_delta" => {
                        if let Some(i) = self.tool_blocks.get(&idx).copied() {
                            self.c.tool_args(i, str_at(d, "partial_json"), out);
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                if let Some(i) = self.tool_blocks.get(&idx).copied() {
                    self.c.tool_end(i, out);
                }
            }
            "message_delta" => {
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.c.stop = Some(stop_reason(r));
                }
                if let Some(u) = v.get("usage") {
                    add_usage(&mut self.usage, u);
                    self.saw_usage = true;
                }
            }
            "message_stop" => self.c.finished = true,
            "error" => {
                return Err(stream_error(&v).unwrap_or_else(|| {
                    WireError::new(WireErrorKind::StreamError, "error event without details")
                }))
            }
            _ => {} // ping and future events
        }
        Ok(())
    }

    fn on_body(&mut self, v: &Value, out: &mut Vec<Event>) -> Result<(), WireError> {
        if str_at(v, "type") == "error" {
            if let Some(e) = stream_error(v) {
                return Err(e);
            }
        }
        for (n, block) in v
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            match str_at(block, "type") {
                "text" => self.c.text(str_at(block, "text"), out),
                "thinking" => self.c.reasoning(str_at(block, "thinking"), out),
                "tool_use" => {
                    let i = self.c.tool_start(
                        &format!("block{n}"),
                        str_at(block, "id"),
                        str_at(block, "name"),
                        out,
                    );
                    let args = block.get("input").map(Value::to_string).unwrap_or_default();
                    self.c.tool_args(i, &args, out);
                    self.c.tool_end(i, out);
                }
                _ => {}
            }
        }
        if let Some(r) = v.get("stop_reason").and_then(Value::as_str) {
            self.c.stop = Some(stop_reason(r));
        }
        if let Some(u) = v.get("usage") {
            add_usage(&mut self.usage, u);
            self.c.usage = Some(total(&self.usage));
        }
        self.c.finish(out);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Event>) -> Result<(), WireError> {
        if !self.c.finished {
            return Err(WireError::new(
                WireErrorKind::Truncated,
                "stream ended before message_stop",
            ));
        }
        if self.saw_usage {
            self.c.usage = Some(total(&self.usage));
        }
        self.c.finish(out);
        Ok(())
    }
}
