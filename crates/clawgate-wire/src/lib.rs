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

/// Merges `params.extra_body` into a body (it wins on collisions), then
/// strips OpenAI-only fields on every other endpoint.
pub(crate) fn merge_extra(
    body: &mut serde_json::Map<String, serde_json::Value>,
    extra: &serde_json::Map<String, serde_json::Value>,
    ep: &Endpoint,
) {
    for (k, v) in extra {
        body.insert(k.clone(), v.clone());
    }
    if !ep.is_native_openai() {
        for k in OPENAI_ONLY {
            body.remove(k);
        }
    }
}
