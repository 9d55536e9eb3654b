//! `clawgate gateway`: runs the HTTP server (GW-1) until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use clawgate_api::AppState;
use clawgate_router::clock::TokioClock;
use clawgate_router::Runner;
use clawgate_wire::Client;

use super::{exit, CliError, CliResult, Ctx};

#[derive(Args)]
pub struct GatewayArgs {
    /// Address to listen on: loopback, lan or an IP address (default:
    /// gateway.bind, loopback).
    #[arg(long)]
    bind: Option<String>,
    /// Port (default: gateway.port, 18789; 0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
    /// On SIGINT/SIGTERM, how long in-flight answers may finish.
    #[arg(long, default_value_t = 10)]
    drain_seconds: u64,
    /// Worker threads (default: one per CPU core). One worker avoids
    /// cross-thread wake-ups and is the fastest on a small machine that
    /// also runs the model server or the clients.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

pub fn run(ctx: &Ctx, args: GatewayArgs) -> CliResult {
    let snap = ctx.snapshot()?;
    let reg = snap.registry;
    let (addr, auth) = clawgate_api::startup(&reg.config.gateway, args.bind.as_deref(), args.port)
        .map_err(|e| {
            let code = match e {
                clawgate_api::ServeError::BadBind(_) if args.bind.is_some() => exit::USAGE,
                _ => exit::INVALID_CONFIG,
            };
            CliError::msg(code, e.to_string())
        })?;
    let config_file = ctx.location.file().map(|f| f.to_path_buf());
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        rt.worker_threads(usize::from(n));
    }
    let rt = rt
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::FAILURE, e))?;
    rt.block_on(async move {
        let client = Client::new().map_err(|e| CliError::new(exit::FAILURE, e))?;
        // Local servers (localService) and per-backend queues: the gate
        // before every upstream call.
        let local = Arc::new(clawgate_local::Supervisor::new(client.clone()));
        let runner = Runner::new(client, Arc::new(TokioClock::default())).with_gate(local.clone());
        // Named sessions live in one SQLite file under the state directory
        // (created on first use; no server to start).
        let store = match super::state::sessions_file() {
            Some(path) => {
                let s = clawgate_store::SqliteStore::open(&path)
                    .map_err(|e| CliError::msg(exit::FAILURE, e.to_string()))?;
                Some(Arc::new(s) as Arc<dyn clawgate_store::Store>)
            }
            None => {
                tracing::warn!("no HOME or CLAWGATE_STATE_DIR: sessions are not kept");
                None
            }
        };
        let shared = Arc::new(reg.clone());
        local.warm_up(shared.clone());
        // What each local server really serves (context sizes), asked in
        // the background.
        local.learn_all(&shared);
        let state = AppState::with_local(reg, runner, auth, store, Some(local.clone()));
        if let Some(file) = config_file {
            clawgate_api::watch_config(state.clone(), file, Duration::from_secs(1), |p| {
                clawgate_catalog::load(Some(p), &Ctx::env)
                    .map(|s| {
                        for w in &s.warnings {
                            tracing::warn!("{w}");
                        }
                        s.registry
                    })
                    .map_err(|e| e.to_string())
            });
        }
        let served =
            clawgate_api::serve(addr, state, Duration::from_secs(args.drain_seconds), |at| {
                eprintln!("clawgate gateway listening on http://{at}");
            })
            .await;
        // No orphans: every server clawgate started stops with it.
        local.shutdown().await;
        served.map_err(|e| CliError::msg(exit::FAILURE, e.to_string()))
    })
}
