//! The clawgate benchmark (issue 6): starts a mock OpenAI-compatible
//! upstream, the release gateway in front of it, and (when installed) a
//! bare nginx keepalive proxy, then runs the same request mix against
//! DIRECT, NGINX and CLAWGATE from an in-process load generator, and prints
//! one markdown table. Every target is a ratio from the same run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use clap::Parser;
use serde_json::{json, Value};

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
    /// Run only the scenarios whose name contains this text.
    #[arg(long)]
    only: Option<String>,
}

#[derive(Clone)]
struct Mock {
    latency: Duration,
    chunks: usize,
    delay: Duration,
}

async fn mock_chat(State(m): State<Mock>, body: bytes::Bytes) -> Response {
    let stream = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("stream").and_then(Value::as_bool))
        .unwrap_or(false);
    if !m.latency.is_zero() {
        tokio::time::sleep(m.latency).await;
    }
    if !stream {
        return axum::Json(json!({
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello world"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        }))
        .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        for i in 0..m.chunks {
            if i > 0 && !m.delay.is_zero() {
                tokio::time::sleep(m.delay).await;
            }
            let f = format!(
                "data: {}\n\n",
                json!({"choices":[{"index":0,"delta":{"content":"tok "}}]})
            );
            if tx.send(Ok(bytes::Bytes::from(f))).await.is_err() {
                return;
            }
        }
        let end = format!(
            "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
            json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}),
            json!({"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":m.chunks}})
        );
        let _ = tx.send(Ok(bytes::Bytes::from(end))).await;
    });
    let body =
        axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn start_mock(m: Mock) -> Result<SocketAddr> {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(mock_chat))
        .with_state(m);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|t| {
        let _ = t.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Starts the gateway on the mock; returns it, its base URL and the time
/// from spawn to a ready `/ready`.
async fn start_gateway(
    bin: &PathBuf,
    upstream: SocketAddr,
    dir: &std::path::Path,
) -> Result<(Proc, String, Duration)> {
    let config = dir.join("clawgate.json5");
    std::fs::write(
        &config,
        format!(
            r#"{{ models: {{ providers: {{ mock: {{ baseUrl: "http://{upstream}/v1", models: [{{ id: "m", maxTokens: 4096 }}] }} }} }} }}"#
        ),
    )?;
    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .args([
            "--config",
            config.to_str().unwrap_or_default(),
            "gateway",
            "--port",
            "0",
        ])
        .env("HOME", dir)
        .env("CLAWGATE_LOG", "off")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with cargo build --release -p clawgate)",
                bin.display()
            )
        })?;
    let stderr = child.stderr.take().context("no stderr")?;
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(stderr).read_line(&mut line);
        line
    })
    .await?;
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    if !url.starts_with("http://") {
        bail!("gateway did not start: {line}");
    }
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{url}/ready")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("gateway not ready after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((Proc { child }, url, t0.elapsed()))
}

