//! Reading the fields every inbound protocol shares, once: the body as a
//! JSON object, `model`, sampling numbers in range, positive token caps,
//! optional strings, and the bound on keys a request controls. Each reader
//! answers a 400 naming the field (`param`) in the OpenAI shape; the
//! Anthropic endpoint re-shapes it.

use axum::http::StatusCode;
use clawgate_catalog::Registry;
use clawgate_session::{Target, TurnError};
use clawgate_wire::Collected;
use serde_json::{Map, Value};

use crate::errors::ApiError;
use crate::AppState;

/// Longest key a request may set (`user`, `metadata.user_id`,
/// `x-clawgate-session-key`, `model`, `x-clawgate-model`): longer ones get
/// a 400, so no map or message grows with what a client sends.
pub const MAX_KEY_LEN: usize = 256;

/// 400 when a request-controlled key is longer than [`MAX_KEY_LEN`].
pub(crate) fn check_key(what: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_KEY_LEN {
        return Err(ApiError::bad_request(format!(
            "{what} is {} bytes long; at most {MAX_KEY_LEN} bytes are accepted",
            value.len()
        ))
        .param(what));
    }
    // A key reaches logs and terminals: no escape sequence, newline or NUL.
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ApiError::bad_request(format!(
            "{what} contains a control character (U+{:04X}); keys are printable text",
            c as u32
        ))
        .param(what));
    }
    Ok(())
}

/// The request body as JSON: 413 over the size limit, 400 when not JSON.
/// A POST body with the request's headers, taken from the request rather
/// than copied (axum's `HeaderMap` extractor clones the map).
pub(crate) struct Inbound {
    pub headers: axum::http::HeaderMap,
    pub body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Inbound {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let headers = std::mem::take(&mut parts.headers);
        // The body limit (GW-3) travels in the extensions, which stay.
        let req = axum::extract::Request::from_parts(parts, body);
        let body = bytes::Bytes::from_request(req, state).await;
        Ok(Self { headers, body })
    }
}

pub(crate) fn json_request(
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Value, ApiError> {
    let body =
        body.map_err(|rej| ApiError::new(rej.status(), "invalid_request_error", rej.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// The body as an object.
pub(crate) fn object(v: &Value) -> Result<&Map<String, Value>, ApiError> {
    v.as_object()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))
}

/// The required, non-empty `model`.
pub(crate) fn model(obj: &Map<String, Value>) -> Result<String, ApiError> {
    Ok(obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("model is required").param("model"))?
        .to_string())
}

/// A string field of a request object, empty when absent.
pub(crate) fn text_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// An optional string field (`user`).
pub(crate) fn optional_str(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_string)
}

/// `stream`, false when absent.
pub(crate) fn stream(obj: &Map<String, Value>) -> bool {
    obj.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

/// An optional number within `lo..=hi` (temperature, top_p).
pub(crate) fn number_in(
    obj: &Map<String, Value>,
    key: &str,
    lo: f64,
    hi: f64,
) -> Result<Option<f64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if (lo..=hi).contains(&f) {
                Ok(Some(f))
            } else {
                Err(
                    ApiError::bad_request(format!("{key} must be between {lo} and {hi}, got {f}"))
                        .param(key),
                )
            }
        }
        Some(other) => {
            Err(ApiError::bad_request(format!("{key} must be a number, got {other}")).param(key))
        }
    }
}

/// An optional positive integer (token caps), read from the first of
/// `keys` present; errors name `keys[0]`.
pub(crate) fn positive_int(
    obj: &Map<String, Value>,
    keys: &[&str],
) -> Result<Option<u64>, ApiError> {
    let Some(v) = keys.iter().find_map(|k| obj.get(*k)) else {
        return Ok(None);
    };
    if v.is_null() {
        return Ok(None);
    }
    let name = keys.first().copied().unwrap_or("value");
    v.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(|| {
        ApiError::bad_request(format!("{name} must be a positive integer, got {v}")).param(name)
    })
}

/// How a request names its session.
pub(crate) enum SessionKey {
    /// No key: stateless.
    None,
    /// A key that only pins credentials (Anthropic `metadata.user_id`,
    /// which Claude Code fills while it sends the whole history itself).
    Sticky(String),
    /// A session the gateway keeps (OpenAI `user`, GW-2).
    Keep(String),
    /// The stored key of a session a kept answer belongs to
    /// (`previous_response_id`): already the owner's, already checked.
    Stored(String),
}

