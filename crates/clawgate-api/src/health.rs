//! `GET /health` (the process is alive) and `GET /ready` (a model is
//! configured and reachable; details only for callers with the
//! credential when auth is on).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

pub(crate) async fn health() -> Json<Value> {
    Json(json!({"ok": true, "status": "live"}))
}

/// Ready when the config is loaded and at least one candidate of the
/// default agent can answer (see [`up`]; 500 ms per probe). With
/// auth on, a caller without the credential learns only ok/status (no
/// model names or addresses).
pub(crate) async fn ready(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
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
        if up(&state, p, m).await {
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

/// Whether a candidate can answer now: a `localService` is started on
/// demand, so it counts; another local server must pass the same health
/// probe the supervisor uses (`GET {baseUrl}/models`; "loading" is not
/// ready yet); a hosted API must accept a TCP connection (no key is
/// spent on a readiness check).
async fn up(state: &AppState, p: &clawgate_catalog::Provider, m: &clawgate_catalog::Model) -> bool {
    let base = p.base_url_for(m);
    if p.local_service.is_some() {
        return true;
    }
    if p.hosted {
        let reach = clawgate_router::runner::reach_for(p, base, false);
        return clawgate_router::probe::reachable(base, PROBE, reach).await;
    }
    let key = p.api_key.as_ref().and_then(|k| k.resolved.as_ref());
    let url = format!("{}/models", base.trim_end_matches('/'));
    state
        .runner
        .client()
        .scoped(p.guard.clone())
        .health(&url, key, PROBE)
        .await
        == clawgate_wire::introspect::Health::Ready
}

/// One readiness probe's bound.
const PROBE: Duration = Duration::from_millis(500);
