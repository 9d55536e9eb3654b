//! The reliability suite (issue 13), run on demand by
//! `scripts/reliability.sh`, never in CI:
//!
//! - `soak`: mixed streaming load on all three APIs for a while against an
//!   upstream that fails at random (500, 429, resets before the head,
//!   streams cut mid-answer, slow heads); every answer a client gets is a
//!   success or a classified error, and the gateway's file descriptors and
//!   RSS come back within 10 % of the warm baseline once the load stops.
//! - `crash`: SIGKILL of the gateway while session turns are being
//!   stored, a restart on the same database: it opens, passes SQLite's
//!   integrity check, and every turn a client saw completed is there.
//! - `slow`: clients that never read their streams and clients that trickle
//!   oversized bodies do not starve a normal client.
//!
//! Each mode prints its figures and exits 1 when a promise is broken.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// The gateway binary (build it with `cargo build --release -p clawgate`).
    #[arg(long, default_value = "target/release/clawgate")]
    gateway: PathBuf,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Mixed streaming load with random upstream faults.
    Soak {
        /// How long the load runs.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
    },
    /// SIGKILL during session load, restart, check the database.
    Crash {
        /// Kill-and-restart cycles.
        #[arg(long, default_value_t = 5)]
        cycles: usize,
    },
    /// Slow readers and trickled oversized bodies next to a normal client.
    Slow {
        /// Clients that never read their stream.
        #[arg(long, default_value_t = 200)]
        stalled: usize,
        /// Clients trickling an oversized body.
        #[arg(long, default_value_t = 50)]
        tricklers: usize,
    },
}

// ---------------------------------------------------------------- upstream

/// What the upstream does with the next request, drawn at random.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Good,
    Status500,
    Status429,
    ResetBeforeHead,
    CutMidStream,
    SlowHead,
}

struct Upstream {
    /// 0..100: share of requests that fail (soak); 0 for crash and slow.
    fault_pct: u64,
    seed: AtomicU64,
    chunk_delay: Duration,
}

impl Upstream {
    fn rand(&self) -> u64 {
        // xorshift: reproducible, no dependency.
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        x
    }

    fn fault(&self) -> Fault {
        let r = self.rand() % 100;
        if r >= self.fault_pct {
            return Fault::Good;
        }
        match self.rand() % 5 {
            0 => Fault::Status500,
            1 => Fault::Status429,
            2 => Fault::ResetBeforeHead,
            3 => Fault::CutMidStream,
            _ => Fault::SlowHead,
        }
    }
}

fn chunk(text: &str) -> Bytes {
    Bytes::from(format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"content": text}}]})
    ))
}

async fn chat(State(up): State<Arc<Upstream>>, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = req["stream"].as_bool().unwrap_or(false);
    let fault = up.fault();
    match fault {
        Fault::Status500 => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":{"message":"Internal server error","type":"server_error"}}"#,
            )
                .into_response()
        }
        Fault::Status429 => {
            return Response::builder()
                .status(429)
                .header("retry-after", "1")
                .body(Body::from(
                    r#"{"error":{"message":"Rate limit reached","type":"rate_limit_error"}}"#,
                ))
                .unwrap_or_default()
        }
        Fault::ResetBeforeHead => {
            // An error body stream before any byte: hyper resets.
            let s = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("reset"))
            });
            return Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(s))
                .unwrap_or_default();
        }
        Fault::SlowHead => tokio::time::sleep(Duration::from_millis(1500)).await,
        Fault::Good | Fault::CutMidStream => {}
    }
    // The user's marker comes back in the answer (the crash check).
    let marker = req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("ok")
        .to_string();
    if !stream {
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            json!({"id": "c", "object": "chat.completion", "model": "m",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo {marker}")}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
            .to_string(),
        )
            .into_response();
    }
    let cut = matches!(fault, Fault::CutMidStream);
    let delay = up.chunk_delay;
    let s = futures_util::stream::iter(0..12).then(move |i| {
        let marker = marker.clone();
        async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if cut && i == 5 {
            return Err(std::io::Error::other("cut"));
        }
        Ok::<Bytes, std::io::Error>(match i {
            11 => Bytes::from(format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}})
            )),
            0 => chunk(&format!("echo {marker} ")),
            _ => chunk("word "),
        })
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(s))
        .unwrap_or_default()
}

async fn models() -> impl IntoResponse {
    (
        [("content-type", "application/json")],
        r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#,
    )
}

async fn start_upstream(up: Upstream) -> Result<SocketAddr> {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .route("/v1/models", axum::routing::get(models))
        .with_state(Arc::new(up));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok(addr)
}

