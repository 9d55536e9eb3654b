//! The candidate runner (FO-1, FO-3..8): walks a chain, skipping cooling
//! and policy-excluded candidates, rotating a provider's credentials,
//! retrying a wholly overloaded chain with backoff, and returns the first
//! stream that produced output — or one error listing every attempt.
//!
//! A candidate counts as answering once its first event arrived: failures
//! before that (refused, reset, 5xx, a stream cut before any output) move
//! on; failures after it end the turn with a terminal error (FO-5).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawgate_catalog::{Chain, Provider, Registry};
use clawgate_config::SecretValue;
use clawgate_wire::{ChatRequest, Client, Event, EventStream, WireError};

use crate::clock::Clock;
use crate::cooldown::{Admission, CooldownBook, CooldownKey};
use crate::gate::{Entry, Gate, Permit, Refusal};
use crate::target::{endpoint, extra_body};
use crate::{classify, ErrorClass};

/// OpenClaw's wording for the 30-second overload notice (FO-4).
pub const OVERLOAD_NOTICE: &str =
    "The AI service is temporarily overloaded. I’m still retrying; this may take a few minutes.";

/// How long a local server's port gets to accept a connection before its
/// "unreachable" cooldown is trusted.
const LOCAL_PROBE: Duration = Duration::from_millis(250);

/// Longest `Retry-After` waited for instead of failing the turn (FO-3).
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// FO-4 parameters.
#[derive(Debug, Clone, Copy)]
pub struct OverloadPolicy {
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub notice_after: Duration,
}

impl Default for OverloadPolicy {
    fn default() -> Self {
        Self {
            max_retries: 10,
            initial_backoff: Duration::from_millis(2500),
            max_backoff: Duration::from_secs(30),
            notice_after: Duration::from_secs(30),
        }
    }
}

/// One try of one candidate (or why it was skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub reference: String,
    pub profile: Option<String>,
    pub class: Option<ErrorClass>,
    pub status: Option<u16>,
    pub detail: String,
    /// Set when the candidate was not tried at all.
    pub skipped: Option<String>,
    /// Which pass of the overload retry (0 = first).
    pub round: u32,
    /// `Retry-After` the server sent, if any.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reference)?;
        if let Some(p) = &self.profile {
            write!(f, " [{p}]")?;
        }
        if let Some(s) = &self.skipped {
            return write!(f, " — skipped: {s}");
        }
        let class = self.class.map_or("unknown", |c| c.as_str());
        write!(f, " — {class}")?;
        if let Some(st) = self.status {
            write!(f, " (HTTP {st})")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Every candidate failed (FO-6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub attempts: Vec<Attempt>,
    /// The soonest cooldown expiry among the candidates, if any.
    pub soonest_retry: Option<Duration>,
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "all candidates failed ({} attempts)",
            self.attempts.len()
        )?;
        for (i, a) in self.attempts.iter().enumerate() {
            write!(f, "\n  {}. {a}", i + 1)?;
        }
        if let Some(d) = self.soonest_retry {
            write!(f, "\n  soonest cooldown ends in {}s", ceil_secs(d))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Exhausted(Exhausted),
    /// A failure another model would repeat (context overflow, format):
    /// surfaced, not failed over (FO-2, CTX-4).
    #[error("{reference}: {class}: {error}", class = .class.as_str())]
    Surfaced {
        reference: String,
        class: ErrorClass,
        error: WireError,
        attempts: Vec<Attempt>,
    },
}

impl RunError {
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            RunError::Exhausted(e) => &e.attempts,
            RunError::Surfaced { attempts, .. } => attempts,
        }
    }
}

/// Where an answer came from (FO-8).
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub reference: String,
    pub provider: String,
    pub model: String,
    pub host: String,
    pub api: String,
    pub profile: String,
    /// The model's price table (USD per million tokens; local = 0).
    pub cost: clawgate_config::Cost,
    /// The client asked for more output than the model's `maxTokens`:
    /// `(asked, sent)`. Said to the client, never silent.
    pub capped: Option<(u64, u64)>,
}

impl Served {
    /// The notice for a lowered output cap, when it was lowered.
    pub fn cap_notice(&self) -> Option<String> {
        self.capped.map(|(asked, sent)| {
            format!(
                "max_tokens {asked} lowered to {sent}: {}'s maxTokens is {sent} (raise models.providers.{}.models[].maxTokens if the model can write more)",
                self.reference, self.provider
            )
        })
    }
}

