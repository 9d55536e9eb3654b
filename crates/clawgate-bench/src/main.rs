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
}

#[derive(Clone)]
struct Mock {
    latency: Duration,
    chunks: usize,
    delay: Duration,
    /// Streams asked to "hold-open" send one chunk, then wait for this to
    /// change (the open-streams scenario).
    release: tokio::sync::watch::Receiver<u64>,
}

/// A streamed body fed by `frames`, one write per frame.
fn sse_body(
    frames: impl FnOnce(tokio::sync::mpsc::Sender<bytes::Bytes>) -> tokio::task::JoinHandle<()>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    frames(tx);
    let body =
        axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
        }));
    ([("content-type", "text/event-stream")], body).into_response()
}

/// What a request asks of the mock: streamed or not, held open or not.
fn ask(body: &[u8]) -> (bool, bool) {
    let v = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let hold = body.windows(9).any(|w| w == b"hold-open");
    (stream, hold)
}

impl Mock {
    async fn pause(&self, i: usize, hold: bool, release: &mut tokio::sync::watch::Receiver<u64>) {
        if i == 1 && hold {
            let _ = tokio::time::timeout(Duration::from_secs(120), release.changed()).await;
        }
        if i > 0 && !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

async fn mock_chat(State(m): State<Mock>, body: bytes::Bytes) -> Response {
    let (stream, hold) = ask(&body);
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
    sse_body(move |tx| {
        tokio::spawn(async move {
            let mut release = m.release.clone();
            release.borrow_and_update();
            for i in 0..m.chunks {
                m.pause(i, hold, &mut release).await;
                let f = format!(
                    "data: {}\n\n",
                    json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                           "choices":[{"index":0,"delta":{"content":"tok "},"finish_reason": null}]})
                );
                if tx.send(bytes::Bytes::from(f)).await.is_err() {
                    return;
                }
            }
            let end = format!(
                "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
                json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                       "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}),
                json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                       "choices":[],"usage":{"prompt_tokens":5,"completion_tokens":m.chunks,"total_tokens":5+m.chunks}})
            );
            let _ = tx.send(bytes::Bytes::from(end)).await;
        })
    })
}

async fn mock_responses(State(m): State<Mock>, body: bytes::Bytes) -> Response {
    let (stream, hold) = ask(&body);
    if !m.latency.is_zero() {
        tokio::time::sleep(m.latency).await;
    }
    let usage = json!({"input_tokens": 5, "output_tokens": m.chunks, "total_tokens": 5 + m.chunks});
    let done = move |text: String| {
        json!({"id": "resp_x", "object": "response", "created_at": 0, "status": "completed", "model": "m",
               "output": [{"type": "message", "id": "msg_x", "status": "completed", "role": "assistant",
                           "content": [{"type": "output_text", "text": text, "annotations": []}]}],
               "usage": usage})
    };
    if !stream {
        return axum::Json(done("hello world".into())).into_response();
    }
    let frame = |n: &str, v: Value| format!("event: {n}\ndata: {v}\n\n");
    sse_body(move |tx| {
        tokio::spawn(async move {
            let mut release = m.release.clone();
            release.borrow_and_update();
            let shell = json!({"id": "resp_x", "object": "response", "created_at": 0, "status": "in_progress", "model": "m", "output": []});
            let head = frame(
                "response.created",
                json!({"type": "response.created", "sequence_number": 0, "response": shell}),
            ) + &frame(
                "response.output_item.added",
                json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
                    "item": {"type": "message", "id": "msg_x", "status": "in_progress", "role": "assistant", "content": []}}),
            );
            if tx.send(bytes::Bytes::from(head)).await.is_err() {
                return;
            }
            for i in 0..m.chunks {
                m.pause(i, hold, &mut release).await;
                let f = frame(
                    "response.output_text.delta",
                    json!({"type": "response.output_text.delta", "sequence_number": i + 2,
                    "item_id": "msg_x", "output_index": 0, "content_index": 0, "delta": "tok "}),
                );
                if tx.send(bytes::Bytes::from(f)).await.is_err() {
                    return;
                }
            }
            let end = frame(
                "response.completed",
                json!({"type": "response.completed", "sequence_number": m.chunks + 2,
                "response": done("tok ".repeat(m.chunks))}),
            );
            let _ = tx.send(bytes::Bytes::from(end)).await;
        })
    })
}

async fn start_mock(m: Mock) -> Result<SocketAddr> {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(mock_chat))
        .route("/v1/responses", axum::routing::post(mock_responses))
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
    /// SIGTERM first so a server stops its own children (uvicorn
    /// workers), then SIGKILL after three seconds.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        for _ in 0..300 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// RSS of a process and all its descendants (nginx workers, uvicorn).
fn tree_rss_kb(pid: u32) -> u64 {
    let mut total = rss_kb(pid);
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                total += tree_rss_kb(k);
            }
        }
    }
    total
}

