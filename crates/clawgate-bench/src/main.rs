//! The clawgate benchmark (issue 6): starts a mock OpenAI-compatible
//! upstream (`mock`), the release gateway, a bare nginx keepalive proxy and
//! the LiteLLM proxy in front of it (`systems`, each when available), runs
//! the same request mixes against DIRECT, NGINX, CLAWGATE and LITELLM from
//! an in-process load generator (`load`), and prints markdown tables.
//! Every target is a ratio from the same run.

mod load;
mod mock;
mod seed;
mod systems;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

use load::{load, open_streams, pct, Kind, Stats};
use mock::{start_mock, Mock};
use systems::{
    pin_self, rss_kb, start_gateway, start_litellm, start_nginx, System, LITELLM_KEY, PROXY_CPUS,
};

#[derive(Parser, Clone)]
struct Args {
    /// Fewer requests (about a minute in all).
    #[arg(long)]
    quick: bool,
    /// The gateway binary (build it with `cargo build --release -p clawgate`).
    #[arg(long, default_value = "target/release/clawgate")]
    gateway: PathBuf,
    /// Upstream latency before answering, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Chunks in a streamed answer.
    #[arg(long, default_value_t = 50)]
    chunks: usize,
    /// Pause between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Rounds per scenario: the systems take turns each round, so drift on
    /// the machine hits them alike; percentiles pool all rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Multiply every scenario's request count (default 1 with --quick,
    /// else 4).
    #[arg(long)]
    scale: Option<usize>,
    /// The LiteLLM proxy executable (bench/run.sh installs one).
    #[arg(long)]
    litellm: Option<PathBuf>,
    /// Seconds one system may spend on one round of a scenario.
    #[arg(long, default_value_t = 4.0)]
    budget_s: f64,
    /// Streams held open at once for the memory scenario (0 to skip).
    #[arg(long, default_value_t = 1000)]
    open_streams: usize,
    /// Worker threads for clawgate and worker processes for nginx: the two
    /// proxies get the same share of the machine.
    #[arg(long, default_value_t = 1)]
    workers: u16,
    /// Leave CPU placement to the kernel (by default the bench keeps CPU 0
    /// and the proxies get the rest).
    #[arg(long)]
    no_pin: bool,
    /// Start the mock, the gateway and nginx, print where they listen, and
    /// wait (for profiling by hand).
    #[arg(long)]
    serve: bool,
    /// Run only the scenarios whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Long sessions (10 000 stored entries each, about 2 MB) in the
    /// session database the gateway starts on; 50 make about 100 MB.
    #[arg(long, default_value_t = 50)]
    long_sessions: usize,
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn ratio(a: Duration, b: Option<Duration>) -> String {
    match b {
        Some(b) if !b.is_zero() => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".into(),
    }
}

struct Scenario {
    name: &'static str,
    kind: Kind,
    conc: usize,
    total: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let pin = pin_self(!args.no_pin);
    let _ = PROXY_CPUS.set(pin.clone());
    let dir = std::env::temp_dir().join(format!("clawgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (release_tx, release_rx) = tokio::sync::watch::channel(0u64);
    let mock = start_mock(Mock {
        latency: Duration::from_millis(args.latency_ms),
        chunks: args.chunks,
        delay: Duration::from_millis(args.chunk_delay_ms),
        release: release_rx,
    })
    .await?;
    // The gateway starts on a session database of long sessions (cold
    // start with it; one scenario continues them).
    let seeded = if args.long_sessions > 0 {
        let db = dir.join(".clawgate/state/sessions.sqlite3");
        let t = std::time::Instant::now();
        let size = seed::seed(&db, args.long_sessions).await?;
        println!(
            "session database: {} sessions of {} entries, {:.0} MB, written in {:.1} s",
            args.long_sessions,
            seed::ENTRIES,
            size as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
        Some(size)
    } else {
        None
    };
    let (gw, gw_url, cold) = start_gateway(&args.gateway, mock, &dir, args.workers).await?;
    let idle_rss = rss_kb(gw.child.id());
    let nginx = start_nginx(mock, &dir, args.workers);
    let mut notes = Vec::new();
    let litellm = match &args.litellm {
        Some(bin) => match start_litellm(bin, mock, &dir).await {
            Ok(l) => Some(l),
            Err(e) => {
                notes.push(format!("LiteLLM skipped: {e:#}"));
                None
            }
        },
        None => {
            notes.push("LiteLLM skipped: not installed (bench/run.sh installs it into a virtualenv; pass --litellm PATH)".into());
            None
        }
    };
    let mut systems = vec![System {
        name: "DIRECT",
        url: format!("http://{mock}"),
        key: None,
        pid: None,
    }];
    match &nginx {
        Some((p, u)) => systems.push(System {
            name: "NGINX",
            url: u.clone(),
            key: None,
            pid: Some(p.child.id()),
        }),
        None => notes.push(
            "nginx not found: install it (apt-get install nginx-light) for the reference proxy"
                .into(),
        ),
    }
    systems.push(System {
        name: "CLAWGATE",
        url: gw_url.clone(),
        key: None,
        pid: Some(gw.child.id()),
    });
    if let Some((p, u, _)) = &litellm {
        systems.push(System {
            name: "LITELLM",
            url: u.clone(),
            key: Some(LITELLM_KEY),
            pid: Some(p.child.id()),
        });
    }
    if args.serve {
        for sys in &systems {
            println!("{} {} pid {:?}", sys.name, sys.url, sys.pid);
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        drop(gw);
        drop(nginx);
        drop(litellm);
        return Ok(());
    }
    let scale = args.scale.unwrap_or(if args.quick { 1 } else { 4 });
    let c = args.chunks;
    let scenarios = [
        Scenario {
            name: "chat, non-streaming, c=1",
            kind: Kind::Chat { stream: false },
            conc: 1,
            total: 500 * scale,
        },
        Scenario {
            name: "chat, non-streaming, c=64",
            kind: Kind::Chat { stream: false },
            conc: 64,
            total: 3000 * scale,
        },
        Scenario {
            name: "chat, non-streaming, session, c=1",
            kind: Kind::ChatSession,
            conc: 1,
            total: 500 * scale,
        },
        Scenario {
            name: "chat, non-streaming, session, c=64",
            kind: Kind::ChatSession,
            conc: 64,
            total: 3000 * scale,
        },
        Scenario {
            name: "chat, non-streaming, session of 10 000 entries, c=1",
            kind: Kind::ChatLongSession {
                sessions: args.long_sessions,
            },
            conc: 1,
            total: 500 * scale,
        },
        Scenario {
            name: "chat, streaming, c=1",
            kind: Kind::Chat { stream: true },
            conc: 1,
            total: 200 * scale,
        },
        Scenario {
            name: "chat, streaming, c=64",
            kind: Kind::Chat { stream: true },
            conc: 64,
            total: 1000 * scale,
        },
        Scenario {
            name: "responses, streaming, c=1",
            kind: Kind::Responses,
            conc: 1,
            total: 200 * scale,
        },
        Scenario {
            name: "responses, streaming, c=64",
            kind: Kind::Responses,
            conc: 64,
            total: 1000 * scale,
        },
        Scenario {
            name: "messages in, chat out, streaming, c=1",
            kind: Kind::MessagesOverChat,
            conc: 1,
            total: 200 * scale,
        },
        Scenario {
            name: "messages in, chat out, streaming, c=64",
            kind: Kind::MessagesOverChat,
            conc: 64,
            total: 1000 * scale,
        },
    ];
    // A slow system (LiteLLM) gets a time budget per round instead of the
    // full count, so the whole run stays within minutes.
    let budget = Duration::from_secs_f64(args.budget_s);
    println!(
        "pinning: {}",
        match &pin {
            Some(c) => format!("load generator and mock on CPU 0, systems under test on CPU {c}"),
            None => "none".into(),
        }
    );
    println!("workers: {} (clawgate threads, nginx processes); streams: {c} chunks each; rounds: {}; overhead = system p50 - DIRECT p50 (streams: time to first chunk); gap = (total - first chunk) / chunks", args.workers, args.rounds.max(1));
    println!();
    println!("| scenario | system | p50 µs | p99 µs | TTFT p50 µs | gap/chunk µs | req/s | errors | overhead µs | vs nginx | vs LiteLLM |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    let mut clawgate_rows: Vec<(&str, Duration, f64)> = Vec::new();
    let mut long_rss = None;
    for sc in &scenarios {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !sc.name.contains(o.as_str()))
        {
            continue;
        }
        if matches!(sc.kind, Kind::ChatLongSession { sessions: 0 }) {
            continue;
        }
        let rss_before = rss_kb(gw.child.id());
        let stream = matches!(
            sc.kind,
            Kind::Chat { stream: true } | Kind::Responses | Kind::MessagesOverChat
        );
        // Warm pools and caches first.
        for sys in &systems {
            let warm = budget.min(Duration::from_secs(2));
            let _ = load(sys, sc.kind, sc.conc, sc.conc * 4, warm, c).await;
        }
        let mut rows: Vec<(&System, Stats)> =
            systems.iter().map(|s| (s, Stats::default())).collect();
        let rounds = args.rounds.max(1);
        for _ in 0..rounds {
            for (sys, row) in rows.iter_mut() {
                row.add(load(sys, sc.kind, sc.conc, sc.total / rounds, budget, c).await);
            }
        }
        let metric = |s: &Stats| pct(if stream { &s.ttft } else { &s.latencies }, 0.5);
        let direct = metric(&rows[0].1);
        let over = |name: &str| {
            rows.iter()
                .find(|r| r.0.name == name)
                .map(|r| metric(&r.1).saturating_sub(direct))
        };
        let (nginx_over, litellm_over) = (over("NGINX"), over("LITELLM"));
        let rps = |name: &str| rows.iter().find(|r| r.0.name == name).map(|r| r.1.rps());
        for (sys, s) in &rows {
            let o = metric(s).saturating_sub(direct);
            let (vs_n, vs_l) = if sys.name == "CLAWGATE" {
                (ratio(o, nginx_over), ratio(o, litellm_over))
            } else {
                ("-".into(), "-".into())
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {vs_n} | {vs_l} |",
                sc.name,
                sys.name,
                us(pct(&s.latencies, 0.5)),
                us(pct(&s.latencies, 0.99)),
                if stream {
                    us(pct(&s.ttft, 0.5))
                } else {
                    "-".into()
                },
                if stream {
                    us(pct(&s.gaps, 0.5))
                } else {
                    "-".into()
                },
                s.rps(),
                s.errors,
                if sys.name == "DIRECT" {
                    "-".into()
                } else {
                    us(o)
                },
            );
        }
        if let Some((_, st)) = rows.iter().find(|r| r.0.name == "CLAWGATE") {
            clawgate_rows.push((sc.name, pct(&st.latencies, 0.5), st.rps()));
        }
        if matches!(sc.kind, Kind::ChatLongSession { .. }) {
            long_rss = Some((rss_before, rss_kb(gw.child.id())));
        }
        if let (Some(cg), Some(n)) = (rps("CLAWGATE"), rps("NGINX")) {
            let l = rps("LITELLM")
                .map(|l| format!(", {:.1}x LiteLLM's", cg / l.max(1e-9)))
                .unwrap_or_default();
            summary.push(format!(
                "- {}: CLAWGATE throughput {:.2}x NGINX's{l}",
                sc.name,
                cg / n.max(1e-9)
            ));
        }
    }
    // Session mode against the stateless path of the same run (issue 11).
    let find = |name: &str| clawgate_rows.iter().find(|r| r.0 == name).copied();
    if let (Some(a), Some(b)) = (
        find("chat, non-streaming, c=1"),
        find("chat, non-streaming, session, c=1"),
    ) {
        summary.push(format!(
            "- session mode, c=1: CLAWGATE p50 {} µs vs {} µs stateless: {} µs added (target ≤ 300)",
            us(b.1),
            us(a.1),
            b.1.as_micros() as i128 - a.1.as_micros() as i128
        ));
    }
    if let (Some(a), Some(b)) = (
        find("chat, non-streaming, c=64"),
        find("chat, non-streaming, session, c=64"),
    ) {
        summary.push(format!(
            "- session mode, c=64 distinct sessions: CLAWGATE {:.0} req/s vs {:.0} stateless: {:.2}x (target ≥ 0.5x)",
            b.2,
            a.2,
            b.2 / a.2.max(1e-9)
        ));
    }
    if let (Some(a), Some(b)) = (
        find("chat, non-streaming, session, c=1"),
        find("chat, non-streaming, session of 10 000 entries, c=1"),
    ) {
        summary.push(format!(
            "- a session of 10 000 stored entries, c=1: CLAWGATE p50 {} µs vs {} µs for sessions of at most 20: {:.2}x (target ≤ 2x){}",
            us(b.1),
            us(a.1),
            b.1.as_secs_f64() / a.1.as_secs_f64().max(1e-9),
            long_rss
                .map(|(x, y)| format!(
                    "; RSS {:.1} MB before the scenario, {:.1} MB after",
                    x as f64 / 1024.0,
                    y as f64 / 1024.0
                ))
                .unwrap_or_default()
        ));
    }
    println!();
    for line in &summary {
        println!("{line}");
    }
    if args.open_streams > 0
        && args
            .only
            .as_ref()
            .is_none_or(|o| "open streams".contains(o.as_str()))
    {
        println!();
        println!(
            "| {} open streams | opened | RSS MB | time to open all, ms |",
            args.open_streams
        );
        println!("|---|---|---|---|");
        for sys in systems.iter().filter(|s| s.pid.is_some()) {
            let (ok, rss, took) = open_streams(sys, args.open_streams, &release_tx).await;
            println!(
                "| {} | {ok} | {:.1} | {} |",
                sys.name,
                rss as f64 / 1024.0,
                took.as_millis()
            );
        }
    }
    println!();
    println!(
        "- cold start, spawn to a ready /ready: CLAWGATE {} ms{}{}",
        cold.as_millis(),
        seeded
            .map(|b| format!(
                " (on a {:.0} MB session database; target ≤ 100 ms)",
                b as f64 / 1e6
            ))
            .unwrap_or_default(),
        litellm
            .as_ref()
            .map(|l| format!("; LiteLLM to /health/liveliness: {} ms", l.2.as_millis()))
            .unwrap_or_default()
    );
    println!(
        "- CLAWGATE RSS idle: {:.1} MB; after the runs: {:.1} MB",
        idle_rss as f64 / 1024.0,
        rss_kb(gw.child.id()) as f64 / 1024.0
    );
    for n in &notes {
        println!("- {n}");
    }
    drop(gw);
    drop(nginx);
    drop(litellm);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
