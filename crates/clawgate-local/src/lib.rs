//! Local model servers (LOC-1, LOC-6, LOC-7): the [`Supervisor`] is the
//! router's [`Gate`]. Before a request goes to a provider it waits for a
//! slot of that provider's queue, then — for a provider with a
//! `localService` — for its server: probed, reused when someone else runs
//! it (never adopted), otherwise spawned and waited for until its health
//! URL answers. Each request holds a lease; the server is stopped
//! `idleStopMs` after the last lease ends, when the gateway exits, or when
//! another member of its swap group needs the GPU.
//!
//! Start-up and swaps are serialized per group (a service without a
//! `group` is a group of one) through one FIFO lock; a request for the
//! running, not draining member takes the fast path and never touches it.

pub mod discover;
pub mod facts;
pub mod ledger;
mod process;
pub mod queue;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawgate_catalog::{Provider, Registry};
use clawgate_config::LocalService;
use clawgate_router::gate::{Entry, Gate, GateFuture, Permit, Refusal};
use clawgate_router::ErrorClass;
use clawgate_wire::introspect::Health;
use clawgate_wire::Client;

pub use queue::QueueStats;

use process::{Child, Tail};
use queue::Queue;

/// How long one health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A start that failed is answered from memory for this long, so a burst
/// of requests queued behind it does not spawn the server once each.
const FAILURE_MEMORY: Duration = Duration::from_secs(10);
/// How often a start or swap that is still going is reported.
const NOTICE_EVERY: Duration = Duration::from_secs(5);
/// How long a server someone else runs is trusted without a new probe:
/// short, so that when it goes away this provider's own `localService`
/// takes over within a second instead of requests failing into a
/// cooldown ladder (one health probe a second at most while it answers).
const EXTERNAL_RECHECK: Duration = Duration::from_secs(1);
/// What a start failure tells an API client about the server's output.
pub const OUTPUT_IN_LOG: &str = "; its last output is in the gateway's log";
/// Lines of child output quoted in a start failure (the log has more).
const FAILURE_TAIL: usize = 3;

/// Starts, shares and stops local model servers; see the module docs.
pub struct Supervisor {
    client: Client,
    inner: Mutex<Inner>,
    closing: AtomicBool,
    /// What each local server really serves (LOC-3).
    facts: Arc<facts::Facts>,
    /// Where started servers are written down, so that a successor can
    /// take back what a killed gateway left running.
    ledger: Option<Arc<ledger::Ledger>>,
}

#[derive(Default)]
struct Inner {
    services: HashMap<String, Arc<Service>>,
    groups: HashMap<String, Arc<Group>>,
    queues: HashMap<String, Arc<Queue>>,
}

/// Members of one swap group (or one service alone).
struct Group {
    name: Option<String>,
    /// The slow path — a start, a swap, an idle stop — one at a time, in
    /// arrival order.
    switch: tokio::sync::Mutex<()>,
    state: Mutex<GroupState>,
    /// Woken whenever a member's last lease ends.
    idle: tokio::sync::Notify,
}

#[derive(Default)]
struct GroupState {
    /// The member that runs (its service key).
    active: Option<String>,
    /// A swap waits for `active`'s requests to end: it takes no new ones.
    draining: bool,
}

enum Run {
    Stopped,
    /// Started by clawgate.
    Owned(Child),
    /// Answering before clawgate started anything: used, never stopped;
    /// probed again when the last probe is older than [`EXTERNAL_RECHECK`]
    /// (it may have been stopped by whoever runs it).
    External(Instant),
}

struct Service {
    key: String,
    provider: String,
    spec: LocalService,
    health_url: String,
    key_for_probe: Option<clawgate_core::Secret>,
    /// The shared client under the provider's outbound rules.
    probe: Client,
    group: Arc<Group>,
    leases: AtomicUsize,
    run: Mutex<Run>,
    tail: Arc<Mutex<Tail>>,
    /// Bumped whenever the last lease ends; an idle stop fires only if
    /// nothing happened since it was scheduled.
    idle_gen: AtomicU64,
    /// When the last lease ended (for `models running`).
    idle_since: Mutex<Option<Instant>>,
    last_failure: Mutex<Option<(Instant, String)>>,
    starts: AtomicU64,
}