/// Builds the stored form of an answer (`id`, JSON) from the whole answer
/// and whether it failed after output: the Responses object.
pub(crate) type KeepResponse = Box<dyn FnOnce(&Collected, bool) -> (String, String) + Send>;

/// A routed turn and, in session mode, what to commit when it ends.
pub(crate) struct Answer {
    pub routed: clawgate_router::Routed,
    /// Context notices of a session turn (preflight, compaction).
    pub notices: Vec<String>,
    /// A session turn's estimate of the prompt it sent, in tokens.
    pub prompt_estimate: Option<u64>,
    session: Option<clawgate_session::session::SessionTurn>,
    keep: Option<KeepResponse>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Commits a session turn; the error text is what the client is told.
async fn commit(
    turn: clawgate_session::session::SessionTurn,
    served: &clawgate_router::Served,
    notice: Option<String>,
    keep: Option<KeepResponse>,
    answer: &Collected,
    incomplete: bool,
) -> Result<(), String> {
    let key = turn.session.key.clone();
    let response = keep.map(|k| k(answer, incomplete));
    turn.commit(served, answer, incomplete, notice, response, now_ms())
        .await
        .map_err(|e| {
            tracing::error!(session = %key, error = %e, "a session turn could not be stored");
            format!("the answer could not be stored in session {key:?}: {e}")
        })
}

impl Answer {
    /// In session mode, also keep the answer in this stored form.
    pub fn keep_response(&mut self, keep: KeepResponse) {
        if self.session.is_some() {
            self.keep = Some(keep);
        }
    }

    /// Reads the whole answer; in session mode the turn is committed
    /// before it is returned (an answer that failed after output is kept,
    /// marked incomplete, and the failure returned).
    pub async fn collect(&mut self) -> Result<Collected, ApiError> {
        let mut c = Collected::default();
        let mut failure = None;
        while let Some(ev) = self.routed.stream.next().await {
            match ev {
                Ok(ev) => c.apply(&ev),
                Err(f) => {
                    failure = Some(f);
                    break;
                }
            }
        }
        if let Some(turn) = self.session.take() {
            let notice = self.routed.fallback_notice();
            let stored = commit(
                turn,
                &self.routed.served,
                notice,
                self.keep.take(),
                &c,
                failure.is_some(),
            )
            .await;
            if let (Err(msg), None) = (stored, &failure) {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    msg,
                ));
            }
        }
        match failure {
            Some(f) => Err(
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", f.to_string())
                    .code(f.class.as_str()),
            ),
            None => Ok(c),
        }
    }

    /// The stream and, in session mode, the commit the SSE body awaits
    /// before its last frame.
    pub fn into_stream(self) -> (clawgate_router::RoutedStream, Option<crate::sse::OnEnd>) {
        let Answer {
            routed,
            notices: _,
            prompt_estimate: _,
            session,
            keep,
        } = self;
        let notice = routed.fallback_notice();
        let served = routed.served.clone();
        let on_end = session.map(|turn| {
            let hook: crate::sse::OnEnd = Box::new(move |answer: Collected, incomplete: bool| {
                Box::pin(
                    async move { commit(turn, &served, notice, keep, &answer, incomplete).await },
                )
            });
            hook
        });
        (routed.stream, on_end)
    }
}

