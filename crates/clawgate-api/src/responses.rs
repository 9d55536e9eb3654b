//! `POST /v1/responses` (GW-1): the OpenAI Responses API in front of any
//! backend. Fields of hosted OpenAI (`store`, `include`,
//! `prompt_cache_key`, `parallel_tool_calls`, …) are tolerated and not
//! forwarded; non-function tools are skipped.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clawgate_wire::{
    ChatRequest, Collected, Event, Message, Part, Role, StopReason, ToolChoice, ToolDef, Usage,
};
use serde_json::{json, Map, Value};

use crate::errors::ApiError;
use crate::inbound;
use crate::AppState;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn new_id(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}_{t:x}{n:x}")
}

/// A Responses id a client can be given: 128 random bits from the
/// operating system (an id names a kept conversation, so it must not be
/// guessable from another one).
fn response_id() -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            format!("no random id could be made: {e}"),
        )
    })?;
    let mut s = String::with_capacity(37);
    s.push_str("resp_");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    Ok(s)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn content_parts(content: &Value, path: &str) -> Result<Vec<Part>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, c) in items.iter().enumerate() {
                match c.get("type").and_then(Value::as_str).unwrap_or_default() {
                    "input_text" | "output_text" | "text" => out.push(Part::Text(
                        inbound::text_field(c, "text"),
                    )),
                    "input_image" => {
                        let url = c
                            .get("image_url")
                            .and_then(Value::as_str)
                            .ok_or_else(|| ApiError::bad_request(format!("{path}[{i}].image_url is required")))?;
                        out.push(Part::Image { url: url.to_string() });
                    }
                    "refusal" | "reasoning_text" | "summary_text" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "{path}[{i}].type {other:?} is not supported (input_text, output_text, input_image)"
                        )))
                    }
                }
            }
            Ok(out)
        }
        other => Err(ApiError::bad_request(format!(
            "{path} must be a string or an array, got {other}"
        ))),
    }
}

fn push(messages: &mut Vec<Message>, role: Role, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    match messages.last_mut() {
        // Tool calls and results join the turn they belong to.
        Some(last)
            if last.role == role
                && parts
                    .iter()
                    .all(|p| matches!(p, Part::ToolCall { .. } | Part::ToolResult { .. })) =>
        {
            last.parts.extend(parts)
        }
        _ => messages.push(Message { role, parts }),
    }
}

/// What decides a Responses request's session: `previous_response_id`
/// continues one, `store` keeps the answer for it.
struct Keeping {
    previous: Option<String>,
    store: Option<bool>,
}

