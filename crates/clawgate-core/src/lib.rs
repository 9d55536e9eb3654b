//! Shared vocabulary of clawgate.
//!
//! This crate holds the small types every other crate speaks: model
//! references ([`ModelRef`]), the wire API kinds ([`ApiKind`]) and secrets
//! ([`Secret`]). It does no IO and depends on nothing in the workspace, so
//! that routing and policy code built on it stays pure and testable.

mod api;
mod model_ref;
pub mod net;
mod redact;
mod secret;

pub use api::{ApiKind, ApiParse};
pub use model_ref::{ModelRef, RefError};
pub use redact::{Redactor, MASK};
pub use secret::Secret;
