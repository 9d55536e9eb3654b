//! `/v1/clawgate/local` (LOC-7): the local servers clawgate knows — state,
//! pid, leases, idle timer — and the queues in front of each backend;
//! `/v1/clawgate/local/unload` stops one once its requests end. What
//! `clawgate models running` and `clawgate models unload` read and call.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::AppState;

pub(crate) async fn list(State(state): State<AppState>) -> Response {
    let Some(local) = &state.local else {
        return Json(json!({"services": [], "queues": []})).into_response();
    };
    let services: Vec<Value> = local
        .running()
        .into_iter()
        .map(|s| {
            json!({
                "provider": s.provider,
                "group": s.group,
                "state": s.state,
                "pid": s.pid,
                "leases": s.leases,
                "starts": s.starts,
                "idle_stop_in_ms": s.idle_stop_in.map(|d| d.as_millis() as u64),
                "last_output": s.last_output,
            })
        })
        .collect();
    let queues: Vec<Value> = local
        .queues()
        .into_iter()
        .map(|q| {
            json!({
                "provider": q.provider,
                "limit": q.limit,
                "in_flight": q.in_flight,
                "waiting": q.waiting,
                "queued_total": q.queued_total,
                "wait_seconds_total": q.wait_seconds_total,
                "spilled_total": q.spilled_total,
            })
        })
        .collect();
    Json(json!({"services": services, "queues": queues})).into_response()
}

/// `{"model": "<provider/model | alias | provider>"}`.
pub(crate) async fn unload(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let wanted = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_string));
    let Some(wanted) = wanted.filter(|w| !w.is_empty() && w.len() <= 512) else {
        return ApiError::bad_request("expected {\"model\": \"<provider/model or provider>\"}")
            .param("model")
            .into_response();
    };
    let reg = state.registry();
    let provider = match reg.resolve(&wanted) {
        Ok(r) => r.model.provider.clone(),
        Err(e) => match reg.provider(&wanted) {
            Some(p) => p.id.clone(),
            None => {
                return ApiError::bad_request(e.to_string())
                    .param("model")
                    .into_response()
            }
        },
    };
    let stopped = match &state.local {
        Some(local) => local.unload(&provider).await,
        None => false,
    };
    if !stopped {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("no local server started by clawgate runs for {provider}"),
        )
        .into_response();
    }
    Json(json!({"provider": provider, "stopped": true})).into_response()
}
