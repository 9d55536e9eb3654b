//! `POST /v1/chat/completions` (GW-1): an OpenAI Chat Completions request
//! in, routed through the failover runner to any backend protocol, and the
//! answer out as a completion or as SSE chunks forwarded as they arrive.
//! Reasoning goes out in `reasoning_content`, never inside `content`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clawgate_wire::{
    ChatRequest, Event, Message, Part, Role, StopReason, ToolChoice, ToolDef, Usage,
};
use serde_json::{json, Map, Value};

use clawgate_wire::openai_chat::ToolCallOut;

use crate::errors::ApiError;
use crate::inbound;
use crate::AppState;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn completion_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("chatcmpl-{:x}{nanos:08x}{n:x}", now_secs())
}

/// What the client asked for, beyond the internal request.
pub struct Parsed {
    pub model: String,
    pub request: ChatRequest,
    pub include_usage: bool,
    pub session: Option<String>,
}

fn text_of(content: &Value, path: &str) -> Result<Vec<Part>, ApiError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") | Some("input_text") => {
                        out.push(Part::Text(inbound::text_field(p, "text")))
                    }
                    Some("image_url") => {
                        let url = p
                            .get("image_url")
                            .and_then(|u| u.get("url").or(Some(u)))
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                ApiError::bad_request(format!(
                                    "{path}[{i}].image_url.url is required"
                                ))
                            })?;
                        out.push(Part::Image {
                            url: url.to_string(),
                        });
                    }
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "{path}[{i}].type {} is not supported (text, image_url)",
                            other.map_or("missing".to_string(), |o| format!("{o:?}"))
                        )))
                    }
                }
            }
            Ok(out)
        }
        other => Err(ApiError::bad_request(format!(
            "{path} must be a string or an array of parts, got {other}"
        ))),
    }
}

/// Parses and validates a request body (400 `invalid_request_error` on
/// anything out of range; unknown fields are tolerated).
pub fn parse(body: &Value) -> Result<Parsed, ApiError> {
    let obj = inbound::object(body)?;
    let model = inbound::model(obj)?;
    let msgs = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("messages must be a non-empty array").param("messages")
        })?;
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                let parts = text_of(content, &format!("{path}.content"))?;
                system.extend(parts.into_iter().filter_map(|p| match p {
                    Part::Text(t) => Some(t),
                    _ => None,
                }));
            }
            "user" => messages.push(Message {
                role: Role::User,
                parts: text_of(content, &format!("{path}.content"))?,
            }),
            "assistant" => {
                let mut parts = text_of(content, &format!("{path}.content"))?;
                for tc in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = tc.get("function").unwrap_or(&Value::Null);
                    parts.push(Part::ToolCall {
                        id: inbound::text_field(tc, "id"),
                        name: inbound::text_field(f, "name"),
                        arguments: f
                            .get("arguments")
                            .and_then(Value::as_str)
                            .unwrap_or("{}")
                            .to_string(),
                    });
                }
                messages.push(Message {
                    role: Role::Assistant,
                    parts,
                });
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("{path}.tool_call_id is required"))
                    })?;
                let text = text_of(content, &format!("{path}.content"))?
                    .into_iter()
                    .filter_map(|p| match p {
                        Part::Text(t) => Some(t),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("");
                let part = Part::ToolResult {
                    id: id.to_string(),
                    content: text,
                    is_error: false,
                };
                // Consecutive tool results travel in one user turn.
                match messages.last_mut() {
                    Some(last)
                        if last.role == Role::User
                            && last
                                .parts
                                .iter()
                                .all(|p| matches!(p, Part::ToolResult { .. })) =>
                    {
                        last.parts.push(part)
                    }
                    _ => messages.push(Message {
                        role: Role::User,
                        parts: vec![part],
                    }),
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "{path}.role {other:?} is not one of system, developer, user, assistant, tool"
                ))
                .param("messages"))
            }
        }
    }
    let mut tools = Vec::new();
    for (i, t) in obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = t.get("function").unwrap_or(t);
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(format!("tools[{i}].function.name is required"))
                    .param("tools")
            })?;
        tools.push(ToolDef {
            name: name.to_string(),
            description: f
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters: f
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    let tool_choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::bad_request(format!(
                    "tool_choice {other:?} is not auto, none or required"
                ))
                .param("tool_choice"))
            }
        }),
        Some(v) => match v
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
        {
            Some(n) => Some(ToolChoice::Named(n.to_string())),
            None => {
                return Err(
                    ApiError::bad_request("tool_choice must name a function").param("tool_choice")
                )
            }
        },
    };
    let max_tokens = inbound::positive_int(obj, &["max_tokens", "max_completion_tokens"])?;
    let temperature = inbound::number_in(obj, "temperature", 0.0, 2.0)?;
    let top_p = inbound::number_in(obj, "top_p", 0.0, 1.0)?;
    inbound::number_in(obj, "presence_penalty", -2.0, 2.0)?;
    inbound::number_in(obj, "frequency_penalty", -2.0, 2.0)?;
    if let Some(n) = obj.get("n").and_then(Value::as_u64) {
        if n != 1 {
            return Err(ApiError::bad_request("n must be 1").param("n"));
        }
    }
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            return Err(
                ApiError::bad_request("stop must be a string or up to 4 strings").param("stop"),
            )
        }
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("stream must be a boolean").param("stream")),
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut extra = Map::new();
    for key in [
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "logit_bias",
    ] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            extra.insert(key.to_string(), v.clone());
        }
    }
    Ok(Parsed {
        model,
        request: ChatRequest {
            model: String::new(),
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            messages,
            tools,
            tool_choice,
            max_tokens,
            temperature,
            top_p,
            stop,
            reasoning_effort: obj
                .get("reasoning_effort")
                .and_then(Value::as_str)
                .map(str::to_string),
            stream,
            extra_body: extra,
        },
        include_usage,
        session: inbound::optional_str(obj, "user"),
    })
}

