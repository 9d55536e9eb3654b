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

/// Server limits; the defaults are what `clawgate gateway` uses.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// On SIGINT/SIGTERM, how long in-flight requests may finish.
    pub drain: Duration,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            drain: Duration::from_secs(10),
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
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
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or a connection reset while
                    // queued: keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
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
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
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
