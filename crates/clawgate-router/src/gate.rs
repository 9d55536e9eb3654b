//! The hook before every upstream call (LOC-1, LOC-6, LOC-7), injected
//! like the clock: whatever must be true before a request may go to a
//! provider — its local server started and ready, a queue slot free, its
//! swap group switched to it — is the gate's business. The runner only
//! asks, holds the permit for as long as the answer streams, and moves on
//! when the gate says "spill" or "failed". It knows nothing of processes.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use clawgate_catalog::{Provider, Registry};

use crate::ErrorClass;

/// What the runner tells the gate about one attempt.
pub struct Entry<'a> {
    pub registry: &'a Registry,
    pub provider: &'a Provider,
    /// The candidate's ref, for notices.
    pub reference: &'a str,
    /// Whether a long wait may give up and let the next candidate answer
    /// (`spillAfterMs`); false for the last candidate of a chain.
    pub may_spill: bool,
    /// User-facing progress ("waiting for … to load, 12 s").
    pub on_notice: Option<&'a (dyn Fn(&str) + Sync)>,
}

/// Held while the answer streams; dropping it ends the request's lease and
/// frees its queue slot.
#[derive(Default)]
pub struct Permit {
    _held: Option<Box<dyn Send + Sync>>,
    /// Time spent waiting for a queue slot (PERF-5's split).
    pub queued: Duration,
    /// Time spent waiting for a server to start or a swap to finish.
    pub starting: Duration,
}

impl Permit {
    pub fn new(held: impl Send + Sync + 'static, queued: Duration, starting: Duration) -> Self {
        Self {
            _held: Some(Box::new(held)),
            queued,
            starting,
        }
    }
}

/// Why the gate did not let an attempt through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Waited longer than `spillAfterMs`: try the next candidate.
    Spill(String),
    /// The provider cannot be used now (its server failed to start).
    Failed { class: ErrorClass, detail: String },
}

pub type GateFuture<'a> = Pin<Box<dyn Future<Output = Result<Permit, Refusal>> + Send + 'a>>;

pub trait Gate: Send + Sync {
    /// Whether `provider` needs the gate at all (a hosted API without a
    /// limit does not): checked first, so the common path costs nothing.
    fn guards(&self, provider: &Provider) -> bool;

    /// Waits until a request may go to `entry.provider`.
    fn enter<'a>(&'a self, entry: Entry<'a>) -> GateFuture<'a>;

    /// The context one request to `provider`'s `model` really gets, when
    /// its server said (LOC-3); never waits.
    fn served_context(&self, provider: &str, model: &str) -> Option<u64> {
        let _ = (provider, model);
        None
    }
}