pub(crate) fn parse(v: &Value) -> Result<(String, ChatRequest, Option<String>), ApiError> {
    let obj = inbound::object(v)?;
    let model = inbound::model(obj)?;
    let mut system: Vec<String> = obj
        .get("instructions")
        .and_then(Value::as_str)
        .map(|s| vec![s.to_string()])
        .unwrap_or_default();
    let mut messages: Vec<Message> = Vec::new();
    match obj.get("input") {
        Some(Value::String(s)) => messages.push(Message::user(s.clone())),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("input[{i}]");
                let ty = item
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("message");
                match ty {
                    "message" => {
                        let parts = content_parts(
                            item.get("content").unwrap_or(&Value::Null),
                            &format!("{path}.content"),
                        )?;
                        match item.get("role").and_then(Value::as_str) {
                            Some("user") => push(&mut messages, Role::User, parts),
                            Some("assistant") => push(&mut messages, Role::Assistant, parts),
                            Some("system") | Some("developer") => {
                                system.extend(parts.into_iter().filter_map(|p| match p {
                                    Part::Text(t) => Some(t),
                                    _ => None,
                                }))
                            }
                            other => {
                                return Err(ApiError::bad_request(format!(
                                    "{path}.role {other:?} is not supported"
                                )))
                            }
                        }
                    }
                    "function_call" => push(
                        &mut messages,
                        Role::Assistant,
                        vec![Part::ToolCall {
                            id: inbound::text_field(item, "call_id"),
                            name: inbound::text_field(item, "name"),
                            arguments: item
                                .get("arguments")
                                .and_then(Value::as_str)
                                .unwrap_or("{}")
                                .to_string(),
                        }],
                    ),
                    "function_call_output" => push(
                        &mut messages,
                        Role::User,
                        vec![Part::ToolResult {
                            id: inbound::text_field(item, "call_id"),
                            content: match item.get("output") {
                                Some(Value::String(s)) => s.clone(),
                                Some(other) => other.to_string(),
                                None => String::new(),
                            },
                            is_error: false,
                        }],
                    ),
                    // Earlier reasoning is not replayed to other backends.
                    "reasoning" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "{path}.type {other:?} is not supported"
                        )))
                    }
                }
            }
        }
        _ => {
            return Err(
                ApiError::bad_request("input must be a string or an array of items").param("input"),
            )
        }
    }
    if messages.is_empty() {
        return Err(ApiError::bad_request("input has no message").param("input"));
    }
    let mut tools = Vec::new();
    for (i, t) in obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        // Hosted tools (web_search, file_search, …) are not offered to
        // other backends; a function tool must be complete.
        if t.get("type").and_then(Value::as_str) != Some("function") {
            continue;
        }
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(format!("tools[{i}].name is required")).param("tools")
            })?;
        tools.push(ToolDef {
            name: name.to_string(),
            description: t
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters: t
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"})),
        });
    }
    let tool_choice = match obj.get("tool_choice") {
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Required),
            _ => None,
        },
        Some(v) => v
            .get("name")
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Named(n.to_string())),
        None => None,
    };
    let max_tokens = inbound::positive_int(obj, &["max_output_tokens"])?;
    let request = ChatRequest {
        model: String::new(),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        tools,
        tool_choice,
        max_tokens,
        temperature: inbound::number_in(obj, "temperature", 0.0, 2.0)?,
        top_p: inbound::number_in(obj, "top_p", 0.0, 1.0)?,
        stop: Vec::new(),
        reasoning_effort: obj
            .get("reasoning")
            .and_then(|r| r.get("effort"))
            .and_then(Value::as_str)
            .map(str::to_string),
        stream: inbound::stream(obj),
        extra_body: Map::new(),
    };
    let session = inbound::optional_str(obj, "user");
    Ok((model, request, session))
}

fn usage_json(u: Option<&Usage>) -> Value {
    let u = u.copied().unwrap_or_default();
    json!({
        "input_tokens": u.input,
        "output_tokens": u.output,
        "total_tokens": u.total(),
        "input_tokens_details": {"cached_tokens": u.cache_read},
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
    })
}

/// The full response object (also the payload of `response.completed`).
fn response_obj(
    id: &str,
    model: &str,
    created: u64,
    output: Vec<Value>,
    stop: Option<&StopReason>,
    usage: Option<&Usage>,
    status: &str,
) -> Value {
    let incomplete = matches!(stop, Some(StopReason::MaxTokens));
    let status = if status == "completed" && incomplete {
        "incomplete"
    } else {
        status
    };
    json!({
        "id": id, "object": "response", "created_at": created, "status": status, "model": model,
        "output": output,
        "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "usage": usage_json(usage), "error": null,
    })
}

fn items(c: &Collected) -> Vec<Value> {
    let mut out = Vec::new();
    if !c.reasoning.is_empty() {
        out.push(json!({"type": "reasoning", "id": new_id("rs"), "summary": [], "content": [{"type": "reasoning_text", "text": c.reasoning}]}));
    }
    if !c.text.is_empty() || c.tool_calls.is_empty() {
        out.push(json!({"type": "message", "id": new_id("msg"), "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": c.text, "annotations": []}]}));
    }
    for t in &c.tool_calls {
        out.push(json!({"type": "function_call", "id": new_id("fc"), "call_id": t.id, "name": t.name, "arguments": t.arguments, "status": "completed"}));
    }
    out
}

fn keeping(v: &Value) -> Result<Keeping, ApiError> {
    let previous = match v.get("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => {
            inbound::check_key("previous_response_id", s)?;
            Some(s.clone())
        }
        Some(_) => {
            return Err(
                ApiError::bad_request("previous_response_id must be a response id")
                    .param("previous_response_id"),
            )
        }
    };
    let store = match v.get("store") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(ApiError::bad_request("store must be true or false").param("store")),
    };
    Ok(Keeping { previous, store })
}

