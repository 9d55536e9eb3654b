//! Routing and failover (FO-1..8).
//!
//! Brief overview: [`classify`] turns a wire failure into an
//! [`ErrorClass`]; the [`cooldown`] book keeps per-credential and per-model
//! cooldowns on an injected [`clock::Clock`]; the [`runner`] walks a
//! candidate chain — skipping cooling and policy-excluded candidates,
//! rotating credentials, retrying a wholly overloaded chain with backoff —
//! and hands back the first stream that produced output, or one error that
//! lists every attempt. [`target`] turns a resolved model into a wire
//! endpoint.

mod classify;
pub mod clock;
pub mod cooldown;
pub mod gate;
pub mod probe;
pub mod runner;
pub mod target;

pub use classify::{classify, ErrorClass};
pub use runner::{
    Attempt, Exhausted, Finished, Metrics, Observer, OverloadPolicy, Routed, RoutedStream,
    RunError, Runner, Served, StreamFailure, Turn, OVERLOAD_NOTICE,
};
