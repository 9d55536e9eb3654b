//! What the gateway's integration tests share: a gateway over real
//! sockets on 127.0.0.1, served the way `clawgate gateway` serves
//! (`serve_on`), and the client and auth helpers.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use clawgate_api::{serve_on, AppState, GatewayAuth, ServeOptions};
use clawgate_catalog::load_text;
use clawgate_config::AuthMode;
use clawgate_core::Secret;
use clawgate_router::clock::TokioClock;
use clawgate_router::Runner;
use clawgate_wire::Client;

pub const TOKEN: &str = "gw-test-token-0123456789";

pub struct Gw {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gw {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Serves `state` on an ephemeral 127.0.0.1 port until dropped.
pub async fn serve_state(state: AppState, opts: ServeOptions) -> Gw {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        serve_on(listener, state, opts, std::future::pending())
            .await
            .unwrap();
    });
    Gw { addr, task }
}

/// A runner on the real clock with a fresh client.
pub fn runner() -> Runner {
    Runner::new(Client::new().unwrap(), Arc::new(TokioClock::default()))
}

/// A gateway over `config` (JSON5 text) with `runner`.
pub async fn gateway_on(config: &str, auth: GatewayAuth, runner: Runner, opts: ServeOptions) -> Gw {
    let reg = load_text(Path::new("t.json5"), config, &|_| None)
        .unwrap()
        .registry;
    serve_state(AppState::new(reg, runner, auth), opts).await
}

/// A gateway over `config` keeping named sessions in `store`.
pub async fn gateway_with_store(
    config: &str,
    auth: GatewayAuth,
    store: Arc<dyn clawgate_store::Store>,
) -> Gw {
    let reg = load_text(Path::new("t.json5"), config, &|_| None)
        .unwrap()
        .registry;
    serve_state(
        AppState::with_store(reg, runner(), auth, Some(store)),
        ServeOptions::default(),
    )
    .await
}

pub async fn gateway_with(config: &str, auth: GatewayAuth, opts: ServeOptions) -> Gw {
    gateway_on(config, auth, runner(), opts).await
}

pub async fn gateway(config: &str, auth: GatewayAuth) -> Gw {
    gateway_with(config, auth, ServeOptions::default()).await
}

pub fn no_auth() -> GatewayAuth {
    GatewayAuth::new(AuthMode::None, None)
}

pub fn token_auth() -> GatewayAuth {
    GatewayAuth::new(AuthMode::Token, Some(Secret::new(TOKEN)))
}

/// `GET /metrics` as text.
#[allow(dead_code)]
pub async fn metrics(gw: &Gw) -> String {
    http()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}
