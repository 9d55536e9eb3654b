//! Talking to model servers (WIRE-1..8).
//!
//! Brief overview: a [`types::ChatRequest`] goes out through
//! [`client::Client::send`] to one [`endpoint::Endpoint`] in one of three
//! protocols ([`openai_chat`], [`openai_responses`], [`anthropic`]); what
//! comes back is one internal stream of [`types::Event`]s, whatever the
//! protocol and whether the server streamed or not. [`sse`] frames the
//! bytes, [`think`] keeps inline reasoning out of final text.

pub mod anthropic;
pub mod client;
mod decode;
pub mod endpoint;
pub mod error;
pub mod guard;
mod h1;
pub mod introspect;
pub mod openai_chat;
pub mod openai_responses;
pub mod sse;
pub mod think;
pub mod tool_text;
pub mod types;

pub use client::{Client, EventStream};
pub use endpoint::{Endpoint, MaxTokensField, Shaping};
pub use error::{Phase, WireError, WireErrorKind};
pub use types::*;

/// Fields only api.openai.com understands; never sent elsewhere (WIRE-2).
const OPENAI_ONLY: [&str; 5] = [
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "prompt_cache_retention",
];

/// The fields every protocol shares (sampling, `stream`), then
/// `params.extra_body` (it wins on collisions), then OpenAI-only fields
/// stripped on every endpoint but api.openai.com.
pub(crate) fn finish_body(
    body: serde_json::Map<String, serde_json::Value>,
    req: &ChatRequest,
    ep: &Endpoint,
) -> serde_json::Value {
    serde_json::Value::Object(finish_map(body, req, ep))
}

/// [`finish_body`] as a map.
pub(crate) fn finish_map(
    mut body: serde_json::Map<String, serde_json::Value>,
    req: &ChatRequest,
    ep: &Endpoint,
) -> serde_json::Map<String, serde_json::Value> {
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(t) = req.top_p {
        body.insert("top_p".into(), t.into());
    }
    body.insert("stream".into(), req.stream.into());
    for (k, v) in &req.extra_body {
        body.insert(k.clone(), v.clone());
    }
    if !ep.is_native_openai() {
        for k in OPENAI_ONLY {
            body.remove(k);
        }
    }
    body
}
