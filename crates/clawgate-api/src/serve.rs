//! The listener: start-up checks (bind address, auth and its secret —
//! also run by `config validate`), a hyper HTTP/1 connection loop with
//! TCP_NODELAY and a header-read / keep-alive idle timeout, and a drain
//! bounded in time on SIGINT/SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clawgate_config::AuthMode;

use crate::{App, AppState, GatewayAuth};

/// Why the gateway will not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {0} without auth: set gateway.auth.mode to token or password (or bind to loopback)")]
    NoAuthOnPublicBind(SocketAddr),
    #[error("gateway.auth.mode is {mode} but no {mode} is configured{detail}")]
    MissingSecret {
        mode: &'static str,
        /// Which variable is unset, when the secret names one.
        detail: String,
    },
    #[error(
        "invalid bind address {0:?}: use loopback, lan, or an IP address (127.0.0.1, 0.0.0.0, ::1)"
    )]
    BadBind(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// `gateway.bind` as an address: `loopback` → 127.0.0.1, `lan` → 0.0.0.0,
/// or an IP address; anything else is an error (a typo must not silently
/// listen somewhere else).
pub fn bind_ip(bind: &str) -> Result<IpAddr, ServeError> {
    match bind.trim() {
        "loopback" | "localhost" => Ok(IpAddr::from([127, 0, 0, 1])),
        "lan" => Ok(IpAddr::from([0, 0, 0, 0])),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| ServeError::BadBind(bind.to_string())),
    }
}

/// Checks the auth rules of SEC-1 before binding.
pub fn check_auth(addr: SocketAddr, auth: &GatewayAuth) -> Result<(), ServeError> {
    let missing = |mode| ServeError::MissingSecret {
        mode,
        detail: String::new(),
    };
    match auth.mode {
        AuthMode::None if !addr.ip().is_loopback() => Err(ServeError::NoAuthOnPublicBind(addr)),
        AuthMode::Token if auth.secret.is_none() => Err(missing("token")),
        AuthMode::Password if auth.secret.is_none() => Err(missing("password")),
        _ => Ok(()),
    }
}

/// Everything `clawgate gateway` checks before it binds, from the config
/// and the command line's overrides: the address, the auth mode and its
/// secret (naming an unset `${VAR}`). `config validate` runs the same.
pub fn startup(
    g: &clawgate_config::Gateway,
    bind: Option<&str>,
    port: Option<u16>,
) -> Result<(SocketAddr, GatewayAuth), ServeError> {
    let addr = SocketAddr::new(bind_ip(bind.unwrap_or(&g.bind))?, port.unwrap_or(g.port));
    let auth = GatewayAuth::from_config(g);
    match check_auth(addr, &auth) {
        Err(ServeError::MissingSecret { mode, .. }) => {
            let written = match mode {
                "token" => g.token.as_ref(),
                _ => g.password.as_ref(),
            };
            let detail = match written {
                Some(sv) if !sv.missing.is_empty() => format!(
                    ": gateway.auth.{mode} uses {}, which is not set in the environment",
                    sv.missing
                        .iter()
                        .map(|v| format!("${{{v}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => format!(": set gateway.auth.{mode}"),
            };
            Err(ServeError::MissingSecret { mode, detail })
        }
        Err(e) => Err(e),
        Ok(()) => Ok((addr, auth)),
    }
}

/// How long a client may take to send a request's headers, and how long
/// a keep-alive connection may sit idle between requests: hyper runs the
/// same timer while it waits for the next request head. Half-sent
/// requests (slowloris) and forgotten connections are closed after it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a new connection may stay silent before its first byte: a
/// connection that sends nothing holds a descriptor for nothing.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Descriptors kept free below the process limit for everything that is
/// not a client connection (upstream connections, the store, logs).
const FD_RESERVE: u64 = 256;

/// Server limits; the defaults are what `clawgate gateway` uses.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// On SIGINT/SIGTERM, how long in-flight requests may finish.
    pub drain: Duration,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`FIRST_BYTE_TIMEOUT`].
    pub first_byte_timeout: Duration,
    /// Client connections open at once; past it a new one is closed at
    /// once (the accept loop, and the descriptors, stay healthy).
    pub max_connections: usize,
    /// Client connections open at once from one address.
    pub max_per_peer: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        let max = connection_budget();
        Self {
            drain: Duration::from_secs(10),
            header_read_timeout: HEADER_READ_TIMEOUT,
            first_byte_timeout: FIRST_BYTE_TIMEOUT,
            max_connections: max,
            max_per_peer: (max / 2).max(1),
        }
    }
}