/// Resolves the target, checks policy, and runs the turn through the
/// failover runner: what every inbound protocol shares. A request that
/// names a session to keep (and a gateway with a store) runs in session
/// mode: its history goes in front of the new messages.
pub(crate) async fn route(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    model: &str,
    request: clawgate_wire::ChatRequest,
    key: SessionKey,
) -> Result<Answer, ApiError> {
    let registry = state.registry();
    check_key("model", model)?;
    let override_model = headers
        .get("x-clawgate-model")
        .and_then(|v| v.to_str().ok());
    if let Some(m) = override_model {
        check_key("x-clawgate-model", m)?;
    }
    let header_session = headers
        .get("x-clawgate-session-key")
        .and_then(|v| v.to_str().ok());
    if let Some(k) = header_session {
        check_key("x-clawgate-session-key", k)?;
    }
    let key = match (header_session, key) {
        (Some(h), _) => SessionKey::Keep(h.to_string()),
        (None, k) => k,
    };
    let mut target =
        Target::from_api(&registry, model, override_model).map_err(|e| turn_error(&registry, e))?;
    let (keep, sticky) = match key {
        SessionKey::None => (None, None),
        SessionKey::Stored(k) => (state.store.is_some().then_some(k), None),
        // A pin-only key is a hint: one too long to keep is dropped, never
        // a reason to refuse the request (Claude Code fills it itself).
        SessionKey::Sticky(k) => (
            None,
            (k.len() <= MAX_KEY_LEN && !k.chars().any(char::is_control)).then_some(k),
        ),
        SessionKey::Keep(k) => {
            check_key("user", &k)?;
            reserved(&registry, target.agent.as_deref(), &k)?;
            match state.store {
                // The store keeps the session's pins: no second copy in
                // the runner's memory.
                Some(_) => (Some(k), None),
                None => (None, Some(k)),
            }
        }
    };
    let (mut routed, session) = match (keep, &state.store) {
        (Some(k), Some(store)) => {
            let mut turn = clawgate_session::session::begin(
                store.clone(),
                &state.locks,
                &k,
                &mut target,
                request,
                now_ms(),
            )
            .await
            .map_err(|e| turn_error(&registry, e))?;
            let routed = match turn.command() {
                Some(cmd) => {
                    turn.run_command(cmd, &state.runner, &registry, &target, now_ms())
                        .await
                }
                None => {
                    turn.route(&state.runner, &registry, &target, None, now_ms())
                        .await
                }
            }
            .map_err(|e| turn_error(&registry, e))?;
            (routed, Some(turn))
        }
        _ => {
            let input = clawgate_session::TurnInput {
                request,
                session: sticky,
                on_notice: None,
                pinned: Vec::new(),
            };
            let routed = clawgate_session::route(&state.runner, &registry, &target, input)
                .await
                .map_err(|e| turn_error(&registry, e))?;
            (routed, None)
        }
    };
    let prompt_estimate = session
        .as_ref()
        .filter(|_| !routed.local)
        .map(|s| s.prompt_estimate());
    // A chat command's reply is not a model call: nothing to count.
    if !routed.local {
        routed.observe(state.telemetry.clone());
    }
    Ok(Answer {
        routed,
        notices: session
            .as_ref()
            .map(|s| s.notices.clone())
            .unwrap_or_default(),
        prompt_estimate,
        session,
        keep: None,
    })
}

/// A key of the form another agent's own sessions take (`<key>@<agent>`,
/// `@default` for the default agent) is that agent's: a client of any
/// other agent cannot create it first and so squat the name it would get
/// (CTX-4).
fn reserved(registry: &Registry, agent: Option<&str>, key: &str) -> Result<(), ApiError> {
    let Some((_, owner)) = key.rsplit_once('@') else {
        return Ok(());
    };
    let own = agent.unwrap_or("default");
    let is_agent = owner == "default" || registry.config.agents.entries.contains_key(owner);
    if is_agent && owner != own {
        return Err(ApiError::bad_request(format!(
            "session key {key:?} has the form of agent {owner}'s own sessions (<key>@{owner}); use another key"
        ))
        .code("session_key_reserved"));
    }
    Ok(())
}

/// A turn's error in the OpenAI shape (each endpoint re-shapes it for its
/// protocol): 404 with the valid targets, 403 for the policy, the routing
/// failure's own status.
pub(crate) fn turn_error(reg: &Registry, e: TurnError) -> ApiError {
    match e {
        TurnError::UnknownTarget { model, reason } => crate::unknown_model(reg, &model, &reason),
        TurnError::Forbidden(p) => {
            ApiError::new(StatusCode::FORBIDDEN, "permission_error", p.to_string()).param("model")
        }
        TurnError::Run(r) => ApiError::from_run(&r),
        TurnError::ContextFull(m) => ApiError::bad_request(m).code("context_length_exceeded"),
        TurnError::ToolNotAllowed(m) => ApiError::bad_request(m)
            .code("tool_not_allowed")
            .param("tool_choice"),
        TurnError::Compaction(m) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", m).code("compaction_failed")
        }
        TurnError::Store(e @ clawgate_store::StoreError::Owner(_)) => {
            ApiError::new(StatusCode::CONFLICT, "invalid_request_error", e.to_string())
                .code("session_key_taken")
        }
        TurnError::Store(e) => {
            tracing::error!(error = %e, "session store");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                e.to_string(),
            )
            .code("session_store_unavailable")
        }
    }
}
