//! `POST /v1/messages` (GW-1): the Anthropic Messages API in front of any
//! backend, so Anthropic SDK clients and Claude-style tools run on local
//! models. Query strings (`?beta=true`), `anthropic-beta` headers and
//! unknown fields are tolerated.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clawgate_wire::{
    ChatRequest, Event, Message, Part, Role, StopReason, ToolChoice, ToolDef, Usage,
};
use serde_json::{json, Map, Value};

use crate::errors::{AnthropicError, ApiError};
use crate::inbound;
use crate::AppState;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn message_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("msg_{t:x}{n:x}")
}

/// The text of a string or of the text blocks of a block list.
fn content_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A `document` block as text: plain-text and content sources are
/// flattened (with the title, so the model knows what it reads); a PDF or
/// URL source cannot be sent to these backends and is a clear 400.
fn document(b: &Value, path: &str) -> Result<Part, ApiError> {
    let src = b.get("source").unwrap_or(&Value::Null);
    let text = match src.get("type").and_then(Value::as_str) {
        Some("text") => inbound::text_field(src, "data"),
        Some("content") => content_text(src.get("content")),
        other => {
            let media = src
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("a file");
            let kind = match other {
                Some("base64") => format!("a base64 {media} document"),
                Some("url") => "a document by URL".to_string(),
                Some("file") => "a document by file id".to_string(),
                _ => "a document without a text source".to_string(),
            };
            return Err(ApiError::bad_request(format!(
                "{path}: {kind} cannot be sent to the model servers behind this gateway; send the document's text (source type \"text\") instead"
            ))
            .param(path));
        }
    };
    let title = inbound::text_field(b, "title");
    let context = inbound::text_field(b, "context");
    let mut out = String::new();
    for head in [title, context] {
        if !head.is_empty() {
            out.push_str(&head);
            out.push('\n');
        }
    }
    out.push_str(&text);
    Ok(Part::Text(out))
}

fn blocks(content: &Value, path: &str) -> Result<Vec<Part>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, b) in items.iter().enumerate() {
                let ty = b.get("type").and_then(Value::as_str).unwrap_or_default();
                match ty {
                    "text" => out.push(Part::Text(
                        inbound::text_field(b, "text"),
                    )),
                    "image" => {
                        let src = b.get("source").unwrap_or(&Value::Null);
                        let url = match src.get("type").and_then(Value::as_str) {
                            Some("base64") => format!(
                                "data:{};base64,{}",
                                src.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
                                src.get("data").and_then(Value::as_str).unwrap_or_default()
                            ),
                            _ => inbound::text_field(src, "url"),
                        };
                        out.push(Part::Image { url });
                    }
                    "tool_use" => out.push(Part::ToolCall {
                        id: inbound::text_field(b, "id"),
                        name: inbound::text_field(b, "name"),
                        arguments: b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                    }),
                    "tool_result" => {
                        let content = content_text(b.get("content"));
                        out.push(Part::ToolResult {
                            id: inbound::text_field(b, "tool_use_id"),
                            content,
                            is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
                        });
                    }
                    // Earlier reasoning is not replayed to other backends.
                    "thinking" | "redacted_thinking" => {}
                    "document" => out.push(document(b, &format!("{path}[{i}]"))?),
                    // Search results are text with a source: flattened.
                    "search_result" => {
                        let text = content_text(b.get("content"));
                        let title = inbound::text_field(b, "title");
                        out.push(Part::Text(if title.is_empty() {
                            text
                        } else {
                            format!("{title}\n{text}")
                        }));
                    }
                    // Hosted server tools ran on Anthropic's side; another
                    // backend cannot replay them.
                    "server_tool_use" | "web_search_tool_result" | "web_fetch_tool_result"
                    | "code_execution_tool_result" | "container_upload" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "{path}[{i}].type {other:?} is not supported (text, image, document, tool_use, tool_result, thinking)"
                        )))
                    }
                }
            }
            Ok(out)
        }
        other => Err(ApiError::bad_request(format!(
            "{path} must be a string or an array of blocks, got {other}"
        ))),
    }
}