/// Raises the soft descriptor limit to the hard one (once per process)
/// and returns how many client connections fit below it with the
/// reserve.
pub fn connection_budget() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    static RAISED: std::sync::Once = std::sync::Once::new();
    RAISED.call_once(|| {
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            if soft < hard {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            }
        }
    });
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1_024, |(s, _)| s);
    usize::try_from(soft.saturating_sub(FD_RESERVE).max(64)).unwrap_or(usize::MAX)
}

/// Open client connections, in total and per address; a [`Slot`] holds
/// one until the connection ends.
#[derive(Default)]
struct Conns {
    total: std::sync::atomic::AtomicUsize,
    per_peer: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

struct Slot {
    conns: std::sync::Arc<Conns>,
    peer: std::net::IpAddr,
}

impl Conns {
    fn take(
        self: &std::sync::Arc<Self>,
        peer: std::net::IpAddr,
        opts: &ServeOptions,
    ) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        let mut map = self
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.total.load(Ordering::Relaxed) >= opts.max_connections {
            return None;
        }
        let n = map.entry(peer).or_insert(0);
        if *n >= opts.max_per_peer {
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            conns: self.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .conns
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.peer);
            }
        }
        self.conns
            .total
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A warning said at most once per interval, with how many were held back.
struct Throttled {
    last: Option<std::time::Instant>,
    held: u64,
}

impl Throttled {
    fn warn(&mut self, what: &str, detail: &dyn std::fmt::Display) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            self.held += 1;
            return;
        }
        tracing::warn!(error = %detail, held_back = self.held, "{what}");
        self.last = Some(now);
        self.held = 0;
    }
}

/// Binds and serves until SIGINT/SIGTERM, then drains in-flight requests
/// for up to `drain`.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    drain: Duration,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let opts = ServeOptions {
        drain,
        ..ServeOptions::default()
    };
    check_auth(addr, &state.auth)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    on_ready(listener.local_addr()?);
    serve_on(listener, state, opts, shutdown_signal()).await
}

/// Serves on a bound listener until `stop` completes, then drains: every
/// connection finishes its request in flight (idle ones close at once)
/// for up to `opts.drain`, after which the rest are dropped.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    opts: ServeOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = App::new(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    tokio::pin!(stop);
    let conns = std::sync::Arc::new(Conns::default());
    let mut accept_failed = Throttled {
        last: None,
        held: 0,
    };
    let mut refused = Throttled {
        last: None,
        held: 0,
    };
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or a connection reset while
                    // queued: keep serving the connections we have.
                    accept_failed.warn("accept failed", &e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Over the limits the connection is closed at once: its
        // descriptor comes back, and the ones in use keep working.
        let Some(slot) = conns.take(peer.ip(), &opts) else {
            refused.warn(
                "connection limit reached; new connections are closed",
                &format!(
                    "{} open (limit {}, {} per address)",
                    conns.total.load(std::sync::atomic::Ordering::Relaxed),
                    opts.max_connections,
                    opts.max_per_peer
                ),
            );
            drop(tcp);
            continue;
        };
        // PERF-2: no Nagle delay on small responses and stream chunks.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }
            });
        let first_byte = opts.first_byte_timeout;
        let watcher = graceful.watcher();
        let http = http.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // A connection that sends nothing is closed sooner than one
            // that started a request (the header timeout).
            let mut probe = [0u8; 1];
            match tokio::time::timeout(first_byte, tcp.peek(&mut probe)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let conn = watcher.watch(http.serve_connection(TokioIo::new(tcp), service));
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(opts.drain) => {
            tracing::warn!("drain bound reached; closing remaining connections");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
