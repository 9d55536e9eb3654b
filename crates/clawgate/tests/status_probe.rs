//! `clawgate models status [--probe]` (LOC-3) against fakes of each
//! server's own API on 127.0.0.1: llama.cpp (recorded `/v1/models`,
//! `/props`, chat), LM Studio (`/api/v0/models`), Ollama (`/api/tags`,
//! `/api/ps`, `/api/show`), and a server that is down. Each model gets
//! its listed/loaded state, configured vs served context, and a probe
//! bucket with its latency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use clawgate_testkit::{free_port, FakeServer, Reply};
use serde_json::Value;

fn wire(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/wire")
            .join(name),
    )
    .unwrap()
}

fn ok_chat() -> Reply {
    Reply::json(
        200,
        r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"OK"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_asks_each_kind_of_server_and_probes_every_model() {
    let llama = FakeServer::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/v1/models") => Reply::recorded(&wire("llamacpp/models.http")).unwrap(),
        ("GET", "/props") => Reply::recorded(&wire("llamacpp/props.http")).unwrap(),
        _ => Reply::recorded(&wire("llamacpp/chat-nonstream.http")).unwrap(),
    })
    .await;
    let lmstudio = FakeServer::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/v1/models") => Reply::json(
            200,
            r#"{"object":"list","data":[{"id":"qwen3-8b","object":"model","owned_by":"organization_owner"},{"id":"gemma-3-12b","object":"model","owned_by":"organization_owner"}]}"#,
        ),
        ("GET", "/api/v0/models") => Reply::json(
            200,
            r#"{"object":"list","data":[{"id":"qwen3-8b","object":"model","type":"llm","state":"loaded","max_context_length":40960,"loaded_context_length":8192},{"id":"gemma-3-12b","object":"model","type":"vlm","state":"not-loaded","max_context_length":131072}]}"#,
        ),
        _ => ok_chat(),
    })
    .await;
    let ollama = FakeServer::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/v1/models") => Reply::json(
            200,
            r#"{"object":"list","data":[{"id":"llama3.2:latest","object":"model","owned_by":"library"}]}"#,
        ),
        ("GET", "/api/tags") => Reply::json(200, r#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest"}]}"#),
        ("GET", "/api/ps") => Reply::json(200, r#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","context_length":4096}]}"#),
        ("POST", "/api/show") => Reply::json(
            200,
            r#"{"parameters":"num_ctx 4096","model_info":{"llama.context_length":131072}}"#,
        ),
        _ => Reply::json(
            401,
            r#"{"error":{"message":"invalid api key sk-ollama-secret-123456","type":"invalid_request_error","code":"invalid_api_key"}}"#,
        ),
    })
    .await;
    let down = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clawgate.json5"),
        format!(
            r#"{{ models: {{ mode: "replace", providers: {{
  llama: {{ baseUrl: "{}", models: [{{ id: "tiny", contextWindow: 32768 }}, {{ id: "other", contextWindow: 2048 }}] }},
  lmstudio: {{ baseUrl: "{}", models: [{{ id: "qwen3-8b" }}, {{ id: "gemma-3-12b", contextWindow: 8000 }}] }},
  ollama: {{ baseUrl: "{}", apiKey: "sk-ollama-secret-123456", models: [{{ id: "llama3.2", contextWindow: 131072 }}] }},
  gone: {{ baseUrl: "http://127.0.0.1:{down}/v1", models: [{{ id: "m" }}] }},
}} }} }}"#,
            llama.base_url(),
            lmstudio.base_url(),
            ollama.base_url()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args([
            "models",
            "status",
            "--probe",
            "--probe-timeout",
            "5000",
            "--json",
        ])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env_remove("CLAWGATE_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("sk-ollama-secret-123456"),
        "a key in the output: {stdout}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let servers = v["servers"].as_array().unwrap();
    let server = |id: &str| servers.iter().find(|s| s["id"] == id).unwrap().clone();
    let model = |id: &str, r: &str| {
        server(id)["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["ref"] == r)
            .unwrap()
            .clone()
    };

    // llama.cpp: per-slot n_ctx 1024 from /props beats the configured 32768.
    let s = server("llama");
    assert_eq!(
        (
            s["reachable"].clone(),
            s["server"].clone(),
            s["slots"].clone()
        ),
        (true.into(), "llama.cpp".into(), 2.into())
    );
    let tiny = model("llama", "llama/tiny");
    assert_eq!(tiny["listed"], true);
    assert_eq!(tiny["configuredContext"], 32768);
    assert_eq!(tiny["servedContext"], 1024);
    assert_eq!(tiny["usedContext"], 1024);
    assert_eq!(tiny["probe"]["bucket"], "ok", "{tiny}");
    // llama.cpp answers any model id with its loaded model: not listed.
    let other = model("llama", "llama/other");
    assert_eq!(other["listed"], false);
    assert_eq!(other["probe"]["bucket"], "no_model", "{other}");

    // LM Studio: loaded with 8192; not loaded → no served context.
    let s = server("lmstudio");
    assert_eq!(s["server"], "lmstudio");
    let qwen = model("lmstudio", "lmstudio/qwen3-8b");
    assert_eq!(
        (qwen["loaded"].clone(), qwen["configuredSource"].clone()),
        (true.into(), "assumed".into())
    );
    assert_eq!(
        (qwen["servedContext"].clone(), qwen["usedContext"].clone()),
        (8192.into(), 8192.into())
    );
    let gemma = model("lmstudio", "lmstudio/gemma-3-12b");
    assert_eq!(gemma["loaded"], false);
    assert_eq!(gemma["usedContext"], 8000);

    // Ollama: loaded with 4096; the probe fails on auth, the key masked.
    let s = server("ollama");
    assert_eq!(s["server"], "ollama");
    let l = model("ollama", "ollama/llama3.2");
    assert_eq!(
        (
            l["loaded"].clone(),
            l["servedContext"].clone(),
            l["usedContext"].clone()
        ),
        (true.into(), 4096.into(), 4096.into())
    );
    assert_eq!(l["probe"]["bucket"], "auth", "{l}");
    assert!(l["probe"]["detail"].as_str().unwrap().contains("***"));

    // Down: not reachable, the probe says so.
    let s = server("gone");
    assert_eq!(s["reachable"], false);
    assert!(s["error"].as_str().unwrap().contains("refused"), "{s}");
    let m = model("gone", "gone/m");
    assert_eq!(m["probe"]["bucket"], "unknown");
    assert!(
        m["probe"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("unreachable"),
        "{m}"
    );
    for p in servers {
        for m in p["models"].as_array().unwrap() {
            assert!(m["probe"]["latencyMs"].is_u64(), "{m}");
        }
    }

    // The table says which number is used.
    let out = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(["models", "status"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env_remove("CLAWGATE_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("32768 (config:contextWindow) / served 1024 → uses 1024"),
        "{text}"
    );
}

fn doctor(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .arg("doctor")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("CLAWGATE_CONFIG")
        // A hosted key in the caller's environment is an audit finding.
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENROUTER_API_KEY")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_each_problem_with_a_fix_and_passes_a_clean_setup() {
    let llama = FakeServer::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/v1/models") => Reply::recorded(&wire("llamacpp/models.http")).unwrap(),
        ("GET", "/props") => Reply::recorded(&wire("llamacpp/props.http")).unwrap(),
        _ => Reply::recorded(&wire("llamacpp/chat-nonstream.http")).unwrap(),
    })
    .await;
    let down = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clawgate.json5"),
        format!(
            r#"{{
  agents: {{ defaults: {{ model: {{ primary: "llama/tiny", fallbacks: ["gone/m"] }} }} }},
  models: {{ mode: "replace", providers: {{
    llama: {{ baseUrl: "{}", models: [{{ id: "tiny", contextWindow: 32768 }}] }},
    gone: {{ baseUrl: "http://127.0.0.1:{down}/v1", models: [{{ id: "m" }}] }},
    managed: {{ baseUrl: "http://127.0.0.1:{down}/v1", localService: {{ command: "/nonexistent/llama-server" }}, models: [{{ id: "x" }}] }},
  }} }},
}}"#,
            llama.base_url()
        ),
    )
    .unwrap();
    let (code, out, _) = doctor(dir.path(), &["--json"]);
    assert_eq!(code, Some(1), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    let findings = v["findings"].as_array().unwrap();
    let find = |area: &str, subject: &str| {
        findings
            .iter()
            .find(|f| f["area"] == area && f["subject"].as_str().unwrap().contains(subject))
            .unwrap_or_else(|| panic!("no {area} finding about {subject}: {out}"))
            .clone()
    };
    let f = find("localService", "managed");
    assert_eq!(f["severity"], "error");
    assert!(f["message"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/llama-server"));
    let f = find("context", "llama/tiny");
    assert_eq!(f["severity"], "warn");
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains("clawgate config set models.providers.llama.models[0].contextWindow 1024"),
        "{f}"
    );
    let f = find("server", "gone");
    assert_eq!(
        f["severity"], "warn",
        "a fallback that is down is a warning: {f}"
    );
    assert!(f["fix"].as_str().unwrap().contains("localService"), "{f}");
    // Every finding has a fix line.
    assert!(findings
        .iter()
        .all(|f| !f["fix"].as_str().unwrap().is_empty()));
    // Errors first.
    assert_eq!(findings[0]["severity"], "error");

    // The same as text.
    let (code, out, err) = doctor(dir.path(), &[]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains(
            "fix: `clawgate config set models.providers.llama.models[0].contextWindow 1024`"
        ),
        "{out}"
    );
    assert!(err.contains("doctor found 1 problem(s)"), "{err}");

    // A clean setup: exit 0.
    std::fs::write(
        dir.path().join("clawgate.json5"),
        format!(
            // Merge mode and no tools for the tiny model: the security
            // audit (part of doctor) has nothing to say either.
            r#"{{ models: {{ providers: {{ llama: {{ baseUrl: "{}", models: [{{ id: "tiny", contextWindow: 1024, compat: {{ supportsTools: false }} }}] }} }} }} }}"#,
            llama.base_url()
        ),
    )
    .unwrap();
    let (code, out, err) = doctor(dir.path(), &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("no problems found"), "{out}");

    // A broken config is one error naming file, line and key.
    std::fs::write(
        dir.path().join("clawgate.json5"),
        "{ models: { providers: { llama: { baseUrl: \"http://127.0.0.1:1/v1\", models: [{ id: \"t\", contextWindow: \"big\" }] } } } }",
    )
    .unwrap();
    let (code, out, _) = doctor(dir.path(), &[]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("contextWindow") && out.contains("clawgate.json5:1:"),
        "{out}"
    );
}

/// Issue 22 (8): a probe of a `localService` that is not running starts
/// it (saying so) and stops it when the command ends; one that cannot
/// start is reported with its own output and a fix that matches the
/// config, never "add a localService".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_start_a_local_service_that_is_not_running_and_stop_it_after() {
    let bin = clawgate_testkit::fake_server_bin()
        .expect("clawgate-fake-server is not built: cargo build -p clawgate-testkit --bins");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spawns.log");
    let port = free_port();
    std::fs::write(
        dir.path().join("clawgate.json5"),
        format!(
            r#"{{ models: {{ mode: "merge", providers: {{
  llama: {{ baseUrl: "http://127.0.0.1:{port}/v1",
    localService: {{ command: {cmd:?}, args: ["--port", "{port}", "--name", "m", "--load-ms", "200", "--spawn-log", {log:?}] }},
    models: [{{ id: "m" }}] }},
  broken: {{ baseUrl: "http://127.0.0.1:{down}/v1",
    localService: {{ command: "/usr/bin/env", args: ["sh", "-c", "echo fatal: out of memory >&2; exit 3"] }},
    models: [{{ id: "m" }}] }},
}} }},
  agents: {{ defaults: {{ model: {{ primary: "llama/m" }} }} }} }}"#,
            cmd = bin.display().to_string(),
            log = log.display().to_string(),
            down = free_port(),
        ),
    )
    .unwrap();
    let pids = || -> Vec<u32> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .collect()
    };

    let (_, out, err) = doctor(dir.path(), &[]);
    assert!(
        err.contains("started llama's local server (localService) for the probe"),
        "{err}"
    );
    assert!(
        out.contains("it was not running: started for the probe (ready in"),
        "{out}"
    );
    assert!(
        !out.contains("[probe] llama/m"),
        "llama/m answered its probe: {out}"
    );
    assert_eq!(pids().len(), 1, "{out}");
    assert!(
        !clawgate_testkit::process_alive(pids()[0]),
        "the server started for the probe outlived doctor"
    );
    // The broken one: its own output, a fix for its localService.
    let broken = out
        .split("\nerror")
        .chain(out.split("\nwarn"))
        .find(|f| f.contains("models.providers.broken.localService: started for the probe"))
        .unwrap_or_else(|| panic!("no finding for the broken service: {out}"));
    assert!(broken.contains("fatal: out of memory"), "{broken}");
    assert!(
        broken.contains("fix: check models.providers.broken.localService"),
        "{broken}"
    );
    assert!(
        !out.contains("or add models.providers.broken.localService"),
        "{out}"
    );

    // `models status --probe`: the same start, and the table shows it up.
    let out = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args([
            "models",
            "status",
            "--probe",
            "--probe-provider",
            "llama",
            "--json",
        ])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env_remove("CLAWGATE_CONFIG")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let llama = v["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "llama"))
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(llama["reachable"], true, "{llama}");
    assert_eq!(llama["localService"]["outcome"], "started", "{llama}");
    assert_eq!(llama["models"][0]["probe"]["bucket"], "ok", "{llama}");
    assert_eq!(pids().len(), 2);
    assert!(!clawgate_testkit::process_alive(pids()[1]));
}