pub(crate) fn parse(v: &Value) -> Result<(String, ChatRequest, Option<String>), ApiError> {
    parse_with(v, true)
}

/// `max_tokens` is required on `/v1/messages`, not on `count_tokens`.
fn parse_with(
    v: &Value,
    need_max_tokens: bool,
) -> Result<(String, ChatRequest, Option<String>), ApiError> {
    let obj = inbound::object(v)?;
    let model = inbound::model(obj)?;
    let max_tokens = inbound::positive_int(obj, &["max_tokens"])?;
    if need_max_tokens && max_tokens.is_none() {
        return Err(
            ApiError::bad_request("max_tokens: a positive integer is required").param("max_tokens"),
        );
    }
    let msgs = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::bad_request("messages: a non-empty array is required"))?;
    let mut system: Vec<String> = match obj.get("system") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(b)) => b
            .iter()
            .filter_map(|x| x.get("text").and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        Some(_) => {
            return Err(
                ApiError::bad_request("system must be a string or text blocks").param("system"),
            )
        }
    };
    let mut messages = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages[{i}].content");
        let content = m.get("content").unwrap_or(&Value::Null);
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            // Claude Code sends system prompts inside `messages` mid
            // conversation: folded into the system prompt, in order, as
            // the chat and Responses endpoints do.
            Some("system") | Some("developer") => {
                system.extend(blocks(content, &path)?.into_iter().filter_map(|p| match p {
                    Part::Text(t) => Some(t),
                    _ => None,
                }));
                continue;
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role must be user, assistant or system, got {other:?}"
                ))
                .param(&format!("messages[{i}].role")))
            }
            None => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role is required (user, assistant or system)"
                ))
                .param(&format!("messages[{i}].role")))
            }
        };
        let parts = blocks(content, &path)?;
        messages.push(Message { role, parts });
    }
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages: at least one user or assistant message is required",
        )
        .param("messages"));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    let mut tools = Vec::new();
    for (i, t) in obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(name) = t.get("name").and_then(Value::as_str) else {
            return Err(ApiError::bad_request(format!(
                "tools[{i}].name is required"
            )));
        };
        // Server tools (web search, …) have a `type` and no schema: skipped.
        let Some(schema) = t.get("input_schema") else {
            continue;
        };
        tools.push(ToolDef {
            name: name.to_string(),
            description: t
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters: schema.clone(),
        });
    }
    let tool_choice =
        obj.get("tool_choice")
            .and_then(|tc| match tc.get("type").and_then(Value::as_str) {
                Some("auto") => Some(ToolChoice::Auto),
                Some("any") => Some(ToolChoice::Required),
                Some("none") => Some(ToolChoice::None),
                Some("tool") => tc
                    .get("name")
                    .and_then(Value::as_str)
                    .map(|n| ToolChoice::Named(n.to_string())),
                _ => None,
            });
    let request = ChatRequest {
        model: String::new(),
        system,
        messages,
        tools,
        tool_choice,
        max_tokens,
        temperature: inbound::number_in(obj, "temperature", 0.0, 1.0)?,
        top_p: inbound::number_in(obj, "top_p", 0.0, 1.0)?,
        stop: obj
            .get("stop_sequences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        reasoning_effort: None,
        stream: inbound::stream(obj),
        extra_body: Map::new(),
    };
    let session = obj
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((model, request, session))
}

fn stop_reason(s: Option<&StopReason>) -> &'static str {
    match s {
        Some(StopReason::MaxTokens) => "max_tokens",
        Some(StopReason::ToolUse) => "tool_use",
        Some(StopReason::StopSequence) => "stop_sequence",
        Some(StopReason::ContentFilter) => "refusal",
        _ => "end_turn",
    }
}

