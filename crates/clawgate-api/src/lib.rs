//! The gateway's HTTP surfaces (GW-1..3, SEC-1).
//!
//! Brief overview: [`router`] builds the axum app over an [`AppState`] (the
//! current config snapshot and the failover runner); [`serve`] binds it
//! with TCP_NODELAY, refuses a non-loopback bind without auth, and drains
//! on SIGINT/SIGTERM. Handlers are thin: they parse the protocol, call the
//! runner, and shape the answer and the errors in the protocol's own form.

mod auth;
mod chat;
pub mod errors;
mod guard;
mod messages;
mod metrics;
mod responses;
mod sse;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clawgate_catalog::Registry;
use clawgate_config::AuthMode;
use clawgate_router::Runner;
use clawgate_session::{Target, TurnError};
use serde_json::{json, Value};

pub use auth::{GatewayAuth, FAILURE_WINDOW, MAX_FAILURES};
use errors::ApiError;

/// Request bodies above this are refused with 413 (GW-3).
pub const MAX_BODY: usize = 20 * 1024 * 1024;

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
    Ok(())
}

/// What every handler shares. axum clones the state for each request,
/// so it is one `Arc` (one atomic increment), not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    /// PERF-3: an immutable snapshot, read without a lock.
    registry: arc_swap::ArcSwap<Registry>,
    pub runner: Runner,
    pub auth: GatewayAuth,
    pub telemetry: Arc<metrics::Telemetry>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(registry: Registry, runner: Runner, auth: GatewayAuth) -> Self {
        Self(Arc::new(Shared {
            registry: arc_swap::ArcSwap::from_pointee(registry),
            runner,
            auth,
            telemetry: Arc::new(metrics::Telemetry::default()),
        }))
    }

    /// Replaces the config snapshot; requests in flight keep theirs.
    pub fn swap_registry(&self, registry: Registry) {
        self.registry.store(Arc::new(registry));
    }

    /// The current config snapshot (an `Arc` clone; no lock is taken).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }
}