fn start_nginx(upstream: SocketAddr, dir: &std::path::Path) -> Option<(Proc, String)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let conf = dir.join("nginx.conf");
    let text = format!(
        "worker_processes 1; daemon off; pid {pid}; error_log {dir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {dir}; proxy_temp_path {dir};
  upstream mock {{ server {upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port}; tcp_nodelay on;
    location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }}
  }}
}}\n",
        pid = dir.join("nginx.pid").display(),
        dir = dir.display(),
    );
    std::fs::write(&conf, text).ok()?;
    let child = Command::new(nginx)
        .args(["-c", conf.to_str()?, "-p", dir.to_str()?])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((Proc { child }, format!("http://127.0.0.1:{port}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[derive(Default, Clone)]
struct Stats {
    latencies: Vec<Duration>,
    ttft: Vec<Duration>,
    errors: usize,
    wall: Duration,
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

/// `total` requests from `conc` workers; streams record time to first chunk.
async fn load(url: &str, stream: bool, conc: usize, total: usize) -> Stats {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(conc)
        .build()
        .unwrap_or_default();
    let body = json!({"model": "mock/m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, body, counter, url) = (
            client.clone(),
            body.clone(),
            counter.clone(),
            format!("{url}/v1/chat/completions"),
        );
        tasks.push(tokio::spawn(async move {
            let mut s = Stats::default();
            while counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let Ok(mut r) = r else {
                    s.errors += 1;
                    continue;
                };
                if !r.status().is_success() {
                    s.errors += 1;
                    let _ = r.bytes().await;
                    continue;
                }
                let mut first = None;
                loop {
                    match r.chunk().await {
                        Ok(Some(_)) => {
                            first.get_or_insert_with(|| t.elapsed());
                        }
                        Ok(None) => break,
                        Err(_) => {
                            s.errors += 1;
                            break;
                        }
                    }
                }
                s.latencies.push(t.elapsed());
                if let Some(f) = first {
                    s.ttft.push(f);
                }
            }
            s
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.latencies.extend(s.latencies);
            all.ttft.extend(s.ttft);
            all.errors += s.errors;
        }
    }
    all.wall = t0.elapsed();
    all
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("clawgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mock = start_mock(Mock {
        latency: Duration::from_millis(args.latency_ms),
        chunks: args.chunks,
        delay: Duration::from_millis(args.chunk_delay_ms),
    })
    .await?;
    let (gw, gw_url, cold) = start_gateway(&args.gateway, mock, &dir).await?;
    let idle_rss = rss_kb(gw.child.id());
    let nginx = start_nginx(mock, &dir);
    let mut systems: Vec<(&str, String)> = vec![("DIRECT", format!("http://{mock}"))];
    if let Some((_, u)) = &nginx {
        systems.push(("NGINX", u.clone()));
    }
    systems.push(("CLAWGATE", gw_url.clone()));
    let scale = args.scale.unwrap_or(if args.quick { 1 } else { 4 });
    let scenarios: [(&str, bool, usize, usize); 4] = [
        ("chat, non-streaming, c=1", false, 1, 500 * scale),
        ("chat, non-streaming, c=64", false, 64, 3000 * scale),
        ("chat, streaming 50 chunks, c=1", true, 1, 200 * scale),
        ("chat, streaming 50 chunks, c=64", true, 64, 1000 * scale),
    ];
    println!("| scenario | system | p50 µs | p99 µs | TTFT p50 µs | req/s | errors | overhead p50 µs | overhead vs nginx |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, stream, conc, total) in scenarios {
        if args.only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        // Warm pools and caches first.
        for (_, url) in &systems {
            let _ = load(url, stream, conc, conc * 4).await;
        }
        let mut rows: Vec<(&str, Stats)> =
            systems.iter().map(|(s, _)| (*s, Stats::default())).collect();
        let rounds = args.rounds.max(1);
        for _ in 0..rounds {
            for (i, (_, url)) in systems.iter().enumerate() {
                let s = load(url, stream, conc, total / rounds).await;
                let row = &mut rows[i].1;
                row.latencies.extend(s.latencies);
                row.ttft.extend(s.ttft);
                row.errors += s.errors;
                row.wall += s.wall;
            }
        }
        let metric = |s: &Stats| {
            if stream {
                pct(&s.ttft, 0.5)
            } else {
                pct(&s.latencies, 0.5)
            }
        };
        let direct = metric(&rows[0].1);
        let nginx_over = rows
            .iter()
            .find(|r| r.0 == "NGINX")
            .map(|r| metric(&r.1).saturating_sub(direct));
        for (sys, s) in &rows {
            let over = metric(s).saturating_sub(direct);
            let ratio = match (nginx_over, *sys) {
                (_, "DIRECT") | (_, "NGINX") | (None, _) => "-".to_string(),
                (Some(n), _) if n.is_zero() => "-".to_string(),
                (Some(n), _) => format!("{:.2}x", over.as_secs_f64() / n.as_secs_f64()),
            };
            println!(
                "| {name} | {sys} | {} | {} | {} | {:.0} | {} | {} | {ratio} |",
                us(pct(&s.latencies, 0.5)),
                us(pct(&s.latencies, 0.99)),
                if stream {
                    us(pct(&s.ttft, 0.5))
                } else {
                    "-".into()
                },
                s.latencies.len() as f64 / s.wall.as_secs_f64(),
                s.errors,
                if *sys == "DIRECT" {
                    "-".into()
                } else {
                    us(over)
                },
            );
        }
    }
    println!();
    println!(
        "- cold start, spawn to ready /ready: {} ms",
        cold.as_millis()
    );
    println!(
        "- gateway RSS idle: {} kB; after the runs: {} kB",
        idle_rss.unwrap_or(0),
        rss_kb(gw.child.id()).unwrap_or(0)
    );
    if nginx.is_none() {
        println!(
            "- nginx not found: install it (apt-get install nginx-light) for the reference proxy"
        );
    }
    drop(gw);
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
