//! LOC-1 and LOC-7 through the real gateway process: a `localService`
//! (the stand-in server binary) is started by the first request, shown by
//! `models running` and `/metrics`, stopped by `models unload`, started
//! again, and no child is left once the gateway gets SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clawgate_testkit::{free_port, process_alive as alive};
use serde_json::{json, Value};

fn spawned(log: &Path) -> Vec<u32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

fn clawgate(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("CLAWGATE_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_starts_lists_unloads_and_on_sigterm_stops_its_local_server() {
    let bin = clawgate_testkit::fake_server_bin()
        .expect("clawgate-fake-server is not built: cargo build -p clawgate-testkit --bins");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spawns.log");
    let (port, gw_port) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("clawgate.json5"),
        format!(
            r#"{{
  gateway: {{ port: {gw_port}, auth: {{ mode: "token", token: "test-token-123456" }} }},
  models: {{ mode: "replace", providers: {{
    llama: {{ baseUrl: "http://127.0.0.1:{port}/v1",
      localService: {{ command: {cmd:?}, args: ["--port", "{port}", "--name", "llama", "--load-ms", "200", "--spawn-log", {log:?}] }},
      models: [{{ id: "m" }}] }},
  }} }},
}}"#,
            cmd = bin.display().to_string(),
            log = log.display().to_string(),
        ),
    )
    .unwrap();
    let mut gw = gateway(dir.path(), gw_port);
    let url = format!("http://127.0.0.1:{gw_port}");
    let http = reqwest::Client::new();
    let ask = || async {
        http.post(format!("{url}/v1/chat/completions"))
            .bearer_auth("test-token-123456")
            .json(&json!({"model": "llama/m", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap()
    };
    assert!(spawned(&log).is_empty(), "started before any request");
    let r = ask().await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-clawgate-start-us"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from llama");
    let pids = spawned(&log);
    assert_eq!(pids.len(), 1);
    assert!(alive(pids[0]));

    // `models running` asks the gateway.
    let out = clawgate(dir.path(), &["models", "running", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"][0]["provider"], "llama");
    assert_eq!(v["services"][0]["state"], "running");
    assert_eq!(v["services"][0]["pid"], pids[0]);
    // maxConcurrent not written: what the server says it runs at once
    // (llama.cpp /props: one slot), learned before the first request
    // took its place in the queue.
    assert_eq!(v["queues"][0]["limit"], 1);
    let metrics = http
        .get(format!("{url}/metrics"))
        .bearer_auth("test-token-123456")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("clawgate_local_server_running{provider=\"llama\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("clawgate_local_server_starts_total{provider=\"llama\"} 1"));
    assert!(metrics.contains("clawgate_queue_limit{provider=\"llama\"} 1"));

    // `models unload` stops it; the next request starts it again.
    let out = clawgate(dir.path(), &["models", "unload", "llama/m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!alive(pids[0]), "unload left the server running");
    // What it printed stays for `models running` (redacted), not for
    // API clients.
    let out = clawgate(dir.path(), &["models", "running"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("last output of llama:"), "{text}");
    assert!(text.contains("fake server llama starting"), "{text}");
    let out = clawgate(dir.path(), &["models", "unload", "llama"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no local server started by clawgate runs for llama"));
    assert_eq!(ask().await.status(), 200);
    let pids = spawned(&log);
    assert_eq!(pids.len(), 2);
    assert!(alive(pids[1]));
    // The server said (llama.cpp /props: one slot): the queue follows.
    let out = clawgate(dir.path(), &["models", "running", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["queues"][0]["limit"], 1, "the server's own slot count");

    // SIGTERM: the gateway exits and takes its child with it.
    let ok = Command::new("kill")
        .args(["-TERM", &gw.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = gw.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "gateway did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());
    assert!(!alive(pids[1]), "the local server outlived the gateway");
}

/// A gateway on `dir`'s config; returns it once it listens.
fn gateway(dir: &Path, gw_port: u16) -> Child {
    let mut gw: Child = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(["gateway"])
        .current_dir(dir)
        .env("HOME", dir)
        .env("CLAWGATE_LOG", "off")
        .env_remove("CLAWGATE_CONFIG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(gw.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains(&format!("127.0.0.1:{gw_port}")), "{line}");
    gw
}

/// Kills every server in a spawn log and the gateways listed, on drop.
struct Cleanup(std::path::PathBuf, std::sync::Mutex<Vec<u32>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut pids = spawned(&self.0);
        pids.extend(self.1.lock().map(|p| p.clone()).unwrap_or_default());
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

/// Issue 22 (6): a gateway killed with SIGKILL cannot stop its servers;
/// the next one takes back the one still configured (no second start,
/// and it stops it on exit) and stops one whose settings changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_of_a_killed_gateway_are_taken_back_or_stopped_by_the_next() {
    let bin = clawgate_testkit::fake_server_bin()
        .expect("clawgate-fake-server is not built: cargo build -p clawgate-testkit --bins");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spawns.log");
    let (port, gw_port) = (free_port(), free_port());
    let config = |n_ctx: u32| {
        format!(
            r#"{{
  gateway: {{ port: {gw_port}, auth: {{ mode: "token", token: "test-token-123456" }} }},
  models: {{ mode: "replace", providers: {{
    llama: {{ baseUrl: "http://127.0.0.1:{port}/v1",
      localService: {{ command: {cmd:?}, args: ["--port", "{port}", "--name", "llama", "--n-ctx", "{n_ctx}", "--spawn-log", {log:?}], idleStopMs: 600000 }},
      models: [{{ id: "m" }}] }},
  }} }},
}}"#,
            cmd = bin.display().to_string(),
            log = log.display().to_string(),
        )
    };
    std::fs::write(dir.path().join("clawgate.json5"), config(4096)).unwrap();
    let url = format!("http://127.0.0.1:{gw_port}");
    let http = reqwest::Client::new();
    let ask = || async {
        let r = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth("test-token-123456")
            .json(&json!({"model": "llama/m", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "from llama");
    };
    let kill9 = |gw: &mut Child| {
        gw.kill().unwrap();
        gw.wait().unwrap();
    };

    let mut first = gateway(dir.path(), gw_port);
    // A failed assertion leaves nothing running.
    let _cleanup = Cleanup(log.clone(), std::sync::Mutex::new(Vec::new()));
    ask().await;
    let pid = spawned(&log)[0];
    kill9(&mut first);
    assert!(alive(pid), "SIGKILL takes the gateway only");

    // The next gateway takes it back: no second start, and it is its own.
    let mut second = gateway(dir.path(), gw_port);
    _cleanup.1.lock().unwrap().push(second.id());
    ask().await;
    assert_eq!(
        spawned(&log),
        vec![pid],
        "started again instead of taken back"
    );
    let out = clawgate(dir.path(), &["models", "running", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"][0]["state"], "running", "{v}");
    assert_eq!(v["services"][0]["pid"], pid, "{v}");
    // Killed again: the one after it finds the server under the new
    // owner's record, and the config has changed: it is stopped.
    kill9(&mut second);
    assert!(alive(pid));
    std::fs::write(dir.path().join("clawgate.json5"), config(8192)).unwrap();
    let mut third = gateway(dir.path(), gw_port);
    _cleanup.1.lock().unwrap().push(third.id());
    eventually("the outdated server stopped", || !alive(pid)).await;
    ask().await;
    let pids = spawned(&log);
    assert_eq!(pids.len(), 2, "{pids:?}");
    // SIGTERM: it stops what it started.
    Command::new("kill")
        .args(["-TERM", &third.id().to_string()])
        .status()
        .unwrap();
    third.wait().unwrap();
    assert!(!alive(pids[1]), "the local server outlived the gateway");
    assert_eq!(
        std::fs::read_dir(dir.path().join(".clawgate/state/local-servers"))
            .unwrap()
            .count(),
        0,
        "records of stopped servers are removed"
    );
}
