//! The systems under test as child processes: the gateway, nginx and the
//! LiteLLM proxy; CPU pinning, readiness and resident memory.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Proc {
    pub child: Child,
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

pub fn rss_kb(pid: u32) -> u64 {
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

/// Clock ticks per second for `/proc/<pid>/stat` (USER_HZ; 100 on Linux
/// unless `getconf` says otherwise).
fn ticks_per_second() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(100)
    })
}

/// User plus system CPU time of a process (all its threads, exited ones
/// included) and its descendants, from `/proc/<pid>/stat`.
pub fn tree_cpu(pid: u32) -> Duration {
    let mut total = proc_cpu(pid);
    for k in children(pid) {
        total += tree_cpu(k);
    }
    total
}

/// User plus system CPU time of one process (all its threads).
pub fn proc_cpu(pid: u32) -> Duration {
    let own = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which may hold spaces.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line: 12 and 13
            // after the name and the state.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_nanos(own * 1_000_000_000 / ticks_per_second())
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// RSS of a process and all its descendants (nginx workers, uvicorn).
pub fn tree_rss_kb(pid: u32) -> u64 {
    let mut total = rss_kb(pid);
    for k in children(pid) {
        total += tree_rss_kb(k);
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
pub async fn start_gateway(
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
  mock: {{ baseUrl: "http://{upstream}/v1", maxConcurrent: 0, models: [{{ id: "m", maxTokens: 4096 }}] }},
  mockr: {{ baseUrl: "http://{upstream}/v1", maxConcurrent: 0, api: "openai-responses", models: [{{ id: "m", maxTokens: 4096 }}] }},
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
pub static PROXY_CPUS: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// On a machine with two or more CPUs the bench process (load generator
/// and mock) keeps CPU 0 and every proxy runs on the others, so each hop
/// between them costs the same for every system. Unpinned, the kernel's
/// placement decides whether a hop is a cheap switch on one CPU or a
/// wake-up of the other, which moved single-connection results by tens of
/// microseconds from run to run.
pub fn pin_self(enabled: bool) -> Option<String> {
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

pub fn start_nginx(
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

pub const LITELLM_KEY: &str = "sk-bench-litellm-0123456789";

/// The LiteLLM proxy (one worker, as installed by bench/run.sh) in front
/// of the mock, with the same two models.
pub async fn start_litellm(
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

/// One system under test: where it listens and what it wants as a key.
#[derive(Clone)]
pub struct System {
    pub name: &'static str,
    pub url: String,
    pub key: Option<&'static str>,
    pub pid: Option<u32>,
}
