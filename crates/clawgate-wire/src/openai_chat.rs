//! `openai-completions`: `POST {baseUrl}/chat/completions` (WIRE-1).

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use crate::decode::{parse_json, str_at, stream_error, u64_at, Common, Decoder};
use crate::endpoint::{Endpoint, MaxTokensField};
use crate::error::{WireError, WireErrorKind};
use crate::sse::SseEvent;
use crate::types::{ChatRequest, Event, Part, Role, StopReason, ToolChoice, Usage};

/// The text of the parts the server can see, copied only when there is
/// more than one.
fn flatten<'a>(parts: &[&'a Part]) -> Cow<'a, str> {
    if let [Part::Text(t)] = parts {
        return Cow::Borrowed(t);
    }
    Cow::Owned(
        parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.clone()),
                Part::Image { url } => Some(format!("[image: {url}]")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

fn content<'a>(parts: &[&'a Part], string_only: bool) -> Content<'a> {
    let has_image = parts.iter().any(|p| matches!(p, Part::Image { .. }));
    if string_only || !has_image {
        return Content::Text(flatten(parts));
    }
    Content::Parts(
        parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(PartOut::Text { text: t }),
                Part::Image { url } => Some(PartOut::ImageUrl {
                    image_url: UrlOut { url },
                }),
                _ => None,
            })
            .collect(),
    )
}

/// The request body, serialised from the request's own strings: the
/// history is copied once, into the bytes, not into a JSON value first
/// (a session's history made the body a tenth of a turn's instructions).
#[derive(serde::Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: Vec<MsgOut<'a>>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(serde::Serialize)]
struct MsgOut<'a> {
    role: &'static str,
    content: Content<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<PartOut<'a>>),
}

#[derive(serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PartOut<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: UrlOut<'a> },
}

#[derive(serde::Serialize)]
struct UrlOut<'a> {
    url: &'a str,
}

/// An OpenAI `tool_calls` item, borrowed: the one shape both the upstream
/// request body and the gateway's own completions write.
#[derive(serde::Serialize)]
pub struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(serde::Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl<'a> ToolCallOut<'a> {
    pub fn function(id: &'a str, name: &'a str, arguments: &'a str) -> Self {
        Self {
            id,
            kind: "function",
            function: FunctionOut { name, arguments },
        }
    }
}

fn message<'a>(role: &'static str, content: Content<'a>) -> MsgOut<'a> {
    MsgOut {
        role,
        content,
        tool_call_id: None,
        tool_calls: Vec::new(),
    }
}

/// The body as JSON bytes.
pub fn body(ep: &Endpoint, req: &ChatRequest) -> Result<Vec<u8>, serde_json::Error> {
    let sh = &ep.shaping;
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(s) = &req.system {
        messages.push(message("system", Content::Text(Cow::Borrowed(s))));
    }
    for m in &req.messages {
        let visible: Vec<&Part> = m
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Text(_) | Part::Image { .. }))
            .collect();
        match m.role {
            Role::User => {
                for p in &m.parts {
                    if let Part::ToolResult { id, content, .. } = p {
                        let mut msg = message("tool", Content::Text(Cow::Borrowed(content)));
                        if !sh.strict_message_keys {
                            msg.tool_call_id = Some(id);
                        }
                        messages.push(msg);
                    }
                }
                if !visible.is_empty() {
                    messages.push(message("user", content(&visible, sh.string_content)));
                }
            }
            Role::Assistant => {
                let mut msg = message("assistant", Content::Text(flatten(&visible)));
                if !sh.strict_message_keys {
                    msg.tool_calls = m
                        .parts
                        .iter()
                        .filter_map(|p| match p {
                            Part::ToolCall {
                                id,
                                name,
                                arguments,
                            } => Some(ToolCallOut::function(id, name, arguments)),
                            _ => None,
                        })
                        .collect();
                }
                messages.push(msg);
            }
        }
    }
    let mut b = Map::new();
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
    let mut rest = crate::finish_map(b, req, ep);
    if rest.contains_key("model") || rest.contains_key("messages") {
        // `extra_body` names them: it wins, as on every other field.
        rest.entry("model").or_insert_with(|| json!(req.model));
        if !rest.contains_key("messages") {
            rest.insert("messages".into(), serde_json::to_value(&messages)?);
        }
        return serde_json::to_vec(&rest);
    }
    serde_json::to_vec(&ChatBody {
        model: &req.model,
        messages,
        rest,
    })
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