// ----------------------------------------------------------------- gateway

struct Gateway {
    child: Child,
    url: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, upstream: SocketAddr) -> Result<PathBuf> {
    let config = dir.join("clawgate.json5");
    std::fs::write(
        &config,
        format!(
            r#"{{ models: {{ mode: "replace", providers: {{
  a: {{ baseUrl: "http://{upstream}/v1", maxConcurrent: 0, timeoutSeconds: 20, models: [{{ id: "m", maxTokens: 256 }}] }},
  b: {{ baseUrl: "http://{upstream}/v1", maxConcurrent: 0, timeoutSeconds: 20, models: [{{ id: "m", maxTokens: 256 }}] }},
}} }},
  agents: {{ defaults: {{ model: {{ primary: "a/m", fallbacks: ["b/m"] }} }} }} }}"#
        ),
    )?;
    Ok(config)
}

async fn start_gateway(bin: &Path, dir: &Path, config: &Path) -> Result<Gateway> {
    let mut child = Command::new(bin)
        .args([
            "--config",
            config.to_str().unwrap_or_default(),
            "gateway",
            "--port",
            "0",
        ])
        .env("HOME", dir)
        .env("CLAWGATE_STATE_DIR", dir.join("state"))
        .env("CLAWGATE_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release -p clawgate)",
                bin.display()
            )
        })?;
    let stderr = child.stderr.take().context("no stderr")?;
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(stderr);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
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
    Ok(Gateway { child, url })
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// -------------------------------------------------------------------- soak

/// What one client call came back as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Outcome {
    Ok,
    /// A classified error (its code).
    Classified(String),
    /// An error without a class a client could act on.
    Unclassified(String),
}

/// The error code a body carries in any of the three shapes.
fn code_of(v: &Value) -> Option<String> {
    let e = v
        .get("error")
        .or_else(|| v.get("response").and_then(|r| r.get("error")))?;
    e.get("code")
        .and_then(|c| c.as_str())
        .or_else(|| e.get("type").and_then(|t| t.as_str()))
        .map(str::to_string)
}

fn judge_error(v: &Value) -> Outcome {
    match code_of(v) {
        Some(c) if !c.is_empty() && c != "unknown" => Outcome::Classified(c),
        other => Outcome::Unclassified(format!(
            "{other:?}: {}",
            v.to_string().chars().take(300).collect::<String>()
        )),
    }
}

async fn call(http: &reqwest::Client, url: &str, kind: usize, marker: &str) -> Outcome {
    let (path, body) = match kind % 5 {
        0 => (
            "/v1/chat/completions",
            json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": marker}]}),
        ),
        1 => (
            "/v1/chat/completions",
            json!({"model": "default", "messages": [{"role": "user", "content": marker}]}),
        ),
        2 => (
            "/v1/responses",
            json!({"model": "default", "stream": true, "input": marker}),
        ),
        3 => (
            "/v1/messages",
            json!({"model": "default", "stream": true, "max_tokens": 50, "messages": [{"role": "user", "content": marker}]}),
        ),
        _ => (
            "/v1/messages",
            json!({"model": "default", "max_tokens": 50, "messages": [{"role": "user", "content": marker}]}),
        ),
    };
    let r = match http
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Unclassified(format!("transport: {e}")),
    };
    let status = r.status().as_u16();
    let text = match r.text().await {
        Ok(t) => t,
        Err(e) => return Outcome::Unclassified(format!("body: {e}")),
    };
    if status != 200 {
        return match serde_json::from_str::<Value>(&text) {
            Ok(v) => judge_error(&v),
            Err(_) => Outcome::Unclassified(format!("HTTP {status}: {text}")),
        };
    }
    if !body["stream"].as_bool().unwrap_or(false) {
        return Outcome::Ok;
    }
    // A stream: its end, or the error event it carries.
    for frame in text.split("\n\n") {
        let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
        let event = frame.lines().find_map(|l| l.strip_prefix("event: "));
        if matches!(event, Some("error") | Some("response.failed")) {
            return data
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                .map(|v| judge_error(&v))
                .unwrap_or_else(|| Outcome::Unclassified(frame.to_string()));
        }
        if let Some(d) = data {
            if d != "[DONE]" {
                if let Ok(v) = serde_json::from_str::<Value>(d) {
                    if v.get("error").is_some() {
                        return judge_error(&v);
                    }
                }
            }
        }
    }
    let complete = text.contains("data: [DONE]")
        || text.contains("response.completed")
        || text.contains("message_stop");
    if complete {
        Outcome::Ok
    } else {
        Outcome::Unclassified(format!(
            "stream ended without its end: {}",
            text.chars().rev().take(200).collect::<String>()
        ))
    }
}