/// A non-streamed completion, serialised straight from these structs.
#[derive(serde::Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(serde::Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: CompletionMessage<'a>,
    finish_reason: &'static str,
}

#[derive(serde::Serialize)]
struct CompletionMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

fn finish_reason(s: Option<&StopReason>) -> &'static str {
    match s {
        Some(StopReason::MaxTokens) => "length",
        Some(StopReason::ToolUse) => "tool_calls",
        Some(StopReason::ContentFilter) => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's usage object, serialised straight from the counts.
#[derive(serde::Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedTokens,
    completion_tokens_details: ReasoningTokens,
}

#[derive(serde::Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(serde::Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

fn usage_out(u: &Usage) -> UsageOut {
    UsageOut {
        prompt_tokens: u.input,
        completion_tokens: u.output,
        total_tokens: u.total(),
        prompt_tokens_details: CachedTokens {
            cached_tokens: u.cache_read,
        },
        completion_tokens_details: ReasoningTokens {
            reasoning_tokens: u.reasoning,
        },
    }
}

pub(crate) fn served_headers(headers: &mut HeaderMap, answer: &crate::Answer) {
    let routed = &answer.routed;
    // CTX-2, CTX-3: what the preflight said or compaction did this turn.
    if !answer.notices.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&answer.notices.join("; ")) {
            headers.insert("x-clawgate-context", v);
        }
    }
    // CTX-2: what the gateway estimated the session's prompt at (the
    // server's own count is the answer's usage).
    if let Some(n) = answer.prompt_estimate {
        headers.insert("x-clawgate-prompt-estimate", HeaderValue::from(n));
    }
    // The output cap the client asked for was lowered to the model's.
    if let Some(n) = routed.served.cap_notice() {
        if let Ok(v) = HeaderValue::from_str(&n) {
            headers.insert("x-clawgate-notice", v);
        }
    }
    // PERF-5: the gateway's own time so far (the whole answer for a
    // non-streamed one; up to the response head for a stream).
    let us = u64::try_from(routed.overhead().as_micros()).unwrap_or(u64::MAX);
    headers.insert("x-clawgate-overhead-us", HeaderValue::from(us));
    // LOC-6, LOC-1: time in the backend's queue and waiting for its
    // local server to start, apart from the overhead.
    for (name, d) in [
        ("x-clawgate-queue-us", routed.queued()),
        ("x-clawgate-start-us", routed.starting()),
    ] {
        if !d.is_zero() {
            let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            headers.insert(name, HeaderValue::from(us));
        }
    }
    let s = &routed.served;
    let v = format!("{}; host={}; api={}", s.reference, s.host, s.api);
    if let Ok(v) = HeaderValue::from_str(&v) {
        headers.insert("x-clawgate-served-by", v);
    }
    if let Some(n) = routed.fallback_notice() {
        if let Ok(v) = HeaderValue::from_str(&n) {
            headers.insert("x-clawgate-fallback", v);
        }
    }
}

