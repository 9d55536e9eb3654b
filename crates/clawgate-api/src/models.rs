//! `GET /v1/models` and `GET /v1/models/{id}` (GW-2): the targets a
//! client may send — agent targets, aliases, configured and referenced
//! model refs — and the 404 that lists them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use clawgate_catalog::Registry;
use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::AppState;

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

pub(crate) async fn list_models(State(state): State<AppState>) -> Json<Value> {
    let reg = state.registry();
    let data: Vec<Value> = model_ids(&reg)
        .iter()
        .map(|id| model_obj(id, &owner(&reg, id)))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub(crate) async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Response {
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