async fn soak(bin: &Path, seconds: u64, clients: usize) -> Result<bool> {
    let up = start_upstream(Upstream {
        fault_pct: 30,
        seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        chunk_delay: Duration::from_millis(5),
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), up)?;
    let gw = start_gateway(bin, dir.path(), &config).await?;
    let pid = gw.child.id();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(clients)
        .build()?;
    let counts: Arc<Mutex<HashMap<String, u64>>> = Default::default();
    let bad: Arc<Mutex<Vec<String>>> = Default::default();
    let run = |secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (http, url, counts, bad) =
                (http.clone(), gw.url.clone(), counts.clone(), bad.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = c;
                while Instant::now() < deadline {
                    let o = call(&http, &url, i, &format!("m{c}-{i}")).await;
                    let key = match &o {
                        Outcome::Ok => "ok".to_string(),
                        Outcome::Classified(c) => format!("error:{c}"),
                        Outcome::Unclassified(_) => "UNCLASSIFIED".to_string(),
                    };
                    *counts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(key)
                        .or_default() += 1;
                    if let Outcome::Unclassified(what) = o {
                        let mut b = bad.lock().unwrap_or_else(|e| e.into_inner());
                        if b.len() < 20 {
                            b.push(what);
                        }
                    }
                    i += clients;
                }
            }));
        }
        tasks
    };
    // Warm-up, then the baseline once idle.
    let warm = (seconds / 20).clamp(5, 30);
    for t in run(warm) {
        t.await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (fd0, rss0) = (fds(pid), rss_kb(pid));
    let t0 = Instant::now();
    for t in run(seconds) {
        t.await?;
    }
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (fd1, rss1) = (fds(pid), rss_kb(pid));
    let counts = counts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let total: u64 = counts.values().sum();
    println!(
        "soak: {total} calls in {:.0} s with {clients} clients, 30 % upstream faults",
        took.as_secs_f64() + warm as f64
    );
    let mut keys: Vec<_> = counts.iter().collect();
    keys.sort();
    for (k, v) in keys {
        println!("  {k:<32} {v}");
    }
    println!("  fds: warm {fd0}, after {fd1}; RSS: warm {rss0} kB, after {rss1} kB");
    let mut ok = true;
    let bad = bad.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !bad.is_empty() {
        ok = false;
        println!("FAIL: unclassified errors reached clients:");
        for b in bad {
            println!("  {b}");
        }
    }
    if fd1 as f64 > fd0 as f64 * 1.1 + 2.0 {
        ok = false;
        println!("FAIL: file descriptors grew from {fd0} to {fd1}");
    }
    if rss1 as f64 > rss0 as f64 * 1.1 {
        ok = false;
        println!("FAIL: RSS grew from {rss0} kB to {rss1} kB");
    }
    Ok(ok)
}

// ------------------------------------------------------------------- crash