/// A failure after output started: the turn ends here (FO-5).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reference} failed after output had started ({class}): {error}; the answer is incomplete", class = .class.as_str())]
pub struct StreamFailure {
    pub reference: String,
    pub class: ErrorClass,
    pub error: WireError,
}

/// How a routed answer ended, handed to every [`Observer`] once.
#[derive(Debug)]
pub struct Finished<'a> {
    /// Who answered.
    pub served: &'a Served,
    /// The usage the server reported, if any.
    pub usage: Option<&'a clawgate_wire::Usage>,
    /// From the start of routing to the end of the answer.
    pub took: Duration,
    /// Of `took`, the time spent waiting on upstreams; the rest is the
    /// gateway's own overhead (PERF-5).
    pub upstream_wait: Duration,
    /// Set when the answer failed after output had started (FO-5).
    pub failure: Option<ErrorClass>,
}

/// Where whatever follows an answer attaches: metrics today; usage rows,
/// history and the dashboard next. Called once per answer, when its stream
/// ends or is dropped (a client that goes away), on the task that drove
/// it: keep it short and non-blocking.
pub trait Observer: Send + Sync {
    fn finished(&self, answer: &Finished<'_>);
}

/// The answering stream, its first event already received.
pub struct RoutedStream {
    first: Option<Event>,
    inner: EventStream,
    reference: String,
    usage: Option<clawgate_wire::Usage>,
    /// Who is told when the answer ends, with what served it and when
    /// routing began.
    observers: Vec<Arc<dyn Observer>>,
    watched: Option<(Arc<Served>, std::time::Instant)>,
    failure: Option<ErrorClass>,
    /// Time spent waiting on upstreams: attempts, backoff, and every read.
    upstream_wait: Duration,
    /// Masks secrets an upstream quotes back in a mid-stream error.
    redactor: Arc<clawgate_core::Redactor>,
    /// Whether the end (or a failure) was logged.
    ended: bool,
    /// The gate's permit (a local server's lease, a queue slot), held
    /// until the answer ends.
    permit: Permit,
}

impl Drop for RoutedStream {
    fn drop(&mut self) {
        let Some((served, started)) = self.watched.take() else {
            return;
        };
        let answer = Finished {
            served: &served,
            usage: self.usage.as_ref(),
            took: started.elapsed(),
            upstream_wait: self.upstream_wait,
            failure: self.failure,
        };
        for o in &self.observers {
            o.finished(&answer);
        }
    }
}

// A failure ends the stream and happens once; boxing it would cost an
// allocation on a path that is never hot.
#[allow(clippy::result_large_err)]
impl RoutedStream {
    /// The ref of the model that is answering.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Time spent waiting on upstreams so far; the gateway's own overhead is
    /// the elapsed time minus this (PERF-5).
    pub fn upstream_wait(&self) -> Duration {
        self.upstream_wait
    }

    pub async fn next(&mut self) -> Option<Result<Event, StreamFailure>> {
        if let Some(ev) = self.first.take() {
            return Some(Ok(self.seen(ev)));
        }
        let t = std::time::Instant::now();
        let next = self.inner.next().await;
        self.upstream_wait += t.elapsed();
        self.end(next)
    }

    /// Maps an upstream item; logs how the answer ended (once).
    fn end(
        &mut self,
        next: Option<Result<Event, clawgate_wire::WireError>>,
    ) -> Option<Result<Event, StreamFailure>> {
        match next {
            Some(r) => Some(self.map(r)),
            None => {
                if !self.ended {
                    self.ended = true;
                    tracing::info!(candidate = %self.reference, "answered");
                }
                None
            }
        }
    }

    /// The next event if it is ready without waiting on the upstream
    /// (see [`EventStream::next_ready`]).
    pub fn next_ready(&mut self) -> std::task::Poll<Option<Result<Event, StreamFailure>>> {
        if let Some(ev) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(self.seen(ev))));
        }
        self.inner.next_ready().map(|n| self.end(n))
    }

    fn seen(&mut self, ev: Event) -> Event {
        if let Event::Usage(u) = &ev {
            self.usage = Some(*u);
        }
        ev
    }

    fn map(&mut self, r: Result<Event, clawgate_wire::WireError>) -> Result<Event, StreamFailure> {
        match r {
            Ok(ev) => Ok(self.seen(ev)),
            Err(error) => {
                let error = redacted(&self.redactor, error);
                let class = classify(&error);
                self.ended = true;
                self.failure = Some(class);
                tracing::warn!(
                    candidate = %self.reference,
                    class = class.as_str(),
                    "answer failed after output had started"
                );
                Err(StreamFailure {
                    reference: self.reference.clone(),
                    class,
                    error,
                })
            }
        }
    }
}