/// The parts of a streamed chunk the gateway reads, borrowed from the
/// frame; every other field is skipped without allocating. The types are
/// strict on purpose: a chunk that does not fit (an error, a number where
/// a string belongs, a duplicate key) goes through the lenient `Value`
/// path instead, so both paths give the same events.
#[derive(serde::Deserialize)]
struct FastChunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<FastChoice<'a>>>,
    #[serde(default)]
    usage: Option<FastUsage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// A non-streamed completion, read the same way as [`FastChunk`].
#[derive(serde::Deserialize)]
struct FastBody<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<FastBodyChoice<'a>>>,
    #[serde(default)]
    usage: Option<FastUsage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct FastBodyChoice<'a> {
    #[serde(borrow, default)]
    message: Option<FastDelta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct FastChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<FastDelta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct FastDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<FastToolCall<'a>>>,
}

#[derive(serde::Deserialize)]
struct FastToolCall<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    function: Option<FastFunction<'a>>,
}

#[derive(serde::Deserialize)]
struct FastFunction<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize, Default)]
struct FastUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<FastDetails>,
    #[serde(default)]
    completion_tokens_details: Option<FastDetails>,
}

#[derive(serde::Deserialize, Default)]
struct FastDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

fn fast_usage(u: FastUsage) -> Usage {
    Usage {
        input: u.prompt_tokens.unwrap_or(0),
        output: u.completion_tokens.unwrap_or(0),
        cache_read: u
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0),
        cache_write: 0,
        reasoning: u
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0),
    }
}

impl ChatDecoder {
    /// Reasoning (either field name), then text, as the lenient path does.
    fn fast_text(&mut self, d: &FastDelta<'_>, out: &mut Vec<Event>) {
        for r in [&d.reasoning_content, &d.reasoning].into_iter().flatten() {
            self.c.reasoning(r, out);
        }
        if let Some(t) = &d.content {
            self.c.text(t, out);
        }
    }

    fn on_fast_body(&mut self, b: FastBody<'_>, out: &mut Vec<Event>) -> Result<(), WireError> {
        let Some(choice) = b.choices.and_then(|c| c.into_iter().next()) else {
            return Err(WireError::new(
                WireErrorKind::Malformed,
                "response has no choices",
            ));
        };
        if let Some(m) = &choice.message {
            self.fast_text(m, out);
        }
        if let Some(m) = choice.message {
            for (i, tc) in m.tool_calls.into_iter().flatten().enumerate() {
                let (name, args) = match &tc.function {
                    Some(f) => (
                        f.name.as_deref().unwrap_or_default(),
                        f.arguments.as_deref().unwrap_or_default(),
                    ),
                    None => ("", ""),
                };
                let id = tc.id.as_deref().unwrap_or_default();
                let index = self.c.tool_start(&i.to_string(), id, name, out);
                self.c.tool_args(index, args, out);
            }
        }
        if let Some(fr) = &choice.finish_reason {
            self.c.stop = Some(finish_reason(fr)?);
        }
        self.c.usage = b.usage.map(fast_usage);
        self.c.finish(out);
        Ok(())
    }

    fn on_fast(&mut self, c: FastChunk<'_>, out: &mut Vec<Event>) -> Result<(), WireError> {
        if let Some(u) = c.usage {
            self.c.usage = Some(fast_usage(u));
        }
        for choice in c.choices.into_iter().flatten() {
            if let Some(d) = choice.delta {
                self.fast_text(&d, out);
                for tc in d.tool_calls.into_iter().flatten() {
                    let id = tc.id.as_deref().unwrap_or_default();
                    let key = tc
                        .index
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| id.to_string());
                    let (name, args) = match &tc.function {
                        Some(f) => (
                            f.name.as_deref().unwrap_or_default(),
                            f.arguments.as_deref().unwrap_or_default(),
                        ),
                        None => ("", ""),
                    };
                    let index = match self.c.tool_index(&key) {
                        Some(i) => i,
                        None => self.c.tool_start(&key, id, name, out),
                    };
                    self.c.tool_args(index, args, out);
                }
            }
            if let Some(fr) = &choice.finish_reason {
                self.c.stop = Some(finish_reason(fr)?);
            }
        }
        Ok(())
    }
}