/// A string field of a request object, empty when absent.
pub(crate) fn text_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The request body as JSON: 413 over the size limit, 400 when not JSON.
pub(crate) fn json_request(
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Value, ApiError> {
    let body =
        body.map_err(|rej| ApiError::new(rej.status(), "invalid_request_error", rej.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// Resolves the target, checks policy, and runs the turn through the
/// failover runner: what every inbound protocol shares.
pub(crate) async fn route(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    model: &str,
    request: clawgate_wire::ChatRequest,
    session: Option<String>,
) -> Result<clawgate_router::Routed, ApiError> {
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
    if let Some(k) = &session {
        check_key("user", k)?;
    }
    let target =
        Target::from_api(&registry, model, override_model).map_err(|e| turn_error(&registry, e))?;
    let session = header_session.map(str::to_string).or(session);
    let input = clawgate_session::TurnInput {
        request,
        session,
        on_notice: None,
    };
    let mut routed = clawgate_session::route(&state.runner, &registry, &target, input)
        .await
        .map_err(|e| turn_error(&registry, e))?;
    routed.observe(state.telemetry.clone());
    Ok(routed)
}

/// A turn's error in the OpenAI shape (each endpoint re-shapes it for its
/// protocol): 404 with the valid targets, 403 for the policy, the routing
/// failure's own status.
pub(crate) fn turn_error(reg: &Registry, e: TurnError) -> ApiError {
    match e {
        TurnError::UnknownTarget { model, reason } => unknown_model(reg, &model, &reason),
        TurnError::Forbidden(p) => {
            ApiError::new(StatusCode::FORBIDDEN, "permission_error", p.to_string()).param("model")
        }
        TurnError::Run(r) => ApiError::from_run(&r),
    }
}

/// The fixed paths `/metrics` counts by name (a `&'static str` label
/// costs no allocation per request).
const ENDPOINTS: [&str; 8] = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/models",
    "/health",
    "/ready",
    "/metrics",
];

/// Counts every request by endpoint and status.
async fn count(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let endpoint = if path.starts_with("/v1/models/") {
        "/v1/models/{id}"
    } else {
        ENDPOINTS
            .iter()
            .find(|e| **e == path)
            .copied()
            .unwrap_or("other")
    };
    let res = next.run(req).await;
    state.telemetry.request(endpoint, res.status().as_u16());
    res
}

/// 404 for a model target that does not resolve, listing the valid ones.
pub(crate) fn unknown_model(reg: &Registry, model: &str, err: &dyn std::fmt::Display) -> ApiError {
    let targets: Vec<String> = model_ids(reg);
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!(
            "The model `{model}` does not exist ({err}). Valid targets: {}",
            targets.join(", ")
        ),
    )
    .code("model_not_found")
    .param("model")
}

/// Agent targets, aliases and model refs clients may send (GW-2).
fn model_ids(reg: &Registry) -> Vec<String> {
    let mut ids = vec!["default".to_string(), "openclaw".to_string()];
    for id in reg.config.agents.entries.keys() {
        ids.push(format!("agent/{id}"));
        ids.push(format!("openclaw/{id}"));
    }
    ids.extend(reg.aliases.iter().map(|(a, _)| a.clone()));
    let referenced = reg.referenced();
    for (p, m) in reg.models() {
        let r = m.reference();
        if p.configured || referenced.iter().any(|x| x.matches(&r)) {
            let s = r.to_string();
            if !ids.contains(&s) {
                ids.push(s);
            }
        }
    }
    ids
}

fn model_obj(id: &str, owner: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
}

fn owner(reg: &Registry, id: &str) -> String {
    if id == "default"
        || id == "openclaw"
        || id.starts_with("agent/")
        || id.starts_with("openclaw/")
    {
        return "clawgate".to_string();
    }
    reg.resolve(id)
        .map(|r| r.model.provider)
        .unwrap_or_else(|_| "clawgate".to_string())
}

async fn list_models(State(state): State<AppState>) -> Json<Value> {
    let reg = state.registry();
    let data: Vec<Value> = model_ids(&reg)
        .iter()
        .map(|id| model_obj(id, &owner(&reg, id)))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let reg = state.registry();
    if model_ids(&reg).iter().any(|m| m.eq_ignore_ascii_case(&id)) || reg.resolve(&id).is_ok() {
        return Json(model_obj(&id, &owner(&reg, &id))).into_response();
    }
    let err = reg
        .resolve(&id)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    unknown_model(&reg, &id, &err).into_response()
}

async fn health() -> Json<Value> {
    Json(json!({"ok": true, "status": "live"}))
}

/// Ready when the config is loaded and at least one candidate of the
/// default agent accepts a TCP connection (a probe of 500 ms each). With
/// auth on, a caller without the credential learns only ok/status (no
/// model names or addresses).
async fn ready(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let reg = state.registry();
    let details = state.auth.accepts(&headers);
    let answer = |code: StatusCode, mut body: Value| {
        if !details {
            body = json!({"ok": body["ok"], "status": body["status"]});
        }
        (code, Json(body)).into_response()
    };
    let chain = match reg.chain(None, None) {
        Ok(c) => c,
        Err(e) => {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ok": false, "status": "no-model", "error": e.to_string()}),
            )
        }
    };
    let mut checked = Vec::new();
    for c in &chain.candidates {
        let m = &c.resolved.model;
        let Some(p) = reg.provider(&m.provider) else {
            continue;
        };
        let reference = m.reference().to_string();
        if clawgate_router::probe::reachable(p.base_url_for(m), Duration::from_millis(500)).await {
            return answer(
                StatusCode::OK,
                json!({"ok": true, "status": "ready", "default": chain.candidates.first().map(|x| x.resolved.reference().to_string()), "reachable": reference}),
            );
        }
        checked.push(reference);
    }
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"ok": false, "status": "unreachable", "checked": checked}),
    )
}

async fn fallback(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/v1/messages") {
        return messages::not_found(uri).await;
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown endpoint",
    )
    .into_response()
}

/// The application.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route(
            "/v1/messages",
            post(messages::handle).fallback(messages::not_found),
        )
        .route(
            "/v1/messages/count_tokens",
            post(messages::count_tokens).fallback(messages::not_found),
        )
        .route("/v1/responses", post(responses::handle))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
        .route("/metrics", get(metrics::handle))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(api)
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::local_only,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Watches the config file (CFG-6): when its modification time or size
/// changes, the file is loaded and fully checked; a valid file replaces the
/// snapshot, an invalid one is reported and the old snapshot stays.
pub fn watch_config(
    state: AppState,
    path: std::path::PathBuf,
    every: Duration,
    load: impl Fn(&std::path::Path) -> Result<Registry, String> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    tokio::spawn(async move {
        let mut last = stamp(&path);
        loop {
            tokio::time::sleep(every).await;
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            match load(&path) {
                Ok(reg) => {
                    for what in
                        restart_only_changes(&state.registry().config.gateway, &reg.config.gateway)
                    {
                        tracing::warn!(path = %path.display(), "config reload: {what} changed; it takes effect only after a restart of the gateway");
                    }
                    state.swap_registry(reg);
                    tracing::info!(path = %path.display(), "config reloaded");
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "config reload rejected; keeping the previous config")
                }
            }
        }
    })
}