pub struct Routed {
    pub stream: RoutedStream,
    /// When routing of this turn began (for the overhead measure, PERF-5).
    pub started: std::time::Instant,
    pub served: Arc<Served>,
    /// What the chain asked for first.
    pub selected: String,
    pub attempts: Vec<Attempt>,
    /// The gateway answered itself ([`Routed::local`]): no model call.
    pub local: bool,
}

impl Routed {
    /// An answer the gateway makes itself (a chat command's reply), shaped
    /// like a routed one so every surface renders it as usual.
    pub fn local(served: Served, events: Vec<Event>) -> Self {
        Routed {
            stream: RoutedStream {
                first: None,
                inner: EventStream::canned(events),
                reference: served.reference.clone(),
                usage: None,
                observers: Vec::new(),
                watched: None,
                failure: None,
                upstream_wait: Duration::ZERO,
                redactor: Arc::new(clawgate_core::Redactor::default()),
                ended: false,
                permit: Permit::default(),
            },
            started: std::time::Instant::now(),
            selected: served.reference.clone(),
            served: Arc::new(served),
            attempts: Vec::new(),
            local: true,
        }
    }

    /// Tells `observer` how this answer ends (see [`Observer`]).
    pub fn observe(&mut self, observer: Arc<dyn Observer>) {
        if self.stream.watched.is_none() {
            self.stream.watched = Some((self.served.clone(), self.started));
        }
        self.stream.observers.push(observer);
    }

    /// Time the answering request waited for a queue slot (LOC-6).
    pub fn queued(&self) -> Duration {
        self.stream.permit.queued
    }

    /// Time the answering request waited for its local server to start
    /// or its swap group to switch (LOC-1, LOC-7).
    pub fn starting(&self) -> Duration {
        self.stream.permit.starting
    }

    /// The gateway's own time so far: elapsed since routing began minus
    /// the time spent waiting on upstreams, queues and server starts
    /// (PERF-5).
    pub fn overhead(&self) -> Duration {
        self.started
            .elapsed()
            .saturating_sub(self.stream.upstream_wait())
    }

    /// FO-7: "answered by X (selected Y: reason)" when a fallback answered.
    pub fn fallback_notice(&self) -> Option<String> {
        if self.served.reference.eq_ignore_ascii_case(&self.selected) {
            return None;
        }
        let reason = self
            .attempts
            .iter()
            .find(|a| a.reference.eq_ignore_ascii_case(&self.selected))
            .map(|a| match (&a.skipped, a.class) {
                (Some(s), _) => s.clone(),
                (None, Some(c)) => c.as_str().to_string(),
                _ => "unavailable".to_string(),
            })
            .unwrap_or_else(|| "unavailable".to_string());
        Some(format!(
            "answered by {} (selected {}: {reason})",
            self.served.reference, self.selected
        ))
    }
}

/// Counters a metrics endpoint exposes (FO-6).
#[derive(Debug, Default)]
pub struct Metrics {
    pub turns: AtomicU64,
    pub attempts: AtomicU64,
    pub fallbacks: AtomicU64,
    pub exhausted: AtomicU64,
    pub overload_retries: AtomicU64,
    failures: Mutex<HashMap<&'static str, u64>>,
}

impl Metrics {
    fn failure(&self, class: ErrorClass) {
        if let Ok(mut m) = self.failures.lock() {
            *m.entry(class.as_str()).or_default() += 1;
        }
    }

    /// Failures per class so far.
    pub fn failures(&self) -> HashMap<&'static str, u64> {
        self.failures.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// One turn to route.
pub struct Turn<'a> {
    pub registry: &'a Registry,
    pub chain: &'a Chain,
    /// The request; `model` and `max_tokens` are set per candidate.
    pub request: ChatRequest,
    /// Session key for sticky credential choice.
    pub session: Option<String>,
    /// `(provider, profile)` pins a session store keeps (FO-3); they win
    /// over the in-memory pins of stateless keys.
    pub pinned: Vec<(String, String)>,
    pub agent: Option<&'a str>,
    /// Called with user-facing notices (the overload notice).
    pub on_notice: Option<&'a (dyn Fn(&str) + Sync)>,
}

pub struct Runner {
    client: Client,
    clock: Arc<dyn Clock>,
    gate: Option<Arc<dyn Gate>>,
    book: Mutex<CooldownBook>,
    sticky: Sticky,
    pub overload: OverloadPolicy,
    pub metrics: Metrics,
}

