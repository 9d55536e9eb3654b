//! The load generator: request mixes per scenario, percentiles, and the
//! open-streams memory probe.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::systems::{tree_rss_kb, System};

#[derive(Default, Clone)]
pub struct Stats {
    pub latencies: Vec<Duration>,
    pub ttft: Vec<Duration>,
    /// Per request: (total - first chunk) / chunks.
    pub gaps: Vec<Duration>,
    pub errors: usize,
    pub wall: Duration,
    /// Completed requests (`latencies` holds each one's time only when the
    /// in-process generator ran).
    pub count: usize,
    /// Per round (p50, p99) from an external generator (wrk), which does
    /// not hand over every latency.
    pub round_pcts: Vec<(Duration, Duration)>,
    /// CPU the system under test used during the rounds, from `/proc`.
    pub cpu: Option<Duration>,
}

impl Stats {
    pub fn add(&mut self, o: Stats) {
        self.latencies.extend(o.latencies);
        self.ttft.extend(o.ttft);
        self.gaps.extend(o.gaps);
        self.errors += o.errors;
        self.wall += o.wall;
        self.count += o.count;
        self.round_pcts.extend(o.round_pcts);
        self.cpu = match (self.cpu, o.cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
    pub fn rps(&self) -> f64 {
        self.count as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    /// The latency percentile `p` (0.5 or 0.99): pooled over every request
    /// when each was timed, else the median of the rounds' own figures.
    pub fn latency(&self, p: f64) -> Duration {
        if !self.latencies.is_empty() || self.round_pcts.is_empty() {
            return pct(&self.latencies, p);
        }
        let mut v: Vec<Duration> = self
            .round_pcts
            .iter()
            .map(|r| if p < 0.9 { r.0 } else { r.1 })
            .collect();
        v.sort();
        v[v.len() / 2]
    }
    /// CPU time of the system per completed request; `None` below 200 ms
    /// of CPU in all, where the 10 ms ticks of `/proc` would be more than
    /// a 5 % error.
    pub fn cpu_per_request(&self) -> Option<Duration> {
        let cpu = self.cpu.filter(|c| *c >= Duration::from_millis(200))?;
        (self.count > 0).then(|| cpu / self.count as u32)
    }
}

pub fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

/// What a scenario sends.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Chat {
        stream: bool,
    },
    /// Responses API, streamed, to a Responses upstream.
    Responses,
    /// Anthropic Messages in, chat completions out; DIRECT and NGINX get
    /// the equivalent chat stream (they cannot translate).
    MessagesOverChat,
    /// Non-streamed chat in session mode (`user` names the session): each
    /// worker keeps a session for 10 turns, then starts another, so the
    /// gateway loads and stores real short conversations. DIRECT and NGINX
    /// get the same body (they ignore `user`).
    ChatSession,
    /// The same, on the long sessions of the seeded database (10 000
    /// stored entries each, a summary near the end): 10 turns each, in
    /// turn.
    ChatLongSession {
        sessions: usize,
    },
}

pub fn request(kind: Kind, sys: &str, text: &str) -> (&'static str, String) {
    let chat = |stream: bool| {
        json!({"model": "mock/m", "stream": stream, "max_tokens": 256,
               "messages": [{"role": "user", "content": text}]})
        .to_string()
    };
    match kind {
        Kind::Chat { stream } => ("/v1/chat/completions", chat(stream)),
        Kind::ChatSession | Kind::ChatLongSession { .. } => ("/v1/chat/completions", chat(false)),
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

/// A JSON POST, with the system's key when it wants one.
fn post(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &str,
) -> reqwest::RequestBuilder {
    let rb = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    match key {
        Some(k) => rb.bearer_auth(k),
        None => rb,
    }
}

pub fn client(conc: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(conc)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap_or_default()
}

/// Up to `total` requests from `conc` workers, stopping early at `budget`;
/// streams record time to first chunk and the per-chunk gap.
pub async fn load(
    sys: &System,
    kind: Kind,
    conc: usize,
    total: usize,
    budget: Duration,
    chunks: usize,
    idle: Duration,
) -> Stats {
    let http = client(conc);
    let (path, body) = request(kind, sys.name, "hi");
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    // Distinct session keys per run of this function.
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for worker in 0..conc {
        let (http, mut body, counter) = (http.clone(), body.clone(), counter.clone());
        let (url, key) = (format!("{}{path}", sys.url), sys.key);
        tasks.push(tokio::spawn(async move {
            let mut s = Stats::default();
            let mut turn = 0usize;
            while counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total
                && t0.elapsed() < budget
            {
                let user = match kind {
                    Kind::ChatSession => Some(format!("bench-{run}-{worker}-{}", turn / 10)),
                    Kind::ChatLongSession { sessions } => Some(crate::seed::key(
                        (run * 7 + worker + turn / 10) % sessions.max(1),
                    )),
                    _ => None,
                };
                if let Some(user) = user {
                    body = json!({"model": "mock/m", "stream": false, "max_tokens": 256,
                                  "user": user,
                                  "messages": [{"role": "user", "content": "hi"}]})
                    .to_string();
                    turn += 1;
                }
                if !idle.is_zero() {
                    tokio::time::sleep(idle).await;
                }
                let t = Instant::now();
                let Ok(mut r) = post(&http, &url, key, &body).send().await else {
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
    all.count = all.latencies.len();
    all
}

/// Opens `n` streams that the mock holds after their first chunk, and
/// reads the system's RSS once all of them have their first chunk.
pub async fn open_streams(
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
        let rb = post(&http, &format!("{}{path}", sys.url), sys.key, &body);
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