pub async fn handle(
    State(state): State<AppState>,
    inbound::Inbound { headers, body }: inbound::Inbound,
) -> Response {
    // Boxed once: every layer above moves the handler's future, and the
    // turn inside it is large (these copies were a tenth of a request's
    // instructions).
    match Box::pin(run(state, headers, body)).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(
    state: AppState,
    headers: HeaderMap,
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let parsed = parse(&inbound::json_request(body)?)?;
    let stream = parsed.request.stream;
    // OpenAI `user` names a session the gateway keeps (GW-2).
    let key = parsed
        .session
        .map_or(crate::SessionKey::None, crate::SessionKey::Keep);
    let id = completion_id();
    let created = now_secs();
    let model = parsed.model.clone();
    if !stream {
        let answer = crate::route(&state, &headers, &parsed.model, parsed.request, key).await?;
        return collect(answer, id, created, model).await;
    }
    let include_usage = parsed.include_usage;
    let keepalive = state.keepalive();
    let routing: crate::sse::Routing = Box::pin(async move {
        let answer = crate::route(&state, &headers, &parsed.model, parsed.request, key).await?;
        let mut h = HeaderMap::new();
        served_headers(&mut h, &answer);
        let (stream, on_end) = answer.into_stream();
        Ok((h, stream, on_end))
    });
    crate::sse::routed(
        keepalive,
        routing,
        ChatEncoder::new(id, created, model, include_usage),
    )
    .await
}

async fn collect(
    mut answer: crate::Answer,
    id: String,
    created: u64,
    model: String,
) -> Result<Response, ApiError> {
    let c = answer.collect().await?;
    let body = Completion {
        id: &id,
        object: "chat.completion",
        created,
        model: &model,
        choices: [CompletionChoice {
            index: 0,
            message: CompletionMessage {
                role: "assistant",
                // `null` content only beside tool calls, as OpenAI does.
                content: (!c.text.is_empty() || c.tool_calls.is_empty()).then_some(c.text.as_str()),
                reasoning_content: (!c.reasoning.is_empty()).then_some(c.reasoning.as_str()),
                tool_calls: c
                    .tool_calls
                    .iter()
                    .map(|t| ToolCallOut::function(&t.id, &t.name, &t.arguments))
                    .collect(),
            },
            finish_reason: finish_reason(c.stop.as_ref()),
        }],
        usage: c.usage.as_ref().map(usage_out),
    };
    let mut headers = HeaderMap::new();
    served_headers(&mut headers, &answer);
    Ok((StatusCode::OK, headers, axum::Json(body)).into_response())
}

/// The chat-completions chunk stream. The constant part of every chunk
/// is rendered once; a text delta is then two copies and one escape.
struct ChatEncoder {
    /// `data: {"id":…,"model":…,"choices":[{"index":0,"delta":`
    head: Vec<u8>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    usage: Option<Usage>,
    stop: Option<StopReason>,
}

impl ChatEncoder {
    fn new(id: String, created: u64, model: String, include_usage: bool) -> Self {
        let mut head = b"data: {\"id\":".to_vec();
        crate::sse::json_str(&mut head, &id);
        head.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        crate::sse::num(&mut head, created);
        head.extend_from_slice(b",\"model\":");
        crate::sse::json_str(&mut head, &model);
        head.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
        Self {
            head,
            id,
            created,
            model,
            include_usage,
            usage: None,
            stop: None,
        }
    }

    /// A chunk whose delta is `{"<key>":"<text>"}`.
    fn text(&self, out: &mut Vec<u8>, key: &[u8], text: &str) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
        crate::sse::json_str(out, text);
        out.extend_from_slice(b"},\"finish_reason\":null}]}\n\n");
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: &Value, finish: Option<&str>) {
        out.extend_from_slice(&self.head);
        crate::sse::json(out, delta);
        out.extend_from_slice(b",\"finish_reason\":");
        crate::sse::json(out, &finish);
        out.extend_from_slice(b"}]}\n\n");
    }
}

impl crate::sse::Encode for ChatEncoder {
    fn refuse(&mut self, e: &ApiError, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: ");
        crate::sse::json(out, &e.body());
        out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        self.text(out, b"role\":\"assistant\",\"content", "");
    }

    fn event(
        &mut self,
        ev: Result<Event, clawgate_router::StreamFailure>,
        out: &mut Vec<u8>,
    ) -> bool {
        match ev {
            Ok(Event::TextDelta(t)) => self.text(out, b"content", &t),
            Ok(Event::ReasoningDelta(r)) => self.text(out, b"reasoning_content", &r),
            Ok(Event::ToolCallStart {
                index,
                id: call_id,
                name,
            }) => self.chunk(
                out,
                &json!({"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                None,
            ),
            Ok(Event::ToolCallDelta { index, arguments }) => self.chunk(
                out,
                &json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                None,
            ),
            Ok(Event::ToolCallEnd { .. }) => {}
            Ok(Event::Usage(u)) => self.usage = Some(u),
            Ok(Event::Stop(s)) => self.stop = Some(s),
            Err(f) => {
                // FO-5: no switch after output; a clear terminal error.
                let err = json!({"error": {"message": f.to_string(), "type": "upstream_error", "code": f.class.as_str()}});
                out.extend_from_slice(b"data: ");
                crate::sse::json(out, &err);
                out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
                return false;
            }
        }
        true
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.chunk(out, &json!({}), Some(finish_reason(self.stop.as_ref())));
        if self.include_usage {
            if let Some(u) = &self.usage {
                let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": [], "usage": usage_out(u)});
                out.extend_from_slice(b"data: ");
                crate::sse::json(out, &v);
                out.extend_from_slice(b"\n\n");
            }
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}