/// A credential of a provider: its profile id and key.
struct Credential {
    profile: String,
    key: Option<SecretValue>,
}

fn credentials(reg: &Registry, p: &Provider) -> Vec<Credential> {
    let default_id = format!("{}:default", p.id);
    let mut all = vec![Credential {
        profile: default_id.clone(),
        key: p.api_key.clone(),
    }];
    for prof in reg.config.auth.profiles.values() {
        if prof.provider.eq_ignore_ascii_case(&p.id) {
            all.push(Credential {
                profile: prof.id.clone(),
                key: prof.api_key.clone(),
            });
        }
    }
    // A provider with profiles and no key of its own uses only the profiles.
    if all.len() > 1 && p.api_key.as_ref().is_none_or(|k| k.resolved.is_none()) {
        all.remove(0);
    }
    let order = reg
        .config
        .auth
        .order
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&p.id))
        .map(|(_, v)| v.clone());
    if let Some(order) = order {
        all.sort_by_key(|c| {
            order
                .iter()
                .position(|o| *o == c.profile)
                .unwrap_or(usize::MAX)
        });
    }
    all
}

impl Runner {
    pub fn new(client: Client, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            clock,
            gate: None,
            book: Mutex::new(CooldownBook::default()),
            sticky: Sticky::default(),
            overload: OverloadPolicy::default(),
            metrics: Metrics::default(),
        }
    }

    /// Asks `gate` before every upstream call (local servers, queues).
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The context one request to `provider`'s `model` really gets, when
    /// its server said (see [`Gate::served_context`]).
    pub fn served_context(&self, provider: &str, model: &str) -> Option<u64> {
        self.gate.as_ref()?.served_context(provider, model)
    }

    /// The HTTP client upstream calls go through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Cooldown state with wall-clock expiries, to keep between runs.
    pub fn export_cooldowns(&self, now_unix_ms: u64) -> Vec<crate::cooldown::SavedCooldown> {
        let now = self.clock.now();
        self.book
            .lock()
            .map(|b| b.export(now, now_unix_ms))
            .unwrap_or_default()
    }

    /// Loads cooldown state saved by an earlier run.
    pub fn import_cooldowns(&self, saved: &[crate::cooldown::SavedCooldown], now_unix_ms: u64) {
        let now = self.clock.now();
        if let Ok(mut b) = self.book.lock() {
            b.import(saved, now, now_unix_ms);
        }
    }

    /// Active cooldowns, soonest expiry first (for `models status`).
    pub fn cooldowns(&self) -> Vec<(CooldownKey, Duration, ErrorClass)> {
        let now = self.clock.now();
        self.book.lock().map(|b| b.active(now)).unwrap_or_default()
    }

    /// Why `key` is kept out of this attempt, or `None` to try it. A
    /// cooldown that ended lets one half-open probe through; a local
    /// server cooling after "unreachable" is let through when it accepts a
    /// connection again (it may have been started since); `force` (the
    /// last candidate) tries through any cooldown but a disabled key
    /// (billing, revoked credentials).
    async fn keep_out(
        &self,
        key: &CooldownKey,
        local: bool,
        managed: bool,
        base: &str,
        reach: clawgate_core::net::Reach,
        force: bool,
    ) -> Option<String> {
        let admission = self.book.lock().ok()?.admit(key, self.clock.now());
        let (left, class) = match admission {
            Admission::Open | Admission::Probe => return None,
            Admission::Cooling(left, class) => (Some(left), class),
            Admission::ProbeInFlight(class) => (None, class),
        };
        // A local server that accepts connections again may have been
        // started since, and one clawgate starts itself (`localService`)
        // will be started by the gate: one request probes it (half-open)
        // at once.
        if class == ErrorClass::Unreachable
            && local
            && left.is_some()
            && (managed || crate::probe::reachable(base, LOCAL_PROBE, reach).await)
        {
            let now = self.clock.now();
            if let Ok(Admission::Probe) = self.book.lock().map(|mut b| b.reopen(key, now)) {
                return None;
            }
        }
        let disabled = matches!(class, ErrorClass::Billing | ErrorClass::AuthPermanent);
        if force && !disabled {
            return None;
        }
        Some(match left {
            Some(left) => format!(
                "cooling down after {} for {}s",
                class.as_str(),
                ceil_secs(left)
            ),
            None => format!(
                "recovering from {}: another request is probing it",
                class.as_str()
            ),
        })
    }

    /// Routes one turn.
    pub async fn run(&self, mut turn: Turn<'_>) -> Result<Routed, RunError> {
        let started = std::time::Instant::now();
        self.metrics.turns.fetch_add(1, Ordering::Relaxed);
        let selected = turn
            .chain
            .candidates
            .first()
            .map(|c| c.resolved.reference().to_string())
            .unwrap_or_default();
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut waited = Duration::ZERO;
        let mut noticed = false;
        let mut backoff = self.overload.initial_backoff;
        let mut waited_retry_after = false;
        let mut upstream_wait = Duration::ZERO;
        for round in 0..=self.overload.max_retries {
            let start = attempts.len();
            match self
                .pass(&mut turn, round, &mut attempts, &mut upstream_wait)
                .await
            {
                Ok(Some((mut stream, served))) => {
                    stream.upstream_wait += upstream_wait;
                    if !served.reference.eq_ignore_ascii_case(&selected) {
                        self.metrics.fallbacks.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(Routed {
                        stream,
                        started,
                        served: Arc::new(served),
                        selected,
                        attempts,
                        local: false,
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            let tried: Vec<&Attempt> = attempts[start..]
                .iter()
                .filter(|a| a.skipped.is_none())
                .collect();
            let all_overloaded = !tried.is_empty()
                && tried
                    .iter()
                    .all(|a| a.class == Some(ErrorClass::Overloaded));
            // FO-3: every candidate failed and one was rate limited with a
            // short Retry-After: wait for it once (at most 60 s) rather than
            // fail the turn.
            let short_wait = tried
                .iter()
                .filter(|a| a.class == Some(ErrorClass::RateLimit))
                .filter_map(|a| a.retry_after)
                .filter(|d| *d <= RETRY_AFTER_CAP)
                .min();
            if !all_overloaded {
                match short_wait {
                    Some(d) if !waited_retry_after => {
                        waited_retry_after = true;
                        tracing::info!(
                            wait_ms = d.as_millis() as u64,
                            "waiting for Retry-After before one more pass"
                        );
                        let t = std::time::Instant::now();
                        self.clock.sleep(d).await;
                        upstream_wait += t.elapsed();
                        continue;
                    }
                    _ => break,
                }
            }
            if round == self.overload.max_retries {
                break;
            }
            // FO-4: nothing has reached the client yet; wait and retry the chain.
            self.metrics
                .overload_retries
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                round,
                backoff_ms = backoff.as_millis() as u64,
                "every candidate overloaded; retrying the chain"
            );
            let t = std::time::Instant::now();
            self.clock.sleep(backoff).await;
            upstream_wait += t.elapsed();
            waited += backoff;
            if waited >= self.overload.notice_after && !noticed {
                noticed = true;
                if let Some(n) = turn.on_notice {
                    n(OVERLOAD_NOTICE);
                }
            }
            backoff = (backoff * 2).min(self.overload.max_backoff);
        }
        self.metrics.exhausted.fetch_add(1, Ordering::Relaxed);
        let soonest = self.soonest(&turn);
        Err(RunError::Exhausted(Exhausted {
            attempts,
            soonest_retry: soonest,
        }))
    }

    fn soonest(&self, turn: &Turn<'_>) -> Option<Duration> {
        let now = self.clock.now();
        let book = self.book.lock().ok()?;
        turn.chain
            .candidates
            .iter()
            .flat_map(|c| {
                let m = &c.resolved.model;
                let mut keys = vec![CooldownKey::Model {
                    provider: m.provider.clone(),
                    model: m.id.clone(),
                }];
                if let Some(p) = turn.registry.provider(&m.provider) {
                    keys.extend(credentials(turn.registry, p).into_iter().map(|cr| {
                        CooldownKey::Credential {
                            provider: p.id.clone(),
                            profile: cr.profile,
                        }
                    }));
                }
                keys
            })
            .filter_map(|k| book.remaining(&k, now).map(|r| r.0))
            .min()
    }

    /// One pass over the chain. `Ok(None)`: everything failed over.
    async fn pass(
        &self,
        turn: &mut Turn<'_>,
        round: u32,
        attempts: &mut Vec<Attempt>,
        upstream_wait: &mut Duration,
    ) -> Result<Option<(RoutedStream, Served)>, RunError> {
        for (i, cand) in turn.chain.candidates.iter().enumerate() {
            let model = &cand.resolved.model;
            let reference = cand.resolved.reference().to_string();
            let skip = |why: String, attempts: &mut Vec<Attempt>| {
                tracing::info!(candidate = %reference, reason = %why, "fallback: candidate skipped");
                attempts.push(Attempt {
                    reference: reference.clone(),
                    profile: None,
                    class: None,
                    status: None,
                    detail: String::new(),
                    skipped: Some(why),
                    round,
                    retry_after: None,
                });
            };
            let Some(provider) = turn.registry.provider(&model.provider) else {
                skip(format!("unknown provider {}", model.provider), attempts);
                continue;
            };
            if let Err(why) = turn.registry.allows(turn.agent, provider) {
                skip(why.to_string(), attempts);
                continue;
            }
            let model_key = CooldownKey::Model {
                provider: provider.id.clone(),
                model: model.id.clone(),
            };
            // A cooldown is a reason to prefer another candidate, never to
            // refuse when none is left: the last candidate is tried anyway.
            let last = i + 1 == turn.chain.candidates.len();
            let base = provider.base_url_for(model);
            let local = provider.endpoint.is_local();
            let managed = provider.local_service.is_some();
            let reach = reach_for(
                provider,
                base,
                turn.registry.local_only_key(turn.agent).is_some(),
            );
            if let Some(why) = self
                .keep_out(&model_key, local, managed, base, reach, last)
                .await
            {
                skip(why, attempts);
                continue;
            }
            // The gate (local server started, queue slot, swap group):
            // once per candidate; the permit travels with the answer.
            let mut permit = match &self.gate {
                Some(g) if g.guards(provider) => {
                    let t = std::time::Instant::now();
                    let entered = g
                        .enter(Entry {
                            registry: turn.registry,
                            provider,
                            reference: &reference,
                            may_spill: !last,
                            on_notice: turn.on_notice,
                        })
                        .await;
                    *upstream_wait += t.elapsed();
                    match entered {
                        Ok(p) => Some(p),
                        Err(Refusal::Spill(why)) => {
                            skip(why, attempts);
                            continue;
                        }
                        Err(Refusal::Failed { class, detail }) => {
                            let detail = turn.registry.redactor.redact(&detail).into_owned();
                            tracing::warn!(candidate = %reference, class = class.as_str(), detail = %detail, "fallback: candidate unavailable");
                            self.metrics.failure(class);
                            attempts.push(Attempt {
                                reference: reference.clone(),
                                profile: None,
                                class: Some(class),
                                status: None,
                                detail,
                                skipped: None,
                                round,
                                retry_after: None,
                            });
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let mut creds = credentials(turn.registry, provider);
            let stored = turn
                .pinned
                .iter()
                .find(|(p, _)| *p == provider.id)
                .map(|(_, profile)| profile.clone());
            let pinned = stored.or_else(|| {
                turn.session
                    .as_deref()
                    .and_then(|s| self.sticky.pinned(s, &provider.id))
            });
            if let Some(pinned) = pinned {
                creds.sort_by_key(|c| c.profile != pinned);
            }
            let n_creds = creds.len();
            let mut tried_cred = false;
            for (ci, cred) in creds.into_iter().enumerate() {
                let cred_key = CooldownKey::Credential {
                    provider: provider.id.clone(),
                    profile: cred.profile.clone(),
                };
                let mut attempt = Attempt {
                    reference: reference.clone(),
                    profile: Some(cred.profile.clone()),
                    class: None,
                    status: None,
                    detail: String::new(),
                    skipped: None,
                    round,
                    retry_after: None,
                };
                let force = last && !tried_cred && ci + 1 == n_creds;
                if let Some(why) = self
                    .keep_out(&cred_key, local, managed, base, reach, force)
                    .await
                {
                    attempt.skipped = Some(why);
                    attempts.push(attempt);
                    continue;
                }
                tried_cred = true;
                let ep = match endpoint(provider, model, cred.key.as_ref()) {
                    Ok(mut ep) => {
                        ep.local_only = turn.registry.local_only_key(turn.agent);
                        ep
                    }
                    Err(e) => {
                        attempt.class = Some(ErrorClass::Auth);
                        attempt.detail = e.to_string();
                        attempts.push(attempt);
                        continue;
                    }
                };
                // This candidate's model, token cap and `extra_body` are set
                // on the turn's request for the call and taken back after
                // it: a copy per attempt copied the whole history.
                let req = &mut turn.request;
                let model_before = std::mem::replace(&mut req.model, model.id.clone());
                let max_before = req.max_tokens;
                let capped = max_before
                    .filter(|m| *m > model.max_tokens)
                    .map(|m| (m, model.max_tokens));
                req.max_tokens = Some(
                    req.max_tokens
                        .unwrap_or(model.max_tokens)
                        .min(model.max_tokens),
                );
                let mut added = Vec::new();
                for (k, v) in extra_body(turn.registry, model) {
                    if !req.extra_body.contains_key(&k) {
                        req.extra_body.insert(k.clone(), v);
                        added.push(k);
                    }
                }
                self.metrics.attempts.fetch_add(1, Ordering::Relaxed);
                let t = std::time::Instant::now();
                let attempt_started = self.clock.now();
                let result = self
                    .send_waiting_for_load(&ep, &turn.request, &reference, turn.on_notice)
                    .await;
                let req = &mut turn.request;
                req.model = model_before;
                req.max_tokens = max_before;
                for k in added {
                    req.extra_body.remove(&k);
                }
                *upstream_wait += t.elapsed();
                match result {
                    Ok((inner, first)) => {
                        if let Ok(mut b) = self.book.lock() {
                            b.success(&cred_key);
                            b.success(&model_key);
                        }
                        if let Some(s) = &turn.session {
                            self.sticky.pin(s, &provider.id, &cred.profile);
                        }
                        let host = url_host(&ep.base_url);
                        tracing::info!(candidate = %reference, host = %host, "first output");
                        if let Some((asked, sent)) = capped {
                            tracing::info!(candidate = %reference, asked, sent, "max_tokens lowered to the model's maxTokens");
                        }
                        return Ok(Some((
                            RoutedStream {
                                first,
                                inner,
                                reference: reference.clone(),
                                usage: None,
                                observers: Vec::new(),
                                watched: None,
                                failure: None,
                                upstream_wait: Duration::ZERO,
                                redactor: turn.registry.redactor.clone(),
                                ended: false,
                                permit: permit.take().unwrap_or_default(),
                            },
                            Served {
                                reference: reference.clone(),
                                provider: provider.id.clone(),
                                model: model.id.clone(),
                                host,
                                api: ep.api.as_str().to_string(),
                                profile: cred.profile.clone(),
                                cost: model.cost,
                                capped,
                            },
                        )));
                    }
                    Err(error) => {
                        let error = redacted(&turn.registry.redactor, error);
                        let class = classify(&error);
                        self.metrics.failure(class);
                        attempt.class = Some(class);
                        attempt.status = error.status;
                        attempt.retry_after = error.retry_after;
                        attempt.detail = short(&error);
                        tracing::warn!(
                            candidate = %reference,
                            profile = %cred.profile,
                            class = class.as_str(),
                            status = error.status.unwrap_or(0),
                            "fallback: attempt failed"
                        );
                        attempts.push(attempt);
                        if !class.fails_over() {
                            return Err(RunError::Surfaced {
                                reference,
                                class,
                                error,
                                attempts: std::mem::take(attempts),
                            });
                        }
                        let key = match class {
                            ErrorClass::RateLimit | ErrorClass::ModelNotFound => model_key.clone(),
                            _ => cred_key.clone(),
                        };
                        if let Ok(mut b) = self.book.lock() {
                            b.failure(
                                key,
                                class,
                                error.retry_after,
                                attempt_started,
                                self.clock.now(),
                            );
                        }
                        if !class.rotates_credential() {
                            break;
                        }
                    }
                }
            }
        }
        Ok(None)
    }
}

impl Runner {
    /// Sends one attempt and waits for its first event. A server that
    /// answers "loading" (llama.cpp's 503 while the model loads) is asked
    /// again with backoff until the provider timeout, with a progress
    /// notice, instead of failing over or looking like a hang (LOC-2).
    async fn send_waiting_for_load(
        &self,
        ep: &clawgate_wire::Endpoint,
        req: &ChatRequest,
        reference: &str,
        on_notice: Option<&(dyn Fn(&str) + Sync)>,
    ) -> Result<(EventStream, Option<Event>), WireError> {
        let began = self.clock.now();
        let mut delay = LOAD_BACKOFF_START;
        let mut last_notice = Duration::ZERO;
        loop {
            let result = match self.client.send(ep, req).await {
                Ok(mut stream) => match stream.next().await {
                    Some(Ok(first)) => Ok((stream, Some(first))),
                    None => Ok((stream, None)),
                    Some(Err(e)) => Err(e),
                },
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.is_loading() => {
                    let waited = self.clock.now().saturating_sub(began);
                    if waited + delay >= ep.timeout {
                        // Still loading when the provider timeout ends: a
                        // timeout of this candidate (fail over), not an
                        // overload of the whole chain.
                        return Err(WireError::new(
                            clawgate_wire::WireErrorKind::Timeout(clawgate_wire::Phase::Headers),
                            format!(
                                "still loading after {} s (HTTP 503: {})",
                                waited.as_secs(),
                                e.message
                            ),
                        ));
                    }
                    if waited >= last_notice + LOAD_NOTICE_EVERY || last_notice.is_zero() {
                        last_notice = waited.max(Duration::from_millis(1));
                        let text =
                            format!("waiting for {reference} to load, {} s", waited.as_secs());
                        tracing::info!(candidate = %reference, waited_ms = waited.as_millis() as u64, "{text}");
                        if let Some(n) = on_notice {
                            n(&text);
                        }
                    }
                    self.clock.sleep(delay).await;
                    delay = (delay * 2).min(LOAD_BACKOFF_MAX);
                }
                other => return other,
            }
        }
    }
}

/// Backoff between "still loading" answers (LOC-2).
const LOAD_BACKOFF_START: Duration = Duration::from_millis(250);
const LOAD_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often a load that is still going is reported.
const LOAD_NOTICE_EVERY: Duration = Duration::from_secs(5);

/// The error with every secret of the snapshot masked in the texts an
/// upstream sent (it may quote the key back: "Incorrect API key provided:
/// sk-…"), before it is classified, logged or shown (SEC-3).
fn redacted(r: &clawgate_core::Redactor, mut e: WireError) -> WireError {
    if let std::borrow::Cow::Owned(m) = r.redact(&e.message) {
        e.message = m;
    }
    for field in [&mut e.error_type, &mut e.code] {
        if let Some(v) = field.as_deref() {
            if let std::borrow::Cow::Owned(m) = r.redact(v) {
                *field = Some(m);
            }
        }
    }
    e
}

/// Whole seconds, rounded up (a 0.2 s wait still reads "1s").
fn ceil_secs(d: Duration) -> u128 {
    d.as_millis().div_ceil(1000).max(1)
}

/// The error on one line, at most about 160 characters, cut at a word
/// boundary.
fn short(e: &WireError) -> String {
    let s = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if s.chars().count() <= 160 {
        return s;
    }
    let cut: String = s.chars().take(160).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > 80 => &cut[..i],
        _ => cut.as_str(),
    };
    format!("{}…", cut.trim_end_matches([',', ';', ':', '.']))
}

/// What a probe of `base` (the provider's or a model's own base URL) may
/// dial under the provider's outbound rules.
pub fn reach_for(
    provider: &clawgate_catalog::Provider,
    base: &str,
    local_only: bool,
) -> clawgate_core::net::Reach {
    let origin = match &provider.base {
        Some(b)
            if b.url.as_str().trim_end_matches('/') == base.trim_end_matches('/')
                || provider.base_url == base =>
        {
            b.origin.clone()
        }
        _ => clawgate_catalog::BaseUrl::parse(base)
            .map(|b| b.origin)
            .unwrap_or_default(),
    };
    provider.guard.reach(&origin, local_only)
}

fn url_host(base: &str) -> String {
    base.split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or(base)
        .to_string()
}

/// Sticky credential choice per (session, provider) (FO-3), bounded: at
/// most [`Sticky::MAX`] pins, idle ones expire after [`Sticky::TTL`].
#[derive(Default)]
struct Sticky {
    pins: Mutex<HashMap<(String, String), (String, std::time::Instant)>>,
}

impl Sticky {
    const MAX: usize = 10_000;
    const TTL: Duration = Duration::from_secs(3600);

    fn pinned(&self, session: &str, provider: &str) -> Option<String> {
        let m = self.pins.lock().ok()?;
        m.get(&(session.to_string(), provider.to_string()))
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(p, _)| p.clone())
    }

    fn pin(&self, session: &str, provider: &str, profile: &str) {
        let Ok(mut m) = self.pins.lock() else {
            return;
        };
        if m.len() >= Self::MAX {
            m.retain(|_, (_, at)| at.elapsed() < Self::TTL);
            if m.len() >= Self::MAX {
                // Still full of live pins: forget the oldest half.
                let mut ages: Vec<_> = m.values().map(|(_, at)| *at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                m.retain(|_, (_, at)| *at > cut);
            }
        }
        m.insert(
            (session.to_string(), provider.to_string()),
            (profile.to_string(), std::time::Instant::now()),
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pins.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::Sticky;

    #[test]
    fn sticky_pins_are_bounded() {
        let s = Sticky::default();
        for i in 0..(Sticky::MAX + 500) {
            s.pin(&format!("session-{i}"), "p", "p:default");
        }
        assert!(s.len() <= Sticky::MAX, "{} pins", s.len());
        let last = format!("session-{}", Sticky::MAX + 499);
        assert_eq!(s.pinned(&last, "p").as_deref(), Some("p:default"));
    }
}