impl ChatDecoder {
    /// The lenient path for one streamed chunk.
    fn on_value(&mut self, v: &Value, out: &mut Vec<Event>) -> Result<(), WireError> {
        if let Some(e) = stream_error(v) {
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
}

impl Decoder for ChatDecoder {
    fn on_sse(&mut self, ev: &SseEvent, out: &mut Vec<Event>) -> Result<(), WireError> {
        if ev.is_done() {
            self.done = true;
            return Ok(());
        }
        if let Ok(c) = serde_json::from_str::<FastChunk>(&ev.data) {
            if c.error.is_none() {
                return self.on_fast(c, out);
            }
        }
        self.on_value(&parse_json(&ev.data)?, out)
    }

    fn on_body_bytes(
        &mut self,
        body: &[u8],
        out: &mut Vec<Event>,
    ) -> Option<Result<(), WireError>> {
        let b = serde_json::from_slice::<FastBody>(body).ok()?;
        if b.error.is_some() {
            return None;
        }
        Some(self.on_fast_body(b, out))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn sent(ep: &Endpoint, req: &ChatRequest) -> Value {
        serde_json::from_slice(&body(ep, req).unwrap()).unwrap()
    }

    /// The shape the servers get: every message kind, images as parts or
    /// as text, tool calls and results, and the shaping switches.
    #[test]
    fn the_body_has_every_message_kind_in_the_servers_shape() {
        let mut req = ChatRequest {
            model: "m".into(),
            system: Some("be brief".into()),
            stream: true,
            max_tokens: Some(64),
            ..Default::default()
        };
        req.messages = vec![
            crate::types::Message {
                role: Role::User,
                parts: vec![
                    Part::Text("look".into()),
                    Part::Image {
                        url: "data:image/png;base64,AA".into(),
                    },
                ],
            },
            crate::types::Message {
                role: Role::Assistant,
                parts: vec![
                    Part::Text("calling".into()),
                    Part::ToolCall {
                        id: "c1".into(),
                        name: "read".into(),
                        arguments: "{\"p\":1}".into(),
                    },
                ],
            },
            crate::types::Message {
                role: Role::User,
                parts: vec![
                    Part::ToolResult {
                        id: "c1".into(),
                        content: "42".into(),
                        is_error: false,
                    },
                    Part::Text("and?".into()),
                ],
            },
        ];
        let ep = Endpoint::new(
            clawgate_core::ApiKind::OpenAiCompletions,
            "http://127.0.0.1:1/v1",
        );
        assert_eq!(
            sent(&ep, &req),
            json!({
                "model": "m", "stream": true, "max_tokens": 64,
                "stream_options": {"include_usage": true},
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
                    ]},
                    {"role": "assistant", "content": "calling", "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{\"p\":1}"}}
                    ]},
                    {"role": "tool", "content": "42", "tool_call_id": "c1"},
                    {"role": "user", "content": "and?"}
                ]
            })
        );
        // Servers that take text only, and reject keys they do not know.
        let mut strict = ep.clone();
        strict.shaping.string_content = true;
        strict.shaping.strict_message_keys = true;
        let v = sent(&strict, &req);
        assert_eq!(
            v["messages"][1],
            json!({"role": "user", "content": "look\n[image: data:image/png;base64,AA]"})
        );
        assert_eq!(
            v["messages"][2],
            json!({"role": "assistant", "content": "calling"})
        );
        assert_eq!(v["messages"][3], json!({"role": "tool", "content": "42"}));
        // `extra_body` wins on collisions, `model` and `messages` too.
        req.extra_body.insert("model".into(), json!("other"));
        req.extra_body.insert("seed".into(), json!(7));
        let v = sent(&ep, &req);
        assert_eq!(v["model"], "other");
        assert_eq!(v["seed"], 7);
        assert_eq!(v["messages"].as_array().map(Vec::len), Some(5));
        req.extra_body.insert("messages".into(), json!([]));
        assert_eq!(sent(&ep, &req)["messages"], json!([]));
    }

    /// Feeds the frames through `on_sse` (fast path where the types fit)
    /// and through the lenient `Value` path only; both must agree.
    fn both(frames: &[&str]) {
        let (mut fast, mut slow) = (ChatDecoder::default(), ChatDecoder::default());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for f in frames {
            let ev = SseEvent {
                data: (*f).to_string(),
                ..Default::default()
            };
            let ra = fast.on_sse(&ev, &mut a).map_err(|e| e.to_string());
            let rb = match serde_json::from_str::<Value>(f) {
                Ok(v) => slow.on_value(&v, &mut b).map_err(|e| e.to_string()),
                Err(_) => parse_json(f).map(|_| ()).map_err(|e| e.to_string()),
            };
            assert_eq!(ra, rb, "result for {f}");
        }
        assert_eq!(a, b, "events for {frames:?}");
        assert_eq!(fast.c.usage, slow.c.usage, "usage for {frames:?}");
        assert_eq!(fast.c.stop, slow.c.stop, "stop for {frames:?}");
    }

    #[test]
    fn fast_and_lenient_body_paths_agree() {
        let bodies = [
            r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi <think>a</think> there","reasoning_content":"r"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
            r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}},{"id":"c2","function":{"name":"g"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[{"message":{"content":"x","reasoning":"y"},"finish_reason":"length"}],"usage":null}"#,
            r#"{"choices":[{"message":{"content":"x"}}],"usage":{}}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":null}"#,
            r#"{"choices":{"0":1}}"#,
            r#"{"error":{"message":"no","type":"invalid_request_error"}}"#,
            r#"{"choices":[{"message":{"content":"x"},"finish_reason":"error"}]}"#,
            r#"{"choices":[{"message":{"content":7}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"index":"a","function":{"name":"f"}}]}}]}"#,
        ];
        for body in bodies {
            let (mut fast, mut slow) = (ChatDecoder::default(), ChatDecoder::default());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let v: Value = serde_json::from_str(body).unwrap();
            let ra = match fast.on_body_bytes(body.as_bytes(), &mut a) {
                Some(r) => r,
                None => fast.on_body(&v, &mut a),
            }
            .map_err(|e| e.to_string());
            let rb = slow.on_body(&v, &mut b).map_err(|e| e.to_string());
            assert_eq!(ra, rb, "result for {body}");
            assert_eq!(a, b, "events for {body}");
            assert_eq!(fast.c.usage, slow.c.usage, "usage for {body}");
            assert_eq!(fast.c.stop, slow.c.stop, "stop for {body}");
        }
    }

    #[test]
    fn fast_and_lenient_chunk_paths_agree() {
        let cases: &[&[&str]] = &[
            &[
                r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
            ],
            &[
                r#"{"choices":[{"delta":{"content":"caf\u00e9 \"q\" <think>hm"}}]}"#,
                r#"{"choices":[{"delta":{"content":"</think>ok"}}]}"#,
            ],
            &[r#"{"choices":[{"delta":{"reasoning_content":"a","reasoning":"b","content":"c"}}]}"#],
            &[r#"{"choices":[{"delta":{"reasoning":{"text":"obj"}}}]}"#],
            &[r#"{"choices":[{"delta":{"content":5}}]}"#],
            &[
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
                r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            ],
            &[
                r#"{"choices":[{"delta":{"tool_calls":[{"index":"0","id":"c","function":{"name":"g"}}]}}]}"#,
            ],
            &[
                r#"{"choices":[{"delta":{"tool_calls":[{"id":"c2","function":{"name":"g","arguments":"{}"}}]}}]}"#,
            ],
            &[
                r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":2}}}"#,
            ],
            &[r#"{"choices":[],"usage":{"prompt_tokens":5.0}}"#],
            &[r#"{"choices":null,"usage":null,"error":null}"#],
            &[r#"{"error":{"message":"boom","type":"server_error","code":500}}"#],
            &[r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"error"}]}"#],
            &[r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#],
            &[r#"{"choices":[{"delta":null,"finish_reason":"length"}]}"#],
            &[r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"weird"}]}"#],
            &[r#"{"choices":[{"delta":{"content":"x"}}"#],
        ];
        for frames in cases {
            both(frames);
        }
    }
}
