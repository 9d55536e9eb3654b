//! What every handler shares (an immutable config snapshot behind
//! `arc-swap`, the runner, auth, telemetry) and the config watcher that
//! swaps the snapshot (CFG-6).

use std::sync::Arc;
use std::time::Duration;

use clawgate_catalog::Registry;
use clawgate_router::Runner;

use crate::metrics;
use crate::GatewayAuth;

/// What every handler shares. axum clones the state for each request,
/// so it is one `Arc` (one atomic increment), not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    /// PERF-3: an immutable snapshot, read without a lock.
    registry: arc_swap::ArcSwap<Registry>,
    pub runner: Runner,
    pub auth: GatewayAuth,
    pub telemetry: Arc<metrics::Telemetry>,
    /// Where named sessions live; without one every request is stateless.
    pub store: Option<Arc<dyn clawgate_store::Store>>,
    /// One turn at a time per session.
    pub locks: clawgate_session::session::SessionLocks,
    /// Local servers and queues (LOC-1, LOC-6, LOC-7), when the runner
    /// goes through them.
    pub local: Option<Arc<clawgate_local::Supervisor>>,
    /// Keep-alive interval of a silent stream (LOC-2).
    keepalive: Duration,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(registry: Registry, runner: Runner, auth: GatewayAuth) -> Self {
        Self::with_store(registry, runner, auth, None)
    }

    /// With a session store: requests that name a session keep it there.
    pub fn with_store(
        registry: Registry,
        runner: Runner,
        auth: GatewayAuth,
        store: Option<Arc<dyn clawgate_store::Store>>,
    ) -> Self {
        Self::with_local(registry, runner, auth, store, None)
    }

    /// With the supervisor of local servers the runner's gate is (for
    /// `/metrics` and the `/v1/clawgate/local` endpoints).
    pub fn with_local(
        registry: Registry,
        runner: Runner,
        auth: GatewayAuth,
        store: Option<Arc<dyn clawgate_store::Store>>,
        local: Option<Arc<clawgate_local::Supervisor>>,
    ) -> Self {
        Self(Arc::new(Shared {
            registry: arc_swap::ArcSwap::from_pointee(registry),
            runner,
            auth,
            telemetry: Arc::new(metrics::Telemetry::default()),
            store,
            locks: Default::default(),
            local,
            keepalive: crate::sse::KEEPALIVE,
        }))
    }

    /// Another keep-alive interval for silent streams (tests); only
    /// before the state is shared.
    pub fn with_keepalive(mut self, every: Duration) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.0) {
            s.keepalive = every;
        }
        self
    }

    /// How often a silent stream carries a keep-alive.
    pub fn keepalive(&self) -> Duration {
        self.keepalive
    }

    /// Replaces the config snapshot; requests in flight keep theirs.
    pub fn swap_registry(&self, registry: Registry) {
        self.registry.store(Arc::new(registry));
    }

    /// The current config snapshot (an `Arc` clone; no lock is taken).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }
}

/// Watches the config file (CFG-6): when its modification time or size
/// changes, the file is loaded and fully checked; a valid file replaces the
/// snapshot, an invalid one is reported and the old snapshot stays.
pub fn watch_config(
    state: AppState,
    path: std::path::PathBuf,
    every: Duration,
    load: impl Fn(&std::path::Path) -> Result<Registry, String> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    // The file and every file it `$include`s (as of the last good load).
    let stamp = |p: &std::path::Path, includes: &[std::path::PathBuf]| {
        std::iter::once(p)
            .chain(includes.iter().map(|i| i.as_path()))
            .map(|f| {
                std::fs::metadata(f)
                    .ok()
                    .map(|m| (m.modified().ok(), m.len()))
            })
            .collect::<Vec<_>>()
    };
    // Taken now, not when the task first runs: a change made right after
    // start-up must not become the baseline.
    let mut last = stamp(&path, &state.registry().config.includes);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let now = stamp(&path, &state.registry().config.includes);
            if now == last {
                continue;
            }
            last = now;
            // An empty file is a write in progress (`cat > file` truncates
            // first), never a config that drops every provider.
            let empty = clawgate_config::read::read_regular(&path, 4_096)
                .map(|t| t.trim().is_empty())
                .unwrap_or(false);
            if empty {
                tracing::warn!(path = %path.display(), "config reload skipped: the file is empty (a write in progress?); keeping the previous config");
                continue;
            }
            match load(&path) {
                Ok(reg) => {
                    for what in
                        restart_only_changes(&state.registry().config.gateway, &reg.config.gateway)
                    {
                        tracing::warn!(path = %path.display(), "config reload: {what} changed; it takes effect only after a restart of the gateway");
                    }
                    if let Some(local) = &state.local {
                        local.retire_missing(&reg);
                    }
                    state.swap_registry(reg);
                    last = stamp(&path, &state.registry().config.includes);
                    // A new or moved local server: ask what it serves.
                    if let Some(local) = &state.local {
                        local.learn_all(&state.registry());
                    }
                    tracing::info!(path = %path.display(), "config reloaded");
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "config reload rejected; keeping the previous config")
                }
            }
        }
    })
}

/// Gateway settings a reload cannot apply (the listener and its auth are
/// fixed at start): the names of those that differ.
pub fn restart_only_changes(
    old: &clawgate_config::Gateway,
    new: &clawgate_config::Gateway,
) -> Vec<&'static str> {
    let secret = |s: &Option<clawgate_config::SecretValue>| {
        s.as_ref()
            .and_then(|v| v.resolved.as_ref())
            .map(|x| x.expose().to_string())
    };
    let mut out = Vec::new();
    if old.bind != new.bind {
        out.push("gateway.bind");
    }
    if old.port != new.port {
        out.push("gateway.port");
    }
    if old.auth_mode != new.auth_mode {
        out.push("gateway.auth.mode");
    }
    if secret(&old.token) != secret(&new.token) {
        out.push("gateway.auth.token");
    }
    if secret(&old.password) != secret(&new.password) {
        out.push("gateway.auth.password");
    }
    if old.allowed_hosts != new.allowed_hosts {
        out.push("gateway.http.allowedHosts");
    }
    out
}
