//! The gateway's HTTP surfaces (GW-1..3, SEC-1).
//!
//! Brief overview: [`router`] builds the axum app over an [`AppState`] (the
//! current config snapshot and the failover runner); [`serve`] binds it
//! with TCP_NODELAY, refuses a non-loopback bind without auth, and drains
//! on SIGINT/SIGTERM. Handlers are thin: they parse the protocol, call the
//! turn step (`clawgate-session`), and shape the answer and the errors in
//! the protocol's own form. Modules by idea: `state` (what handlers share,
//! config reload), `inbound` (shared field readers and the turn call),
//! `models` (`/v1/models`), `health` (`/health`, `/ready`), `serve` (the
//! listener, start-up checks, timeouts, drain), one module per protocol.

mod auth;
mod chat;
pub mod errors;
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod health;
mod inbound;
mod local;
mod messages;
mod metrics;
mod models;
mod responses;
mod serve;
mod sse;
mod state;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use auth::{GatewayAuth, FAILURE_WINDOW, MAX_FAILURES};
use errors::ApiError;
pub use inbound::MAX_KEY_LEN;
pub(crate) use inbound::{route, turn_error, Answer, SessionKey};
pub(crate) use models::unknown_model;
pub use serve::{
    bind_ip, check_auth, serve, serve_on, startup, ServeError, ServeOptions, HEADER_READ_TIMEOUT,
};
pub use state::{restart_only_changes, watch_config, AppState, Shared};

/// Request bodies above this are refused with 413 (GW-3).
pub const MAX_BODY: usize = 20 * 1024 * 1024;

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

/// The `/metrics` label of a path.
fn endpoint_label(path: &str) -> &'static str {
    if path.starts_with("/v1/models/") {
        "/v1/models/{id}"
    } else if path.starts_with("/v1/responses/") {
        "/v1/responses/{id}"
    } else {
        ENDPOINTS
            .iter()
            .find(|e| **e == path)
            .copied()
            .unwrap_or("other")
    }
}

/// The router behind the checks every request passes first: with auth
/// off, the SEC-1 guard against what a web page can send; with auth on,
/// the credential on everything but `/health` and `/ready`. Both run as
/// plain code before the router, and the request is counted after: three
/// axum middleware layers (a boxed future and a router clone each) cost a
/// tenth of a request's CPU at c=64 (issue 14).
#[derive(Clone)]
pub(crate) struct App {
    router: Router,
    state: AppState,
}

impl App {
    pub(crate) fn new(state: AppState) -> Self {
        Self {
            router: router(state.clone()),
            state,
        }
    }

    pub(crate) async fn handle<B>(mut self, req: axum::http::Request<B>) -> Response
    where
        B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        use tower_service::Service as _;
        let path = req.uri().path();
        let endpoint = endpoint_label(path);
        let auth = &self.state.auth;
        let refused = if auth.mode == clawgate_config::AuthMode::None {
            guard::check(req.method(), path, req.headers(), &auth.allowed_hosts)
        } else if path == "/health" || path == "/ready" {
            None
        } else {
            let ip = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip());
            auth::check(auth, path, req.headers(), ip)
        };
        let res = match refused {
            Some(res) => res,
            // `self` is already this request's copy: no second clone.
            None => match self.router.call(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            },
        };
        self.state
            .telemetry
            .request(endpoint, res.status().as_u16());
        res
    }
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

/// The routes (behind [`App`]'s checks).
fn router(state: AppState) -> Router {
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
        .route("/v1/responses/{id}", get(responses::get))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{*id}", get(models::get_model))
        .route("/metrics", get(metrics::handle))
        .route("/v1/clawgate/local", get(local::list))
        .route("/v1/clawgate/local/unload", post(local::unload));
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .merge(api)
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