async fn crash(bin: &Path, cycles: usize) -> Result<bool> {
    let up = start_upstream(Upstream {
        fault_pct: 0,
        seed: AtomicU64::new(1),
        chunk_delay: Duration::ZERO,
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), up)?;
    let db = dir.path().join("state").join("sessions.sqlite3");
    // Every turn a client saw complete: (session, marker).
    let done: Arc<Mutex<Vec<(String, String)>>> = Default::default();
    let seq = Arc::new(AtomicUsize::new(0));
    let mut ok = true;
    for cycle in 0..cycles {
        let gw = start_gateway(bin, dir.path(), &config).await?;
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for s in 0..8 {
            let (http, url, done, seq) = (http.clone(), gw.url.clone(), done.clone(), seq.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let key = format!("crash-{s}");
                    let marker = format!("turn-{n}");
                    let r = http
                        .post(format!("{url}/v1/chat/completions"))
                        .header("x-clawgate-session-key", &key)
                        .header("content-type", "application/json")
                        .body(json!({"model": "default", "messages": [{"role": "user", "content": marker}]}).to_string())
                        .send()
                        .await;
                    let Ok(r) = r else { break };
                    if r.status() == 200 && r.text().await.is_ok_and(|t| t.contains(&marker)) {
                        done.lock().unwrap_or_else(|e| e.into_inner()).push((key, marker));
                    }
                }
            }));
        }
        // Kill at a point that moves from cycle to cycle.
        tokio::time::sleep(Duration::from_millis(700 + 230 * cycle as u64)).await;
        let pid = gw.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        drop(gw);
        for t in tasks {
            let _ = t.await;
        }
        // The database: opens, passes the integrity check, holds every
        // completed turn.
        let conn = rusqlite::Connection::open(&db)?;
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        drop(conn);
        let gw = start_gateway(bin, dir.path(), &config).await?;
        drop(gw);
        let done_now = done.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut missing = Vec::new();
        let mut shown: HashMap<String, String> = HashMap::new();
        for (key, marker) in &done_now {
            let text = match shown.get(key) {
                Some(t) => t.clone(),
                None => {
                    let o = Command::new(bin)
                        .args([
                            "--config",
                            config.to_str().unwrap_or_default(),
                            "sessions",
                            "show",
                            key,
                        ])
                        .env("HOME", dir.path())
                        .env("CLAWGATE_STATE_DIR", dir.path().join("state"))
                        .output()?;
                    let t = String::from_utf8_lossy(&o.stdout).into_owned();
                    shown.insert(key.clone(), t.clone());
                    t
                }
            };
            if !text.contains(&format!("{marker}\n"))
                && !text.contains(&format!("{marker} "))
                && !text.contains(&format!("{marker}\""))
            {
                missing.push(marker.clone());
            }
        }
        println!(
            "crash cycle {}: integrity {check}; {} completed turns so far, {} missing after restart",
            cycle + 1,
            done_now.len(),
            missing.len()
        );
        if check != "ok" || !missing.is_empty() {
            ok = false;
            println!(
                "FAIL: {check}; missing {:?}",
                missing.iter().take(10).collect::<Vec<_>>()
            );
        }
    }
    Ok(ok)
}

// -------------------------------------------------------------------- slow

async fn timed_calls(http: &reqwest::Client, url: &str, n: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let o = call(http, url, i % 2, "latency").await;
        if o != Outcome::Ok {
            bail!("a normal call failed: {o:?}");
        }
        out.push(t.elapsed());
    }
    out.sort();
    Ok(out)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v.get(((v.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or_default()
}

async fn slow(bin: &Path, stalled: usize, tricklers: usize) -> Result<bool> {
    let up = start_upstream(Upstream {
        fault_pct: 0,
        seed: AtomicU64::new(1),
        chunk_delay: Duration::from_millis(1),
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), up)?;
    let gw = start_gateway(bin, dir.path(), &config).await?;
    let http = reqwest::Client::new();
    let base = timed_calls(&http, &gw.url, 200).await?;
    let addr = gw.url.trim_start_matches("http://").to_string();
    // Stalled readers: a large streamed answer nobody reads.
    let mut held = Vec::new();
    for _ in 0..stalled {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        let body = json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "x".repeat(2000)}]}).to_string();
        s.write_all(format!("POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes()).await?;
        held.push(s);
    }
    // Tricklers: an oversized body, a few bytes at a time.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut trickle = Vec::new();
    for _ in 0..tricklers {
        let (addr, stop) = (addr.clone(), stop.clone());
        trickle.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else { return };
            let _ = s.write_all(format!("POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 900000000\r\n\r\n").as_bytes()).await;
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(b"{\"aaaa\": ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = timed_calls(&http, &gw.url, 200).await;
    stop.store(true, Ordering::Relaxed);
    let mut stuck_reads = 0;
    for mut s in held {
        let mut buf = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(10), s.read(&mut buf))
            .await
            .is_err()
        {
            stuck_reads += 1;
        }
    }
    for t in trickle {
        let _ = t.await;
    }
    let loaded = loaded?;
    let (b50, b99) = (pct(&base, 0.5), pct(&base, 0.99));
    let (l50, l99) = (pct(&loaded, 0.5), pct(&loaded, 0.99));
    println!("slow: {stalled} stalled readers, {tricklers} tricklers of a 900 MB body");
    println!("  normal client alone:   p50 {:?}, p99 {:?}", b50, b99);
    println!("  next to slow clients:  p50 {:?}, p99 {:?}", l50, l99);
    println!("  stalled connections still unread at the end: {stuck_reads}");
    let limit = (b99 * 5).max(b99 + Duration::from_millis(50));
    if l99 > limit {
        println!("FAIL: p99 {l99:?} above {limit:?}");
        return Ok(false);
    }
    Ok(true)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let ok = match args.mode {
        Mode::Soak { seconds, clients } => soak(&args.gateway, seconds, clients).await?,
        Mode::Crash { cycles } => crash(&args.gateway, cycles).await?,
        Mode::Slow { stalled, tricklers } => slow(&args.gateway, stalled, tricklers).await?,
    };
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