/// A request's hold on a running service.
struct Lease(Arc<Service>);

impl Drop for Lease {
    fn drop(&mut self) {
        let svc = &self.0;
        if svc.leases.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if let Ok(mut s) = svc.idle_since.lock() {
            *s = Some(Instant::now());
        }
        let generation = svc.idle_gen.fetch_add(1, Ordering::AcqRel) + 1;
        svc.group.idle.notify_waiters();
        if svc.spec.idle_stop_ms == 0 || !svc.owned_alive() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let svc = svc.clone();
        rt.spawn(async move {
            tokio::time::sleep(Duration::from_millis(svc.spec.idle_stop_ms)).await;
            let _turn = svc.group.switch.lock().await;
            if svc.idle_gen.load(Ordering::Acquire) != generation {
                return;
            }
            {
                let Ok(mut st) = svc.group.state.lock() else {
                    return;
                };
                if svc.leases.load(Ordering::Acquire) != 0 {
                    return;
                }
                if st.active.as_deref() == Some(svc.key.as_str()) {
                    st.active = None;
                }
            }
            tracing::info!(provider = %svc.provider, idle_ms = svc.spec.idle_stop_ms, "local server idle: stopping it");
            svc.stop().await;
        });
    }
}

/// What `models running` shows of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    pub provider: String,
    pub group: Option<String>,
    /// `running` (started by clawgate), `external` (someone else's),
    /// `stopped`.
    pub state: &'static str,
    pub pid: Option<u32>,
    pub leases: usize,
    pub starts: u64,
    /// Time left before an idle stop, when one is pending.
    pub idle_stop_in: Option<Duration>,
    /// The last lines the server printed (redacted), for `models
    /// running` and `doctor`; never sent to an API client.
    pub last_output: Vec<String>,
}

impl Service {
    fn alive(&self) -> bool {
        match self.run.lock().as_deref() {
            Ok(Run::Owned(c)) => c.exited().is_none(),
            Ok(Run::External(at)) => at.elapsed() < EXTERNAL_RECHECK,
            _ => false,
        }
    }

    fn owned_alive(&self) -> bool {
        matches!(self.run.lock().as_deref(), Ok(Run::Owned(c)) if c.exited().is_none())
    }

    /// Takes no new requests, waits for those in flight, then stops.
    async fn drain_and_stop(&self) {
        let _turn = self.group.switch.lock().await;
        if let Ok(mut st) = self.group.state.lock() {
            if st.active.as_deref() == Some(self.key.as_str()) {
                st.active = None;
            }
        }
        loop {
            let notified = self.group.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.leases.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
        self.stop().await;
    }

    /// Stops the server if clawgate started it; someone else's is left
    /// alone (used, never adopted).
    async fn stop(&self) {
        let run = match self.run.lock() {
            Ok(mut r) if matches!(*r, Run::Owned(_)) => std::mem::replace(&mut *r, Run::Stopped),
            _ => return,
        };
        if let Run::Owned(child) = run {
            child.stop().await;
        }
    }

    /// The failure text an API client gets: what happened and where to
    /// look. The last lines the server printed (variable names, paths)
    /// go to the gateway's log only, never to a client.
    fn failure(&self, what: String) -> String {
        let tail = self
            .tail
            .lock()
            .map(|t| t.last(FAILURE_TAIL))
            .unwrap_or_default();
        if tail.is_empty() {
            return what;
        }
        tracing::warn!(provider = %self.provider, "{what}; last output:\n  {}", tail.join("\n  "));
        format!("{what}{OUTPUT_IN_LOG}")
    }

    fn view(&self) -> ServiceView {
        let (state, pid) = match self.run.lock().as_deref() {
            Ok(Run::Owned(c)) if c.exited().is_none() => ("running", Some(c.pid)),
            Ok(Run::External(_)) => ("external", None),
            _ => ("stopped", None),
        };
        let leases = self.leases.load(Ordering::Acquire);
        let idle_stop_in = (state == "running" && leases == 0 && self.spec.idle_stop_ms > 0)
            .then(|| {
                let since = self.idle_since.lock().ok().and_then(|s| *s)?;
                Some(Duration::from_millis(self.spec.idle_stop_ms).saturating_sub(since.elapsed()))
            })
            .flatten();
        ServiceView {
            provider: self.provider.clone(),
            group: self.group.name.clone(),
            state,
            pid,
            leases,
            starts: self.starts.load(Ordering::Relaxed),
            idle_stop_in,
            last_output: self.tail.lock().map(|t| t.last(10)).unwrap_or_default(),
        }
    }
}

/// The provider's key for its health probe — only when the health URL is
/// on the provider's own origin: a `healthUrl` elsewhere never gets it.
fn probe_key(p: &Provider, health_url: &str) -> Option<clawgate_core::Secret> {
    use clawgate_wire::introspect::origin;
    let same = matches!((origin(health_url), origin(&p.base_url)), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b));
    same.then(|| p.api_key.as_ref().and_then(|k| k.resolved.clone()))
        .flatten()
}

