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
    /// Seconds between keep-alives on a silent stream.
    #[arg(long, value_name = "N", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    keepalive_seconds: u64,
}

pub fn run(ctx: &Ctx, args: GatewayArgs) -> CliResult {
    let snap = ctx.snapshot()?;
    let reg = with_discovered(ctx, snap.registry);
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
        let local = Arc::new(super::state::supervisor(client.clone()));
        // What a killed predecessor left running: taken back or stopped
        // before anything else starts a server.
        local.reclaim(&reg).await;
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
        let state = AppState::with_local(reg, runner, auth, store, Some(local.clone()))
            .with_keepalive(Duration::from_secs(args.keepalive_seconds));
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

/// LOC-5: with no provider configured, the local servers on the usual
/// ports (or `$CLAWGATE_DISCOVERY_PORTS`, comma-separated) are used as if
/// configured — the same provider entries `models discover --write` adds.
fn with_discovered(ctx: &Ctx, reg: clawgate_catalog::Registry) -> clawgate_catalog::Registry {
    if reg.providers.values().any(|p| p.configured) {
        return reg;
    }
    let ports: Vec<u16> = match std::env::var("CLAWGATE_DISCOVERY_PORTS") {
        Ok(list) => list
            .split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect(),
        Err(_) => clawgate_local::discover::PORTS
            .iter()
            .map(|(p, _)| *p)
            .collect(),
    };
    let found = match (
        Client::new(),
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    ) {
        (Ok(client), Ok(rt)) => rt.block_on(clawgate_local::discover::discover(
            &client,
            &ports,
            Duration::from_millis(700),
            None,
        )),
        _ => Vec::new(),
    };
    if found.is_empty() {
        return reg;
    }
    let file = ctx.file_for_writing().to_path_buf();
    let text = std::fs::read_to_string(&file).unwrap_or_else(|_| "{}".to_string());
    let built = clawgate_config::edit::Document::parse(&file, &text)
        .and_then(|mut doc| {
            use clawgate_config::path::Segment;
            for f in &found {
                let path = [
                    Segment::Key("models".into()),
                    Segment::Key("providers".into()),
                    Segment::Key(f.id.clone()),
                ];
                doc.set(&path, &f.provider_value())?;
            }
            Ok(doc.text())
        })
        .and_then(|t| clawgate_catalog::load_text(&file, &t, &Ctx::env));
    match built {
        Ok(snap) => {
            for f in &found {
                let models: Vec<&str> = f.info.models.iter().map(|m| m.id.as_str()).collect();
                eprintln!(
                    "no provider configured: using {} found at {} ({}); `clawgate models discover --write` keeps it",
                    f.id,
                    f.base_url,
                    models.join(", ")
                );
            }
            snap.registry
        }
        Err(e) => {
            tracing::warn!(error = %e, "discovered local servers could not be used");
            reg
        }
    }
}