/// The session a Responses request runs in (GW-2): the one of
/// `previous_response_id`, else `user`'s, else a new one when `store` is
/// true. clawgate keeps nothing unless asked (OpenAI's default for
/// `store` is true; coding agents that send whole histories would pay for
/// storage they never use).
async fn session_key(
    state: &AppState,
    keeping: &Keeping,
    user: Option<String>,
    id: &str,
    agent: Option<&str>,
) -> Result<crate::SessionKey, ApiError> {
    if let Some(prev) = &keeping.previous {
        let Some(store) = &state.store else {
            return Err(ApiError::bad_request(
                "previous_response_id needs the session store, which this gateway runs without",
            )
            .param("previous_response_id"));
        };
        return match store.response(prev).await {
            // Only the agent that owns the session continues it (CTX-4); to
            // any other the id does not exist.
            Ok(Some(kept)) if kept.agent.as_deref() == agent => {
                Ok(crate::SessionKey::Stored(kept.key))
            }
            Ok(_) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("Previous response with id '{prev}' not found (only answers sent with store: true are kept)"),
            )
            .param("previous_response_id")
            .code("previous_response_not_found")),
            Err(e) => Err(crate::turn_error(
                &state.registry(),
                clawgate_session::TurnError::Store(e),
            )),
        };
    }
    Ok(match (user, keeping.store) {
        (Some(u), _) => crate::SessionKey::Keep(u),
        (None, Some(true)) if state.store.is_some() => {
            crate::SessionKey::Keep(format!("responses:{id}"))
        }
        _ => crate::SessionKey::None,
    })
}

/// `GET /v1/responses/{id}`: a stored answer.
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "No response found with id '{id}' (only answers sent with store: true are kept)"
            ),
        )
        .param("response_id")
        .code("not_found")
        .into_response()
    };
    if id.len() > inbound::MAX_KEY_LEN {
        return not_found();
    }
    let Some(store) = &state.store else {
        return not_found();
    };
    // Answered only for the agent that owns it: the one named by
    // `x-clawgate-agent`, the default agent without it.
    let agent = headers
        .get("x-clawgate-agent")
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.is_empty() && *a != "default");
    match store.response(&id).await {
        Ok(Some(kept)) if kept.agent.as_deref() != agent => not_found(),
        Ok(Some(kept)) => match serde_json::from_str::<Value>(&kept.body) {
            Ok(v) => axum::Json(v).into_response(),
            Err(_) => not_found(),
        },
        Ok(None) => not_found(),
        Err(e) => crate::turn_error(&state.registry(), clawgate_session::TurnError::Store(e))
            .into_response(),
    }
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
        let (model, request, user) = parse(&value)?;
        let keeping = keeping(&value)?;
        let stream = request.stream;
        let id = response_id()?;
        // The agent the request addresses, to check a continued id's owner
        // (an unknown one fails in routing, with its own error).
        let agent = clawgate_session::Target::from_api(&state.registry(), &model, None)
            .ok()
            .and_then(|t| t.agent);
        let key = session_key(&state, &keeping, user, &id, agent.as_deref()).await?;
        // One creation time for the answer sent and the answer kept.
        let created = now();
        let keep = (keeping.store != Some(false)).then(|| {
            let (id, model) = (id.clone(), model.clone());
            move |c: &Collected, incomplete: bool| {
                let status = if incomplete { "failed" } else { "completed" };
                let body = response_obj(
                    &id,
                    &model,
                    created,
                    items(c),
                    c.stop.as_ref(),
                    c.usage.as_ref(),
                    status,
                );
                (id.clone(), body.to_string())
            }
        });
        if stream {
            let keepalive = state.keepalive();
            let enc = ResponsesEncoder::new(id, model.clone(), created);
            let routing: crate::sse::Routing = Box::pin(async move {
                let mut answer = crate::route(&state, &headers, &model, request, key).await?;
                if let Some(k) = keep {
                    answer.keep_response(Box::new(k));
                }
                let mut h = HeaderMap::new();
                crate::chat::served_headers(&mut h, &answer);
                let (stream, on_end) = answer.into_stream();
                Ok((h, stream, on_end))
            });
            return crate::sse::routed(keepalive, routing, enc).await;
        }
        let mut answer = crate::route(&state, &headers, &model, request, key).await?;
        if let Some(k) = keep {
            answer.keep_response(Box::new(k));
        }
        let mut h = HeaderMap::new();
        crate::chat::served_headers(&mut h, &answer);
        let c = answer.collect().await?;
        let body = response_obj(
            &id,
            &model,
            created,
            items(&c),
            c.stop.as_ref(),
            c.usage.as_ref(),
            "completed",
        );
        Ok::<_, ApiError>((StatusCode::OK, h, axum::Json(body)).into_response())
    })
    .await;
    match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The real Responses event sequence, each event with its