/// Polls `url` until it answers 2xx; the time since `t0`.
async fn wait_ready(url: &str, t0: Instant, limit: Duration) -> Result<Duration> {
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(t0.elapsed());
            }
        }
        if t0.elapsed() > limit {
            bail!("{url} not ready after {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Starts the gateway on the mock; returns it, its base URL and the time
/// from spawn to a ready `/ready`.
async fn start_gateway(
    bin: &std::path::Path,
    upstream: SocketAddr,
    dir: &std::path::Path,
    workers: u16,
) -> Result<(Proc, String, Duration)> {
    let config = dir.join("clawgate.json5");
    std::fs::write(
        &config,
        format!(
            r#"{{ models: {{ providers: {{
  mock: {{ baseUrl: "http://{upstream}/v1", models: [{{ id: "m", maxTokens: 4096 }}] }},
  mockr: {{ baseUrl: "http://{upstream}/v1", api: "openai-responses", models: [{{ id: "m", maxTokens: 4096 }}] }},
}} }} }}"#
        ),
    )?;
    let t0 = Instant::now();
    let mut child = pinned(bin.as_os_str())
        .args([
            "--config",
            config.to_str().unwrap_or_default(),
            "gateway",
            "--port",
            "0",
            "--workers",
            &workers.to_string(),
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
        let mut r = std::io::BufReader::new(stderr);
        let _ = r.read_line(&mut line);
        // Keep draining so a chatty gateway never blocks on a full pipe.
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
    let proc = Proc { child };
    let cold = wait_ready(&format!("{url}/ready"), t0, Duration::from_secs(10)).await?;
    Ok((proc, url, cold))
}

/// CPUs for the systems under test, when the bench pins (see `pin_self`).
static PROXY_CPUS: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// On a machine with two or more CPUs the bench process (load generator
/// and mock) keeps CPU 0 and every proxy runs on the others, so each hop
/// between them costs the same for every system. Unpinned, the kernel's
/// placement decides whether a hop is a cheap switch on one CPU or a
/// wake-up of the other, which moved single-connection results by tens of
/// microseconds from run to run.
fn pin_self(enabled: bool) -> Option<String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !enabled || cpus < 2 {
        return None;
    }
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| {
        if cpus == 2 {
            "1".to_string()
        } else {
            format!("1-{}", cpus - 1)
        }
    })
}

/// A command for a system under test, on the proxy CPUs when pinning.
fn pinned(program: &std::ffi::OsStr) -> Command {
    match PROXY_CPUS.get().cloned().flatten() {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpus]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn free_port() -> Option<u16> {
    Some(
        std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port(),
    )
}

fn start_nginx(
    upstream: SocketAddr,
    dir: &std::path::Path,
    workers: u16,
) -> Option<(Proc, String)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    let text = format!(
        "{master} worker_processes {workers}; daemon off; pid {pid}; error_log {dir}/nginx-error.log;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
  access_log off; client_body_temp_path {dir}; proxy_temp_path {dir};
  upstream mock {{ server {upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port}; tcp_nodelay on;
    location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; proxy_read_timeout 300s; }}
  }}
}}\n",
        // One worker runs without a master (it then dies with a plain kill).
        master = if workers == 1 { "master_process off;" } else { "" },
        pid = dir.join("nginx.pid").display(),
        dir = dir.display(),
    );
    std::fs::write(&conf, text).ok()?;
    let child = pinned(std::ffi::OsStr::new(nginx))
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

const LITELLM_KEY: &str = "sk-bench-litellm-0123456789";

