//! A stand-in local model server for `localService` tests: a real child
//! process that loads for a while (llama.cpp's 503 "Loading model" on every
//! endpoint), then serves `/v1/models`, `/props`, `/health` and streamed or
//! plain `/v1/chat/completions` whose text names the server.
//!
//! `clawgate-fake-server --port N [--name NAME] [--load-ms N] [--n-ctx N]
//! [--chunks N] [--chunk-ms N] [--spawn-log PATH] [--fail-after-ms N]`
//! Each start appends its pid to `--spawn-log`; it prints a few lines
//! (one with `$FAKE_SECRET`, to test redaction) on stdout and stderr.

use std::time::{Duration, Instant};

use clawgate_testkit::{FakeServer, Reply};

struct Opts {
    port: u16,
    name: String,
    load: Duration,
    n_ctx: u64,
    chunks: usize,
    chunk: Duration,
    spawn_log: Option<String>,
    fail_after: Option<Duration>,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        port: 0,
        name: "fake".into(),
        load: Duration::ZERO,
        n_ctx: 4096,
        chunks: 3,
        chunk: Duration::ZERO,
        spawn_log: None,
        fail_after: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        let num = |s: String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
        match a.as_str() {
            "--port" => o.port = num(v()?)?.try_into().map_err(|_| "port")?,
            "--name" => o.name = v()?,
            "--load-ms" => o.load = Duration::from_millis(num(v()?)?),
            "--n-ctx" => o.n_ctx = num(v()?)?,
            "--chunks" => o.chunks = num(v()?)? as usize,
            "--chunk-ms" => o.chunk = Duration::from_millis(num(v()?)?),
            "--spawn-log" => o.spawn_log = Some(v()?),
            "--fail-after-ms" => o.fail_after = Some(Duration::from_millis(num(v()?)?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn loading() -> Reply {
    Reply::json(
        503,
        r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#,
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("clawgate-fake-server: {e}");
            std::process::exit(2);
        }
    };
    if let Some(path) = &o.spawn_log {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{} {}", std::process::id(), o.name);
        }
    }
    let secret = std::env::var("FAKE_SECRET").unwrap_or_default();
    println!("fake server {} starting on port {}", o.name, o.port);
    eprintln!("loading weights with token {secret}");
    let began = Instant::now();
    let (name, load, n_ctx, chunks, chunk) = (o.name.clone(), o.load, o.n_ctx, o.chunks, o.chunk);
    let server = FakeServer::start_at(o.port, move |req| {
        if began.elapsed() < load {
            return loading();
        }
        let path = req.path.split('?').next().unwrap_or("");
        match (req.method.as_str(), path) {
            ("GET", "/health") => Reply::json(200, r#"{"status":"ok"}"#),
            ("GET", "/v1/models") | ("GET", "/models") => Reply::json(
                200,
                &format!(
                    r#"{{"object":"list","data":[{{"id":"{name}","object":"model","owned_by":"llamacpp","meta":{{"n_ctx":{n_ctx},"n_ctx_train":{}}}}}]}}"#,
                    n_ctx * 4
                ),
            ),
            ("GET", "/props") => Reply::json(
                200,
                &format!(
                    r#"{{"default_generation_settings":{{"n_ctx":{n_ctx}}},"total_slots":1,"model_alias":"{name}"}}"#
                ),
            ),
            ("POST", "/v1/chat/completions") => {
                let body = req.body_str();
                if body.contains("\"stream\":true") {
                    let mut r = Reply::new(200).header("content-type", "text/event-stream");
                    for i in 0..chunks {
                        if i > 0 && !chunk.is_zero() {
                            r = r.sleep(chunk);
                        }
                        let word = if i == 0 { format!("from {name}") } else { format!(" {i}") };
                        r = r.bytes(format!(
                            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{word}\"}},\"finish_reason\":null}}]}}\n\n"
                        ));
                    }
                    r.bytes(format!(
                        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":{chunks},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
                        5 + chunks
                    ))
                } else {
                    let mut r = Reply::json(
                        200,
                        &format!(
                            r#"{{"id":"c","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"from {name}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}}}"#
                        ),
                    );
                    if !chunk.is_zero() {
                        r = Reply::new(200).header("content-type", "application/json").sleep(chunk * chunks as u32).bytes(format!(
                            r#"{{"id":"c","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"from {name}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}}}"#
                        ));
                    }
                    r
                }
            }
            _ => Reply::json(404, r#"{"error":{"message":"not found"}}"#),
        }
    })
    .await;
    println!("fake server {} listening on {}", o.name, server.addr);
    match o.fail_after {
        Some(d) => {
            tokio::time::sleep(d).await;
            eprintln!("fake server {}: simulated crash", o.name);
            std::process::exit(3);
        }
        None => std::future::pending::<()>().await,
    }
}
