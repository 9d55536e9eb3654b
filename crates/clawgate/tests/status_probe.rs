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