/// The LiteLLM proxy (one worker, as installed by bench/run.sh) in front
/// of the mock, with the same two models.
async fn start_litellm(
    bin: &std::path::Path,
    upstream: SocketAddr,
    dir: &std::path::Path,
) -> Result<(Proc, String, Duration)> {
    let port = free_port().context("no free port")?;
    let conf = dir.join("litellm.yaml");
    std::fs::write(
        &conf,
        format!(
            "model_list:
  - model_name: mock/m
    litellm_params: {{ model: openai/m, api_base: http://{upstream}/v1, api_key: sk-mock }}
  - model_name: mockr/m
    litellm_params: {{ model: openai/m, api_base: http://{upstream}/v1, api_key: sk-mock }}
litellm_settings:
  drop_params: true
  telemetry: false
general_settings:
  master_key: {LITELLM_KEY}
"
        ),
    )?;
    let t0 = Instant::now();
    let log = std::fs::File::create(dir.join("litellm.log"))?;
    let child = pinned(bin.as_os_str())
        .args(["--config", conf.to_str().unwrap_or_default()])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env("LITELLM_LOG", "ERROR")
        .env("LITELLM_TELEMETRY", "False")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let proc = Proc { child };
    let url = format!("http://127.0.0.1:{port}");
    let cold = wait_ready(
        &format!("{url}/health/liveliness"),
        t0,
        Duration::from_secs(180),
    )
    .await?;
    Ok((proc, url, cold))
}

#[derive(Default, Clone)]
struct Stats {
    latencies: Vec<Duration>,
    ttft: Vec<Duration>,
    /// Per request: (total - first chunk) / chunks.
    gaps: Vec<Duration>,
    errors: usize,
    wall: Duration,
}

impl Stats {
    fn add(&mut self, o: Stats) {
        self.latencies.extend(o.latencies);
        self.ttft.extend(o.ttft);
        self.gaps.extend(o.gaps);
        self.errors += o.errors;
        self.wall += o.wall;
    }
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

/// One system under test: where it listens and what it wants as a key.
#[derive(Clone)]
struct System {
    name: &'static str,
    url: String,
    key: Option<&'static str>,
    pid: Option<u32>,
}

/// What a scenario sends.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat {
        stream: bool,
    },
    /// Responses API, streamed, to a Responses upstream.
    Responses,
    /// Anthropic Messages in, chat completions out; DIRECT and NGINX get
    /// the equivalent chat stream (they cannot translate).
    MessagesOverChat,
}

fn request(kind: Kind, sys: &str, text: &str) -> (&'static str, String) {
    let chat = |stream: bool| {
        json!({"model": "mock/m", "stream": stream, "max_tokens": 256,
               "messages": [{"role": "user", "content": text}]})
        .to_string()
    };
    match kind {
        Kind::Chat { stream } => ("/v1/chat/completions", chat(stream)),
        Kind::Responses => (
            "/v1/responses",
            json!({"model": "mockr/m", "stream": true, "input": text}).to_string(),
        ),
        Kind::MessagesOverChat if sys == "DIRECT" || sys == "NGINX" => {
            ("/v1/chat/completions", chat(true))
        }
        Kind::MessagesOverChat => (
            "/v1/messages",
            json!({"model": "mock/m", "stream": true, "max_tokens": 256,
                   "messages": [{"role": "user", "content": text}]})
            .to_string(),
        ),
    }
}

fn client(conc: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(conc)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap_or_default()
}

/// Up to `total` requests from `conc` workers, stopping early at `budget`;
/// streams record time to first chunk and the per-chunk gap.
async fn load(
    sys: &System,
    kind: Kind,
    conc: usize,
    total: usize,
    budget: Duration,
    chunks: usize,
) -> Stats {
    let http = client(conc);
    let (path, body) = request(kind, sys.name, "hi");
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (http, body, counter) = (http.clone(), body.clone(), counter.clone());
        let (url, key) = (format!("{}{path}", sys.url), sys.key);
        tasks.push(tokio::spawn(async move {
            let mut s = Stats::default();
            while counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total
                && t0.elapsed() < budget
            {
                let t = Instant::now();
                let mut rb = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone());
                if let Some(k) = key {
                    rb = rb.bearer_auth(k);
                }
                let Ok(mut r) = rb.send().await else {
                    s.errors += 1;
                    continue;
                };
                if !r.status().is_success() {
                    s.errors += 1;
                    let _ = r.bytes().await;
                    continue;
                }
                let mut first = None;
                let mut failed = false;
                loop {
                    match r.chunk().await {
                        Ok(Some(_)) => {
                            first.get_or_insert_with(|| t.elapsed());
                        }
                        Ok(None) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    s.errors += 1;
                    continue;
                }
                let took = t.elapsed();
                s.latencies.push(took);
                if let Some(f) = first {
                    s.ttft.push(f);
                    s.gaps.push(took.saturating_sub(f) / chunks.max(1) as u32);
                }
            }
            s
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.add(s);
        }
    }
    all.wall = t0.elapsed();
    all
}

/// Opens `n` streams that the mock holds after their first chunk, and
/// reads the system's RSS once all of them have their first chunk.
async fn open_streams(
    sys: &System,
    n: usize,
    release: &tokio::sync::watch::Sender<u64>,
) -> (usize, u64, Duration) {
    let http = client(n);
    let (path, body) = request(Kind::Chat { stream: true }, sys.name, "hold-open");
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let rb = http
            .post(format!("{}{path}", sys.url))
            .header("content-type", "application/json")
            .body(body.clone());
        let rb = match sys.key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        };
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut r) = rb.send().await else {
                return false;
            };
            if !r.status().is_success() {
                return false;
            }
            let mut counted = false;
            loop {
                match r.chunk().await {
                    Ok(Some(_)) if !counted => {
                        counted = true;
                        opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return counted,
                    Err(_) => return false,
                }
            }
        }));
    }
    while opened.load(std::sync::atomic::Ordering::Relaxed) < n
        && t0.elapsed() < Duration::from_secs(20)
        && !tasks.iter().all(|t| t.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed();
    // Let allocations settle, then read the resident set.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss = sys.pid.map(tree_rss_kb).unwrap_or(0);
    release.send_modify(|g| *g += 1);
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await, Ok(true)) {
            ok += 1;
        }
    }
    (ok, rss, took)
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
    for sc in &scenarios {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !sc.name.contains(o.as_str()))
        {
            continue;
        }
        let stream = sc.kind != Kind::Chat { stream: false };
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
        "- cold start, spawn to a ready /ready: CLAWGATE {} ms{}",
        cold.as_millis(),
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