/// Gateway settings a reload cannot apply (the listener and its auth are
/// fixed at start): the names of those that differ.
pub fn restart_only_changes(
    old: &clawgate_config::Gateway,
    new: &clawgate_config::Gateway,
) -> Vec<&'static str> {
    let secret = |s: &Option<clawgate_config::SecretValue>| {
        s.as_ref()
            .and_then(|v| v.resolved.as_ref())
            .map(|x| x.expose().to_string())
    };
    let mut out = Vec::new();
    if old.bind != new.bind {
        out.push("gateway.bind");
    }
    if old.port != new.port {
        out.push("gateway.port");
    }
    if old.auth_mode != new.auth_mode {
        out.push("gateway.auth.mode");
    }
    if secret(&old.token) != secret(&new.token) {
        out.push("gateway.auth.token");
    }
    if secret(&old.password) != secret(&new.password) {
        out.push("gateway.auth.password");
    }
    if old.allowed_hosts != new.allowed_hosts {
        out.push("gateway.http.allowedHosts");
    }
    out
}

/// Why the gateway will not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {0} without auth: set gateway.auth.mode to token or password (or bind to loopback)")]
    NoAuthOnPublicBind(SocketAddr),
    #[error("gateway.auth.mode is {mode} but no {mode} is configured{detail}")]
    MissingSecret {
        mode: &'static str,
        /// Which variable is unset, when the secret names one.
        detail: String,
    },
    #[error(
        "invalid bind address {0:?}: use loopback, lan, or an IP address (127.0.0.1, 0.0.0.0, ::1)"
    )]
    BadBind(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// `gateway.bind` as an address: `loopback` → 127.0.0.1, `lan` → 0.0.0.0,
/// or an IP address; anything else is an error (a typo must not silently
/// listen somewhere else).
pub fn bind_ip(bind: &str) -> Result<IpAddr, ServeError> {
    match bind.trim() {
        "loopback" | "localhost" => Ok(IpAddr::from([127, 0, 0, 1])),
        "lan" => Ok(IpAddr::from([0, 0, 0, 0])),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| ServeError::BadBind(bind.to_string())),
    }
}

/// Checks the auth rules of SEC-1 before binding.
pub fn check_auth(addr: SocketAddr, auth: &GatewayAuth) -> Result<(), ServeError> {
    let missing = |mode| ServeError::MissingSecret {
        mode,
        detail: String::new(),
    };
    match auth.mode {
        AuthMode::None if !addr.ip().is_loopback() => Err(ServeError::NoAuthOnPublicBind(addr)),
        AuthMode::Token if auth.secret.is_none() => Err(missing("token")),
        AuthMode::Password if auth.secret.is_none() => Err(missing("password")),
        _ => Ok(()),
    }
}

/// Everything `clawgate gateway` checks before it binds, from the config
/// and the command line's overrides: the address, the auth mode and its
/// secret (naming an unset `${VAR}`). `config validate` runs the same.
pub fn startup(
    g: &clawgate_config::Gateway,
    bind: Option<&str>,
    port: Option<u16>,
) -> Result<(SocketAddr, GatewayAuth), ServeError> {
    let addr = SocketAddr::new(bind_ip(bind.unwrap_or(&g.bind))?, port.unwrap_or(g.port));
    let auth = GatewayAuth::from_config(g);
    match check_auth(addr, &auth) {
        Err(ServeError::MissingSecret { mode, .. }) => {
            let written = match mode {
                "token" => g.token.as_ref(),
                _ => g.password.as_ref(),
            };
            let detail = match written {
                Some(sv) if !sv.missing.is_empty() => format!(
                    ": gateway.auth.{mode} uses {}, which is not set in the environment",
                    sv.missing
                        .iter()
                        .map(|v| format!("${{{v}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => format!(": set gateway.auth.{mode}"),
            };
            Err(ServeError::MissingSecret { mode, detail })
        }
        Err(e) => Err(e),
        Ok(()) => Ok((addr, auth)),
    }
}

/// How long a client may take to send a request's headers, and how long
/// a keep-alive connection may sit idle between requests: hyper runs the
/// same timer while it waits for the next request head. Half-sent
/// requests (slowloris) and forgotten connections are closed after it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Server limits; the defaults are what `clawgate gateway` uses.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// On SIGINT/SIGTERM, how long in-flight requests may finish.
    pub drain: Duration,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            drain: Duration::from_secs(10),
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Binds and serves until SIGINT/SIGTERM, then drains in-flight requests
/// for up to `drain`.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    drain: Duration,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let opts = ServeOptions {
        drain,
        ..ServeOptions::default()
    };
    check_auth(addr, &state.auth)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    on_ready(listener.local_addr()?);
    serve_on(listener, state, opts, shutdown_signal()).await
}

/// Serves on a bound listener until `stop` completes, then drains: every
/// connection finishes its request in flight (idle ones close at once)
/// for up to `opts.drain`, after which the rest are dropped.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    opts: ServeOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower_service::Service as _;
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or a connection reset while
                    // queued: keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // PERF-2: no Nagle delay on small responses and stream chunks.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                // Router is always ready: no poll_ready needed.
                app.clone().call(req)
            });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(opts.drain) => {
            tracing::warn!("drain bound reached; closing remaining connections");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