/// The service identity: provider id and everything that makes it a
/// different process (OpenClaw: "provider + command/args/env set").
fn service_key(p: &Provider, ls: &LocalService) -> String {
    let mut h = DefaultHasher::new();
    ls.command.hash(&mut h);
    ls.args.hash(&mut h);
    ls.cwd.hash(&mut h);
    for (k, v) in &ls.env {
        k.hash(&mut h);
        v.resolved
            .as_ref()
            .map(|s| s.expose().to_string())
            .hash(&mut h);
    }
    p.base_url.hash(&mut h);
    ls.health_url.hash(&mut h);
    ls.group.hash(&mut h);
    format!("{}#{:016x}", p.id, h.finish())
}

impl Supervisor {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            inner: Mutex::new(Inner::default()),
            closing: AtomicBool::new(false),
            facts: Arc::default(),
            ledger: None,
        }
    }

    /// Records every server it starts under `state_dir` (see
    /// [`ledger`]); without it a SIGKILLed gateway's servers are lost to
    /// its successor.
    pub fn with_ledger(mut self, state_dir: &std::path::Path) -> Self {
        match ledger::Ledger::open(state_dir) {
            Ok(l) => self.ledger = Some(Arc::new(l)),
            Err(e) => {
                tracing::warn!(dir = %state_dir.display(), "local servers are not recorded: {e}")
            }
        }
        self
    }

    /// At start: the servers a clawgate process that is gone (SIGKILL, a
    /// crash) left running. One whose service is configured unchanged is
    /// taken back — used, and stopped by the idle rule, `models unload`
    /// or exit as if this process had started it (one per swap group);
    /// any other is stopped, so two members of a swap group never run
    /// at once. Returns one line per server, for the log.
    pub async fn reclaim(&self, registry: &Registry) -> Vec<String> {
        let Some(ledger) = self.ledger.clone() else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        let mut stops = Vec::new();
        for rec in ledger.orphans() {
            let wanted = registry.providers.values().find_map(|p| {
                let ls = p.local_service.as_ref()?;
                (service_key(p, ls) == rec.service).then_some((p, ls))
            });
            let svc = wanted.and_then(|(p, ls)| self.service(p, ls));
            let taken = svc.as_ref().is_some_and(|svc| {
                let Ok(mut st) = svc.group.state.lock() else {
                    return false;
                };
                if st.active.is_some() {
                    return false;
                }
                let Ok(mut run) = svc.run.lock() else {
                    return false;
                };
                *run = Run::Owned(Child::reclaim(&rec, ledger.clone()));
                st.active = Some(svc.key.clone());
                true
            });
            match (taken, svc, wanted) {
                (true, Some(svc), Some((p, _))) => {
                    let line = format!(
                        "local server for {} (pid {}) left running by an earlier clawgate: taken back",
                        rec.provider, rec.pid
                    );
                    tracing::warn!("{line}");
                    lines.push(line);
                    self.facts.learn(&self.client, p).await;
                    // As if its last request just ended: the idle rule
                    // applies from now.
                    svc.leases.fetch_add(1, Ordering::AcqRel);
                    drop(Lease(svc));
                }
                (_, _, wanted) => {
                    let why = if wanted.is_some() {
                        "another member of its swap group runs"
                    } else {
                        "no longer configured so"
                    };
                    let line = format!(
                        "local server for {} (pid {}, {}) left running by an earlier clawgate, {why}: stopped",
                        rec.provider, rec.pid, rec.command
                    );
                    tracing::warn!("{line}");
                    lines.push(line);
                    let child = Child::reclaim(&rec, ledger.clone());
                    stops.push(async move { child.stop().await });
                }
            }
        }
        futures_util::future::join_all(stops).await;
        lines
    }

    fn service(&self, p: &Provider, ls: &LocalService) -> Option<Arc<Service>> {
        let key = service_key(p, ls);
        let mut inner = self.inner.lock().ok()?;
        if let Some(s) = inner.services.get(&key) {
            return Some(s.clone());
        }
        // Without a group, a provider's services form one: a reload that
        // changes its command swaps the old server for the new one.
        let group_key = match &ls.group {
            Some(g) => format!("group:{g}"),
            None => format!("provider:{}", p.id),
        };
        let group = inner
            .groups
            .entry(group_key)
            .or_insert_with(|| {
                Arc::new(Group {
                    name: ls.group.clone(),
                    switch: tokio::sync::Mutex::new(()),
                    state: Mutex::new(GroupState::default()),
                    idle: tokio::sync::Notify::new(),
                })
            })
            .clone();
        let svc = Arc::new(Service {
            key: key.clone(),
            provider: p.id.clone(),
            spec: ls.clone(),
            health_url: ls.health_url(&p.base_url),
            key_for_probe: probe_key(p, &ls.health_url(&p.base_url)),
            probe: self.client.scoped(p.guard.clone()),
            group,
            leases: AtomicUsize::new(0),
            run: Mutex::new(Run::Stopped),
            tail: Arc::new(Mutex::new(Tail::default())),
            idle_gen: AtomicU64::new(0),
            idle_since: Mutex::new(None),
            last_failure: Mutex::new(None),
            starts: AtomicU64::new(0),
        });
        inner.services.insert(key, svc.clone());
        Some(svc)
    }

    fn queue(&self, p: &Provider, limit: u32) -> Option<Arc<Queue>> {
        let mut inner = self.inner.lock().ok()?;
        match inner.queues.get(&p.id) {
            Some(q) if q.limit == limit => Some(q.clone()),
            // New, or its limit changed on a reload: requests in flight
            // keep their slots in the old queue.
            _ => {
                let q = Arc::new(Queue::new(limit));
                inner.queues.insert(p.id.clone(), q.clone());
                Some(q)
            }
        }
    }

    /// The running member's lease without any wait, if it can be had.
    fn try_fast(svc: &Arc<Service>) -> Option<Lease> {
        let st = svc.group.state.lock().ok()?;
        if st.active.as_deref() == Some(svc.key.as_str()) && !st.draining && svc.alive() {
            svc.leases.fetch_add(1, Ordering::AcqRel);
            return Some(Lease(svc.clone()));
        }
        None
    }

    fn by_key(&self, key: &str) -> Option<Arc<Service>> {
        self.inner.lock().ok()?.services.get(key).cloned()
    }

    /// A lease on `svc`: the fast path, or — one at a time per group —
    /// a swap away from another member and a start.
    async fn lease(
        &self,
        svc: &Arc<Service>,
        entry: &Entry<'_>,
        spill: Option<Duration>,
    ) -> Result<(Lease, Duration), Refusal> {
        if let Some(l) = Self::try_fast(svc) {
            return Ok((l, Duration::ZERO));
        }
        let arrived = Instant::now();
        let deadline = spill.map(|d| arrived + d);
        let spilled = |what: &str| {
            Refusal::Spill(format!(
                "waited {} ms for {what} (spillAfterMs)",
                arrived.elapsed().as_millis()
            ))
        };
        let turn = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), svc.group.switch.lock())
                .await
                .map_err(|_| spilled("its local server"))?,
            None => svc.group.switch.lock().await,
        };
        if self.closing.load(Ordering::Acquire) {
            return Err(Refusal::Failed {
                class: ErrorClass::Unreachable,
                detail: "the gateway is shutting down".into(),
            });
        }
        // A start that failed while this request waited for its turn:
        // the same answer, without spawning again.
        if let Some((at, msg)) = svc.last_failure.lock().ok().and_then(|f| f.clone()) {
            if at >= arrived || at.elapsed() < FAILURE_MEMORY {
                return Err(Refusal::Failed {
                    class: ErrorClass::Unreachable,
                    detail: msg,
                });
            }
        }
        if let Some(l) = Self::try_fast(svc) {
            return Ok((l, arrived.elapsed()));
        }
        // Another member of the group runs: let its requests finish
        // (taking no new ones), then stop it.
        let other = svc
            .group
            .state
            .lock()
            .ok()
            .and_then(|st| st.active.clone())
            .filter(|k| *k != svc.key)
            .and_then(|k| self.by_key(&k));
        if let Some(other) = other {
            if let Ok(mut st) = svc.group.state.lock() {
                st.draining = true;
            }
            let mut last_notice = Instant::now();
            loop {
                let notified = svc.group.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if other.leases.load(Ordering::Acquire) == 0 {
                    break;
                }
                let tick = tokio::time::sleep(NOTICE_EVERY);
                let gave_up = match deadline {
                    Some(d) => tokio::select! {
                        () = notified => false,
                        () = tick => false,
                        () = tokio::time::sleep_until(d.into()) => true,
                    },
                    None => tokio::select! {
                        () = notified => false,
                        () = tick => false,
                    },
                };
                if gave_up {
                    if let Ok(mut st) = svc.group.state.lock() {
                        st.draining = false;
                    }
                    return Err(spilled(&format!(
                        "{} to finish (swap group)",
                        other.provider
                    )));
                }
                if last_notice.elapsed() >= NOTICE_EVERY {
                    last_notice = Instant::now();
                    self.notice(
                        entry,
                        format!(
                            "waiting for {} to finish its requests before {} starts, {} s",
                            other.provider,
                            entry.reference,
                            arrived.elapsed().as_secs()
                        ),
                    );
                }
            }
            tracing::info!(from = %other.provider, to = %svc.provider, "swap group: stopping the running member");
            other.stop().await;
            if let Ok(mut st) = svc.group.state.lock() {
                st.active = None;
                st.draining = false;
            }
        }
        let started = self.start(svc, entry, arrived).await;
        match started {
            Ok(()) => {
                // What it really serves, before the next turn is measured
                // against it (bounded by facts::ASK_TIMEOUT).
                self.facts.learn(&self.client, entry.provider).await;
                if let Ok(mut f) = svc.last_failure.lock() {
                    *f = None;
                }
                // Active and leased before the next request gets its turn.
                if let Ok(mut st) = svc.group.state.lock() {
                    st.active = Some(svc.key.clone());
                }
                svc.leases.fetch_add(1, Ordering::AcqRel);
                drop(turn);
                Ok((Lease(svc.clone()), arrived.elapsed()))
            }
            Err(msg) => {
                tracing::warn!(provider = %svc.provider, "{msg}; last output:\n  {}", svc.tail.lock().map(|t| t.last(20).join("\n  ")).unwrap_or_default());
                if let Ok(mut f) = svc.last_failure.lock() {
                    *f = Some((Instant::now(), msg.clone()));
                }
                Err(Refusal::Failed {
                    class: ErrorClass::Unreachable,
                    detail: msg,
                })
            }
        }
    }

    fn notice(&self, entry: &Entry<'_>, text: String) {
        tracing::info!(candidate = %entry.reference, "{text}");
        if let Some(n) = entry.on_notice {
            n(&text);
        }
    }

    /// Makes `svc` answer: reuses a healthy server (ours or someone
    /// else's), else spawns one and waits until its health URL answers.
    async fn start(
        &self,
        svc: &Arc<Service>,
        entry: &Entry<'_>,
        arrived: Instant,
    ) -> Result<(), String> {
        let probe_key = svc.key_for_probe.as_ref();
        let mut health = svc
            .probe
            .health(&svc.health_url, probe_key, PROBE_TIMEOUT)
            .await;
        if health == Health::Ready {
            if !svc.owned_alive() {
                if let Ok(mut r) = svc.run.lock() {
                    *r = Run::External(Instant::now());
                }
                tracing::info!(provider = %svc.provider, url = %svc.health_url, "local server already running (not started by clawgate): using it, never stopping it");
            }
            return Ok(());
        }
        let spawn = !svc.owned_alive() && !matches!(health, Health::Loading(_));
        if spawn {
            // A server of ours that no longer answers is replaced.
            svc.stop().await;
            let child = Child::spawn(
                &svc.provider,
                &svc.key,
                &svc.spec,
                svc.tail.clone(),
                entry.registry.redactor.clone(),
                self.ledger.clone(),
            )?;
            svc.starts.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut r) = svc.run.lock() {
                *r = Run::Owned(child);
            }
        }
        let ready_within = Duration::from_millis(svc.spec.ready_timeout_ms);
        let began = Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut last_notice = Instant::now();
        loop {
            if let Ok(Run::Owned(c)) = svc.run.lock().as_deref() {
                if let Some(how) = c.exited() {
                    let msg = svc.failure(format!(
                        "local server for {} exited ({how}) before it was ready",
                        svc.provider
                    ));
                    return Err(msg);
                }
            }
            if health == Health::Ready {
                if !svc.owned_alive() {
                    // Someone else's server finished loading.
                    if let Ok(mut r) = svc.run.lock() {
                        *r = Run::External(Instant::now());
                    }
                }
                tracing::info!(provider = %svc.provider, ms = began.elapsed().as_millis() as u64, "local server ready");
                return Ok(());
            }
            if began.elapsed() >= ready_within {
                let why = match &health {
                    Health::Loading(m) => format!("still loading: {m}"),
                    Health::Down(m) => m.clone(),
                    Health::Ready => String::new(),
                };
                let msg = svc.failure(format!(
                    "local server for {} was not ready after {} ms (localService.readyTimeoutMs; {} answered: {why})",
                    svc.provider, svc.spec.ready_timeout_ms, svc.health_url
                ));
                svc.stop().await;
                return Err(msg);
            }
            if last_notice.elapsed() >= NOTICE_EVERY {
                last_notice = Instant::now();
                let verb = if matches!(health, Health::Loading(_)) {
                    "load"
                } else {
                    "start"
                };
                self.notice(
                    entry,
                    format!(
                        "waiting for {} to {verb}, {} s",
                        entry.reference,
                        arrived.elapsed().as_secs()
                    ),
                );
            }
            tokio::time::sleep(delay.min(ready_within.saturating_sub(began.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_millis(500));
            health = svc
                .probe
                .health(&svc.health_url, probe_key, PROBE_TIMEOUT)
                .await;
        }
    }

    /// Starts every `localService` with `warmUp: true` in the background.
    pub fn warm_up(self: &Arc<Self>, registry: Arc<Registry>) {
        for p in registry.providers.values() {
            let Some(ls) = p.local_service.as_ref().filter(|ls| ls.warm_up) else {
                continue;
            };
            let Some(svc) = self.service(p, ls) else {
                continue;
            };
            let me = self.clone();
            let reg = registry.clone();
            let reference = format!("{}/*", p.id);
            tokio::spawn(async move {
                let entry = Entry {
                    registry: &reg,
                    provider: match reg.providers.get(&svc.provider) {
                        Some(p) => p,
                        None => return,
                    },
                    reference: &reference,
                    may_spill: false,
                    on_notice: None,
                };
                match me.lease(&svc, &entry, None).await {
                    Ok(_lease) => {
                        tracing::info!(provider = %svc.provider, "warm-up: local server ready")
                    }
                    Err(e) => tracing::warn!(provider = %svc.provider, "warm-up failed: {e:?}"),
                }
            });
        }
    }

    /// Makes `provider`'s `localService` answer now, as its first request
    /// would (a probe of a server clawgate starts on demand). `Ok(Some(
    /// time to ready))` when this call started it, `Ok(None)` when it
    /// already answered. The idle rule applies afterwards, and
    /// [`Supervisor::shutdown`] stops it.
    pub async fn start_now(
        &self,
        registry: &Registry,
        provider: &str,
    ) -> Result<Option<Duration>, String> {
        let p = registry
            .provider(provider)
            .ok_or_else(|| format!("no provider {provider}"))?;
        let ls = p
            .local_service
            .as_ref()
            .ok_or_else(|| format!("{provider} has no localService"))?;
        let svc = self
            .service(p, ls)
            .ok_or_else(|| "the supervisor is unusable".to_string())?;
        let before = svc.starts.load(Ordering::Relaxed);
        let reference = format!("{}/*", p.id);
        let entry = Entry {
            registry,
            provider: p,
            reference: &reference,
            may_spill: false,
            on_notice: None,
        };
        match self.lease(&svc, &entry, None).await {
            Ok((lease, waited)) => {
                drop(lease);
                Ok((svc.starts.load(Ordering::Relaxed) > before).then_some(waited))
            }
            Err(Refusal::Failed { detail, .. } | Refusal::Spill(detail)) => Err(detail),
        }
    }

    /// Asks every local server (without a `localService`) what it serves,
    /// in the background (the gateway at start).
    pub fn learn_all(&self, registry: &Arc<Registry>) {
        self.facts.learn_all(&self.client, registry);
    }

    /// Every service known so far, for `models running`.
    pub fn running(&self) -> Vec<ServiceView> {
        let services: Vec<Arc<Service>> = self
            .inner
            .lock()
            .map(|i| i.services.values().cloned().collect())
            .unwrap_or_default();
        let mut out: Vec<ServiceView> = services.iter().map(|s| s.view()).collect();
        out.sort_by(|a, b| a.provider.cmp(&b.provider));
        out
    }

    /// Queue figures per provider, for `/metrics`.
    pub fn queues(&self) -> Vec<QueueStats> {
        let mut out: Vec<QueueStats> = self
            .inner
            .lock()
            .map(|i| i.queues.iter().map(|(p, q)| q.stats(p)).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.provider.cmp(&b.provider));
        out
    }

    /// Stops `provider`'s server once its requests end (`models unload`).
    /// Returns false when clawgate runs no server for it.
    pub async fn unload(&self, provider: &str) -> bool {
        let services: Vec<Arc<Service>> = self
            .inner
            .lock()
            .map(|i| {
                i.services
                    .values()
                    .filter(|s| s.provider.eq_ignore_ascii_case(provider))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut any = false;
        for svc in services {
            if svc.owned_alive() {
                any = true;
                svc.drain_and_stop().await;
            }
        }
        any
    }

    /// After a config reload: a server whose provider is gone, or whose
    /// process settings changed to another group, is stopped once its
    /// requests end (a changed command within the same provider swaps on
    /// the next request: a provider's services share a group).
    pub fn retire_missing(&self, registry: &Registry) {
        let keep: std::collections::HashSet<String> = registry
            .providers
            .values()
            .filter_map(|p| p.local_service.as_ref().map(|ls| service_key(p, ls)))
            .collect();
        let gone: Vec<Arc<Service>> = match self.inner.lock() {
            Ok(mut inner) => {
                let keys: Vec<String> = inner
                    .services
                    .keys()
                    .filter(|k| !keep.contains(*k))
                    .cloned()
                    .collect();
                keys.iter()
                    .filter_map(|k| inner.services.remove(k))
                    .collect()
            }
            Err(_) => return,
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for svc in gone {
            if svc.owned_alive() {
                tracing::info!(provider = %svc.provider, "config reload: this local server is no longer configured; stopping it once its requests end");
                rt.spawn(async move { svc.drain_and_stop().await });
            }
        }
    }

    /// Stops every server clawgate started (gateway exit, SIGTERM).
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::Release);
        let services: Vec<Arc<Service>> = self
            .inner
            .lock()
            .map(|i| i.services.values().cloned().collect())
            .unwrap_or_default();
        // Side by side: each stop is bounded by its own grace period.
        futures_util::future::join_all(services.iter().map(|s| s.stop())).await;
    }
}

/// Requests a server clawgate starts gets at once until it says how many
/// it runs in parallel (llama.cpp's and LM Studio's default slot count).
pub const LOCAL_MAX_CONCURRENT: u32 = 4;

impl Supervisor {
    /// The effective `maxConcurrent` (LOC-6): as written (`0` = no limit);
    /// else what the server runs at once — llama.cpp its slots, LM Studio
    /// and Ollama 4 (their default parallelism), a server clawgate starts
    /// 4 until it says; vLLM, SGLang, LiteLLM, an unrecognised server and
    /// hosted APIs batch or queue themselves: no limit.
    pub fn concurrency_limit(&self, p: &Provider) -> Option<u32> {
        use clawgate_wire::introspect::ServerKind;
        match p.max_concurrent {
            Some(0) => return None,
            Some(n) => return Some(n),
            None => {}
        }
        if p.hosted || !p.endpoint.is_local() {
            return None;
        }
        match self.facts.kind(&p.id) {
            Some((ServerKind::LlamaCpp, slots)) => Some(
                slots
                    .and_then(|s| u32::try_from(s).ok())
                    .unwrap_or(1)
                    .max(1),
            ),
            Some((ServerKind::LmStudio | ServerKind::Ollama, _)) => Some(LOCAL_MAX_CONCURRENT),
            Some((ServerKind::Vllm | ServerKind::OpenAi, _)) => None,
            None if p.local_service.is_some() => Some(LOCAL_MAX_CONCURRENT),
            None => None,
        }
    }
}

impl Gate for Supervisor {
    fn guards(&self, provider: &Provider) -> bool {
        provider.local_service.is_some() || self.concurrency_limit(provider).is_some()
    }

    fn served_context(&self, provider: &str, model: &str) -> Option<u64> {
        self.facts.served_context(&self.client, provider, model)
    }

    fn enter<'a>(&'a self, entry: Entry<'a>) -> GateFuture<'a> {
        Box::pin(async move {
            let p = entry.provider;
            let spill = if entry.may_spill {
                p.spill_after_ms.map(Duration::from_millis)
            } else {
                None
            };
            let began = Instant::now();
            // A server clawgate starts says how many requests it runs at
            // once only when it is up: its lease (start, then what it
            // serves) comes before its queue slot, so the first burst
            // queues on the slots it reports, not on the default.
            let lease = match p.local_service.as_ref().and_then(|ls| self.service(p, ls)) {
                Some(svc) => Some(self.lease(&svc, &entry, spill).await?),
                None => None,
            };
            let spill_left = spill.map(|d| d.saturating_sub(began.elapsed()));
            let slot = match self.concurrency_limit(p).and_then(|n| self.queue(p, n)) {
                Some(q) => match q.slot(spill_left).await {
                    Ok((permit, waited)) => Some((permit, waited)),
                    Err(queue::Wait::Spilled(w)) => {
                        return Err(Refusal::Spill(format!(
                            "queued {} ms behind {} requests in flight (maxConcurrent {}, spillAfterMs)",
                            w.as_millis(),
                            q.limit,
                            q.limit
                        )))
                    }
                },
                None => None,
            };
            let queued = slot.as_ref().map_or(Duration::ZERO, |(_, w)| *w);
            let starting = lease.as_ref().map_or(Duration::ZERO, |(_, w)| *w);
            Ok(Permit::new(
                (slot.map(|(p, _)| p), lease.map(|(l, _)| l)),
                queued,
                starting,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::probe_key;

    #[test]
    fn a_health_url_on_another_origin_never_gets_the_key() {
        let text = r#"{ models: { mode: "replace", providers: { p: { baseUrl: "http://127.0.0.1:8080/v1", apiKey: "sk-local-0123456789",
            localService: { command: "/bin/true" }, models: [{ id: "m" }] } } } }"#;
        let reg = clawgate_catalog::load_text(std::path::Path::new("t.json5"), text, &|_| None)
            .map(|s| s.registry)
            .unwrap_or_else(|e| panic!("{e}"));
        let p = reg.provider("p").unwrap_or_else(|| panic!("no provider"));
        assert!(probe_key(p, "http://127.0.0.1:8080/health").is_some());
        assert!(probe_key(p, "http://127.0.0.1:9999/health").is_none());
        assert!(probe_key(p, "http://evil.example/health").is_none());
    }
}