fn usage_json(u: Option<&Usage>) -> Value {
    let u = u.copied().unwrap_or_default();
    json!({
        "input_tokens": u.anthropic_input(),
        "output_tokens": u.output,
        "cache_read_input_tokens": u.cache_read,
        "cache_creation_input_tokens": u.cache_write,
    })
}

pub async fn handle(
    State(state): State<AppState>,
    inbound::Inbound { headers, body }: inbound::Inbound,
) -> Response {
    // Boxed once: every layer above moves the handler's future, and the
    // turn inside it is large (these copies were a tenth of a request's
    // instructions).
    let result = Box::pin(async {
        let value = inbound::json_request(body)?;
        let (model, request, session) = parse(&value)?;
        let stream = request.stream;
        // `metadata.user_id` only pins credentials: Claude Code fills it
        // and sends the whole history itself. A session the gateway keeps
        // is named with `x-clawgate-session-key`.
        let key = session.map_or(crate::SessionKey::None, crate::SessionKey::Sticky);
        if !stream {
            let answer = crate::route(&state, &headers, &model, request, key).await?;
            return collect(answer, model).await;
        }
        let keepalive = state.keepalive();
        let enc = MessagesEncoder::new(model.clone());
        let routing: crate::sse::Routing = Box::pin(async move {
            let answer = crate::route(&state, &headers, &model, request, key).await?;
            let mut h = HeaderMap::new();
            crate::chat::served_headers(&mut h, &answer);
            let (stream, on_end) = answer.into_stream();
            Ok((h, stream, on_end))
        });
        crate::sse::routed(keepalive, routing, enc).await
    })
    .await;
    match result {
        Ok(r) => r,
        Err(e) => AnthropicError(e).into_response(),
    }
}

/// `POST /v1/messages/count_tokens`: the prompt's size in Anthropic's
/// shape, estimated without a tokenizer (local servers have no such
/// endpoint). The model must be one the gateway serves.
pub async fn count_tokens(
    State(state): State<AppState>,
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let result = (|| {
        let value = inbound::json_request(body)?;
        let (model, request, _) = parse_with(&value, false)?;
        inbound::check_key("model", &model)?;
        let reg = state.registry();
        let target = clawgate_session::Target::from_api(&reg, &model, None)
            .map_err(|e| crate::turn_error(&reg, e))?;
        reg.chain(
            target.agent.as_deref(),
            target.requested.as_ref().map(|(r, s)| (r.as_str(), *s)),
        )
        .map_err(|e| crate::unknown_model(&reg, &model, &e))?;
        Ok::<_, ApiError>(request.estimate_tokens())
    })();
    match result {
        Ok(n) => axum::Json(json!({"input_tokens": n})).into_response(),
        Err(e) => AnthropicError(e).into_response(),
    }
}

/// Any other method or path under `/v1/messages`: an error in Anthropic's
/// shape, which is what Anthropic clients parse.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    AnthropicError(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        format!("{} is not an endpoint of this gateway (POST /v1/messages, POST /v1/messages/count_tokens)", uri.path()),
    ))
    .into_response()
}

async fn collect(mut answer: crate::Answer, model: String) -> Result<Response, ApiError> {
    let c = answer.collect().await?;
    let mut content = Vec::new();
    if !c.reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": c.reasoning, "signature": ""}));
    }
    if !c.text.is_empty() {
        content.push(json!({"type": "text", "text": c.text}));
    }
    for t in &c.tool_calls {
        let input: Value = serde_json::from_str(&t.arguments).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": t.id, "name": t.name, "input": input}));
    }
    let body = json!({
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(c.stop.as_ref()),
        "stop_sequence": null,
        "usage": usage_json(c.usage.as_ref()),
    });
    let mut headers = HeaderMap::new();
    crate::chat::served_headers(&mut headers, &answer);
    Ok((StatusCode::OK, headers, axum::Json(body)).into_response())
}