/// `sequence_number`.
struct ResponsesEncoder {
    id: String,
    model: String,
    created: u64,
    seq: u64,
    c: Collected,
    output: Vec<Value>,
    /// (kind, output_index, item id) of the open reasoning or message item.
    open: Option<(&'static str, usize, String)>,
    /// Text of the open reasoning or message item only.
    item_text: String,
    /// (our tool index, output_index, item id).
    tool_items: Vec<(usize, usize, String)>,
}

impl ResponsesEncoder {
    fn new(id: String, model: String, created: u64) -> Self {
        Self {
            id,
            model,
            created,
            seq: 0,
            c: Collected::default(),
            output: Vec::new(),
            open: None,
            item_text: String::new(),
            tool_items: Vec::new(),
        }
    }

    fn send(&mut self, out: &mut Vec<u8>, event: &str, mut data: Value) {
        data["type"] = json!(event);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        crate::sse::json(out, &data);
        out.extend_from_slice(b"\n\n");
    }

    /// A text or reasoning delta, rendered without building a `Value`.
    fn text_delta(&mut self, out: &mut Vec<u8>, event: &str, idx: usize, item_id: &str, t: &str) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":\"");
        out.extend_from_slice(event.as_bytes());
        out.extend_from_slice(b"\",\"sequence_number\":");
        crate::sse::num(out, self.seq);
        self.seq += 1;
        out.extend_from_slice(b",\"item_id\":");
        crate::sse::json_str(out, item_id);
        out.extend_from_slice(b",\"output_index\":");
        crate::sse::num(out, idx as u64);
        out.extend_from_slice(b",\"content_index\":0,\"delta\":");
        crate::sse::json_str(out, t);
        out.extend_from_slice(b"}\n\n");
    }

    fn shell(&self, output: Vec<Value>, status: &str) -> Value {
        response_obj(
            &self.id,
            &self.model,
            self.created,
            output,
            self.c.stop.as_ref(),
            self.c.usage.as_ref(),
            status,
        )
    }

    /// Finishes the open reasoning or message item.
    fn close(&mut self, out: &mut Vec<u8>) {
        let Some((kind, idx, item_id)) = self.open.take() else {
            return;
        };
        let text = std::mem::take(&mut self.item_text);
        let item = if kind == "reasoning" {
            json!({"type": "reasoning", "id": item_id, "summary": [], "content": [{"type": "reasoning_text", "text": text}]})
        } else {
            json!({"type": "message", "id": item_id, "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": text, "annotations": []}]})
        };
        if let Some(slot) = self.output.get_mut(idx) {
            *slot = item.clone();
        }
        if kind == "message" {
            let part = json!({"type": "output_text", "text": text, "annotations": []});
            self.send(
                out,
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": idx, "content_index": 0, "text": text}),
            );
            self.send(
                out,
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": idx, "content_index": 0, "part": part}),
            );
        }
        self.send(
            out,
            "response.output_item.done",
            json!({"output_index": idx, "item": item}),
        );
    }

    /// Opens a reasoning or message item unless one of that kind is open.
    fn open_item(&mut self, out: &mut Vec<u8>, kind: &'static str) {
        if self.open.as_ref().map(|o| o.0) == Some(kind) {
            return;
        }
        self.close(out);
        let idx = self.output.len();
        let item_id = new_id(if kind == "reasoning" { "rs" } else { "msg" });
        let item = if kind == "reasoning" {
            json!({"type": "reasoning", "id": item_id, "summary": [], "content": []})
        } else {
            json!({"type": "message", "id": item_id, "role": "assistant", "status": "in_progress", "content": []})
        };
        self.output.push(item.clone());
        self.send(
            out,
            "response.output_item.added",
            json!({"output_index": idx, "item": item}),
        );
        if kind == "message" {
            self.send(out, "response.content_part.added", json!({"item_id": item_id, "output_index": idx, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
        }
        self.open = Some((kind, idx, item_id));
        self.item_text.clear();
    }
}

impl crate::sse::Encode for ResponsesEncoder {
    /// The Responses `error` event (what the API streams when a response
    /// cannot be made).
    fn refuse(&mut self, e: &ApiError, out: &mut Vec<u8>) {
        self.send(
            out,
            "error",
            json!({"code": e.code.as_deref().unwrap_or(e.kind), "message": e.message, "param": e.param}),
        );
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        let shell = self.shell(vec![], "in_progress");
        self.send(out, "response.created", json!({"response": shell}));
        self.send(out, "response.in_progress", json!({"response": shell}));
    }

    fn event(
        &mut self,
        ev: Result<Event, clawgate_router::StreamFailure>,
        out: &mut Vec<u8>,
    ) -> bool {
        let ev = match ev {
            Ok(ev) => ev,
            Err(f) => {
                let output = std::mem::take(&mut self.output);
                let mut failed = response_obj(
                    &self.id,
                    &self.model,
                    self.created,
                    output,
                    None,
                    None,
                    "failed",
                );
                failed["error"] = json!({"code": f.class.as_str(), "message": f.to_string()});
                self.send(out, "response.failed", json!({"response": failed}));
                return false;
            }
        };
        self.c.apply(&ev);
        match ev {
            // The open item is taken and put back so its id can be read
            // while `text_delta` advances the sequence number (no clone
            // per delta).
            Event::ReasoningDelta(t) => {
                self.open_item(out, "reasoning");
                self.item_text.push_str(&t);
                if let Some((_, idx, item_id)) = self.open.take() {
                    self.text_delta(out, "response.reasoning_text.delta", idx, &item_id, &t);
                    self.open = Some(("reasoning", idx, item_id));
                }
            }
            Event::TextDelta(t) => {
                self.open_item(out, "message");
                self.item_text.push_str(&t);
                if let Some((_, idx, item_id)) = self.open.take() {
                    self.text_delta(out, "response.output_text.delta", idx, &item_id, &t);
                    self.open = Some(("message", idx, item_id));
                }
            }
            Event::ToolCallStart {
                index,
                id: call_id,
                name,
            } => {
                self.close(out);
                let idx = self.output.len();
                let item_id = new_id("fc");
                let item = json!({"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": "", "status": "in_progress"});
                self.output.push(item.clone());
                self.tool_items.push((index, idx, item_id));
                self.send(
                    out,
                    "response.output_item.added",
                    json!({"output_index": idx, "item": item}),
                );
            }
            Event::ToolCallDelta { index, arguments } => {
                if let Some((_, idx, item_id)) =
                    self.tool_items.iter().find(|t| t.0 == index).cloned()
                {
                    self.send(
                        out,
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": idx, "delta": arguments}),
                    );
                }
            }
            Event::ToolCallEnd { index } => {
                if let Some((ti, idx, item_id)) =
                    self.tool_items.iter().find(|t| t.0 == index).cloned()
                {
                    let (call_id, name, arguments) = match self.c.tool_calls.get(ti) {
                        Some(c) => (c.id.clone(), c.name.clone(), c.arguments.clone()),
                        None => Default::default(),
                    };
                    let item = json!({"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments, "status": "completed"});
                    if let Some(slot) = self.output.get_mut(idx) {
                        *slot = item.clone();
                    }
                    self.send(
                        out,
                        "response.function_call_arguments.done",
                        json!({"item_id": item_id, "output_index": idx, "arguments": arguments}),
                    );
                    self.send(
                        out,
                        "response.output_item.done",
                        json!({"output_index": idx, "item": item}),
                    );
                }
            }
            Event::Usage(_) | Event::Stop(_) => {}
        }
        true
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.close(out);
        let output = std::mem::take(&mut self.output);
        let done = self.shell(output, "completed");
        // A capped answer ends as OpenAI ends it: `response.incomplete`.
        let event = if done["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.send(out, event, json!({"response": done}));
    }
}