fn frame(out: &mut Vec<u8>, event: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    crate::sse::json(out, data);
    out.extend_from_slice(b"\n\n");
}

impl MessagesEncoder {
    fn new(model: String) -> Self {
        MessagesEncoder {
            model,
            index: -1,
            open: Open::None,
            usage: None,
            stop: None,
        }
    }
}

/// Which content block is open.
#[derive(PartialEq)]
enum Open {
    None,
    Thinking,
    Text,
    Tool(usize),
}

/// The Anthropic event sequence: `message_start`, one `content_block_*`
/// run per block, `message_delta`, `message_stop`.
struct MessagesEncoder {
    model: String,
    index: i64,
    open: Open,
    usage: Option<Usage>,
    stop: Option<StopReason>,
}

impl MessagesEncoder {
    /// Closes the open block (if another kind) and opens `want`.
    fn open_block(&mut self, want: Open, block: impl FnOnce() -> Value, out: &mut Vec<u8>) {
        if self.open == want {
            return;
        }
        self.close(out);
        self.index += 1;
        frame(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.index, "content_block": block()}),
        );
        self.open = want;
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open != Open::None {
            frame(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.index}),
            );
            self.open = Open::None;
        }
    }

    /// A `content_block_delta` of `kind` carrying `text` in `field`.
    fn delta(&self, out: &mut Vec<u8>, kind: &str, field: &str, text: &str) {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        crate::sse::num(out, self.index.max(0) as u64);
        out.extend_from_slice(b",\"delta\":{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"");
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":");
        crate::sse::json_str(out, text);
        out.extend_from_slice(b"}}\n\n");
    }
}

impl crate::sse::Encode for MessagesEncoder {
    /// Anthropic's `error` event, as its API sends one mid-stream.
    fn refuse(&mut self, e: &ApiError, out: &mut Vec<u8>) {
        let body = AnthropicError(ApiError::new(e.status, e.kind, e.message.clone())).body();
        frame(out, "error", &body);
    }

    /// Anthropic's own keep-alive event.
    fn keepalive(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        let start = json!({"type": "message_start", "message": {
            "id": message_id(), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage_json(None)}});
        frame(out, "message_start", &start);
    }

    fn event(
        &mut self,
        ev: Result<Event, clawgate_router::StreamFailure>,
        out: &mut Vec<u8>,
    ) -> bool {
        match ev {
            Ok(Event::ReasoningDelta(r)) => {
                self.open_block(
                    Open::Thinking,
                    || json!({"type": "thinking", "thinking": ""}),
                    out,
                );
                self.delta(out, "thinking_delta", "thinking", &r);
            }
            Ok(Event::TextDelta(t)) => {
                self.open_block(Open::Text, || json!({"type": "text", "text": ""}), out);
                self.delta(out, "text_delta", "text", &t);
            }
            Ok(Event::ToolCallStart {
                index: ti,
                id,
                name,
            }) => {
                self.open_block(
                    Open::Tool(ti),
                    || json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
            }
            Ok(Event::ToolCallDelta {
                index: ti,
                arguments,
            }) => {
                if self.open == Open::Tool(ti) {
                    self.delta(out, "input_json_delta", "partial_json", &arguments);
                }
            }
            Ok(Event::ToolCallEnd { .. }) => {}
            Ok(Event::Usage(u)) => self.usage = Some(u),
            Ok(Event::Stop(s)) => self.stop = Some(s),
            Err(f) => {
                // FO-5: a terminal error event, no switch to another model.
                let err = AnthropicError(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    f.to_string(),
                ))
                .body();
                frame(out, "error", &err);
                return false;
            }
        }
        true
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.close(out);
        let delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(self.stop.as_ref()), "stop_sequence": null}, "usage": usage_json(self.usage.as_ref())});
        frame(out, "message_delta", &delta);
        frame(out, "message_stop", &json!({"type": "message_stop"}));
    }
}
