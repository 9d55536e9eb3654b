//! LOC-1, LOC-2, LOC-6, LOC-7 with real child processes: the stand-in
//! server binary (`clawgate-fake-server`) is spawned as a `localService`
//! through the router's gate, on 127.0.0.1 ports only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawgate_catalog::{load_text, Registry, SelectionSource};
use clawgate_local::Supervisor;
use clawgate_router::clock::TokioClock;
use clawgate_router::{Routed, RunError, Runner, Turn};
use clawgate_testkit::{free_port, process_alive as alive, FakeServer, Reply};
use clawgate_wire::{ChatRequest, Client, Collected, Message};

fn bin() -> PathBuf {
    clawgate_testkit::fake_server_bin()
        .expect("clawgate-fake-server is not built: cargo build -p clawgate-testkit --bins")
}

/// A provider block whose server is the fake binary on `port`.
fn service(
    id: &str,
    port: u16,
    log: &Path,
    extra_args: &[&str],
    ls_extra: &str,
    p_extra: &str,
) -> String {
    let mut args = vec![
        "--port".to_string(),
        port.to_string(),
        "--name".to_string(),
        id.to_string(),
        "--spawn-log".to_string(),
        log.display().to_string(),
    ];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"{id}: {{ baseUrl: "http://127.0.0.1:{port}/v1", {p_extra}
      localService: {{ command: {cmd:?}, args: [{args}], readyTimeoutMs: 20000, {ls_extra} }},
      models: [{{ id: "m" }}] }},"#,
        cmd = bin().display().to_string(),
        args = args.join(", "),
    )
}

fn registry(providers: &str, primary: &str, fallbacks: &[&str]) -> Registry {
    let fb: Vec<String> = fallbacks.iter().map(|f| format!("{f:?}")).collect();
    let text = format!(
        r#"{{
  agents: {{ defaults: {{ model: {{ primary: "{primary}", fallbacks: [{}] }} }} }},
  models: {{ mode: "replace", providers: {{ {providers} }} }},
}}"#,
        fb.join(", ")
    );
    load_text(Path::new("t.json5"), &text, &|k| {
        (k == "FAKE_SECRET_SRC").then(|| "super-secret-token-123".to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{text}"))
    .registry
}

/// Another runner through the same supervisor (for a task of its own).
fn gated(sup: &Arc<Supervisor>) -> Runner {
    Runner::new(Client::new().unwrap(), Arc::new(TokioClock::default())).with_gate(sup.clone())
}

fn setup() -> (Arc<Supervisor>, Runner) {
    let client = Client::new().unwrap();
    let sup = Arc::new(Supervisor::new(client.clone()));
    let runner = Runner::new(client, Arc::new(TokioClock::default())).with_gate(sup.clone());
    (sup, runner)
}

async fn route(
    runner: &Runner,
    reg: &Registry,
    model: Option<&str>,
    notices: Option<&Mutex<Vec<String>>>,
) -> Result<Routed, RunError> {
    let chain = reg
        .chain(None, model.map(|m| (m, SelectionSource::User)))
        .unwrap();
    let note = |s: &str| {
        if let Some(n) = notices {
            n.lock().unwrap().push(s.to_string());
        }
    };
    let turn = Turn {
        registry: reg,
        chain: &chain,
        request: ChatRequest {
            messages: vec![Message::user("hi")],
            stream: true,
            ..Default::default()
        },
        session: None,
        pinned: Vec::new(),
        agent: None,
        on_notice: Some(&note),
    };
    runner.run(turn).await
}

async fn text_of(mut r: Routed) -> String {
    let mut c = Collected::default();
    while let Some(ev) = r.stream.next().await {
        c.apply(&ev.unwrap());
    }
    c.text
}

fn spawned(log: &Path) -> Vec<(u32, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pid, name) = l.split_once(' ')?;
            Some((pid.parse().ok()?, name.to_string()))
        })
        .collect()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_once_for_twenty_concurrent_first_requests_then_stops_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spawns.log");
    let port = free_port();
    let reg = registry(
        &service(
            "alpha",
            port,
            &log,
            &["--load-ms", "300"],
            "idleStopMs: 600,",
            "maxConcurrent: 0,",
        ),
        "alpha/m",
        &[],
    );
    let (sup, runner) = setup();
    let notices = Mutex::new(Vec::new());
    let turns = (0..20).map(|_| async {
        let r = route(&runner, &reg, None, Some(&notices)).await.unwrap();
        text_of(r).await
    });
    let texts = futures_util::future::join_all(turns).await;
    for t in &texts {
        assert!(t.starts_with("from alpha"), "{t}");
    }
    let spawns = spawned(&log);
    assert_eq!(
        spawns.len(),
        1,
        "one spawn for 20 concurrent first requests: {spawns:?}"
    );
    let pid = spawns[0].0;
    assert!(alive(pid));
    let view = sup.running();
    assert_eq!(view[0].state, "running");
    assert_eq!(view[0].starts, 1);
    // Idle stop after the last lease (600 ms).
    eventually("the idle server stopped", || !alive(pid)).await;
    assert_eq!(sup.running()[0].state, "stopped");
    // The next request starts it again.
    let r = route(&runner, &reg, None, None).await.unwrap();
    assert!(text_of(r).await.starts_with("from alpha"));
    assert_eq!(spawned(&log).len(), 2);
    sup.shutdown().await;
    let last = spawned(&log)[1].0;
    assert!(!alive(last), "shutdown left the server running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_someone_else_runs_is_used_and_never_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spawns.log");
    let theirs = FakeServer::start(|req| {
        if req.path.ends_with("/models") {
            return Reply::json(200, r#"{"object":"list","data":[{"id":"m"}]}"#);
        }
        Reply::sse([
            "data: {\"choices\":[{\"delta\":{\"content\":\"from theirs\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        ])
    })
    .await;
    let port = theirs.addr.port();
    let reg = registry(
        &service("alpha", port, &log, &[], "idleStopMs: 100,", ""),
        "alpha/m",
        &[],
    );
    let (sup, runner) = setup();
    let r = route(&runner, &reg, None, None).await.unwrap();
    assert_eq!(text_of(r).await, "from theirs");
    assert!(
        spawned(&log).is_empty(),
        "spawned although a server answered"
    );
    assert_eq!(sup.running()[0].state, "external");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Not adopted: no idle stop, still used.
    assert_eq!(sup.running()[0].state, "external");
    let r = route(&runner, &reg, None, None).await.unwrap();
    assert_eq!(text_of(r).await, "from theirs");
    assert!(
        !sup.unload("alpha").await,
        "unloaded a server clawgate did not start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_gets_ready_fails_and_its_output_stays_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spawns.log");
    let port = free_port();
    let reg = registry(
        &service(
            "alpha",
            port,
            &log,
            &["--load-ms", "600000"],
            "readyTimeoutMs: 800, env: { FAKE_SECRET: \"${FAKE_SECRET_SRC}\" },",
            "",
        )
        .replace("readyTimeoutMs: 20000, ", ""),
        "alpha/m",
        &[],
    );
    let (_sup, runner) = setup();
    let err = route(&runner, &reg, None, None)
        .await
        .err()
        .expect("must fail");
    let text = err.to_string();
    assert!(text.contains("not ready after 800 ms"), "{text}");
    assert!(text.contains("localService.readyTimeoutMs"), "{text}");
    assert!(text.contains("Loading model"), "{text}");
    // The server's own output stays in the gateway's log: a client is
    // told where to look, not what it printed.
    assert!(
        text.contains("its last output is in the gateway's log"),
        "{text}"
    );
    assert!(!text.contains("loading weights"), "{text}");
    assert!(!text.contains("super-secret-token-123"), "{text}");
    let pid = spawned(&log)[0].0;
    eventually("the unready server was stopped", || !alive(pid)).await;
    // A request right after is answered from memory, not by a new spawn.
    let again = route(&runner, &reg, None, None)
        .await
        .err()
        .expect("must fail");
    assert!(again.to_string().contains("not ready after 800 ms"));
    assert_eq!(spawned(&log).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_group_members_never_run_together() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spawns.log");
    let (pa, pb) = (free_port(), free_port());
    let slow = ["--chunks", "8", "--chunk-ms", "60"];
    let providers = format!(
        "{}\n{}",
        service("alpha", pa, &log, &slow, "group: \"gpu\",", ""),
        service("beta", pb, &log, &slow, "group: \"gpu\",", "")
    );
    let reg = registry(&providers, "alpha/m", &[]);
    let (sup, runner) = setup();
    // alpha streams; beta is asked for while alpha's answer is under way.
    let mut a = route(&runner, &reg, Some("alpha/m"), None).await.unwrap();
    let first = a.stream.next().await.unwrap().unwrap();
    let mut a_text = Collected::default();
    a_text.apply(&first);
    let b = tokio::spawn({
        let reg = reg.clone();
        let runner = gated(&sup);
        async move {
            let r = route(&runner, &reg, Some("beta/m"), None).await.unwrap();
            text_of(r).await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spawns = spawned(&log);
    assert_eq!(
        spawns.len(),
        1,
        "beta started while alpha streamed: {spawns:?}"
    );
    let alpha_pid = spawns[0].0;
    assert!(alive(alpha_pid));
    while let Some(ev) = a.stream.next().await {
        a_text.apply(&ev.unwrap());
    }
    assert_eq!(a_text.text, "from alpha 1 2 3 4 5 6 7");
    drop(a);
    let b_text = b.await.unwrap();
    assert_eq!(b_text, "from beta 1 2 3 4 5 6 7");
    let spawns = spawned(&log);
    assert_eq!(spawns.len(), 2);
    assert!(!alive(alpha_pid), "alpha still runs beside beta");
    assert!(alive(spawns[1].0));
    let views = sup.running();
    let state = |p: &str| views.iter().find(|v| v.provider == p).unwrap().state;
    assert_eq!((state("alpha"), state("beta")), ("stopped", "running"));
    // And back: alpha answers again, beta is stopped for it.
    let r = route(&runner, &reg, Some("alpha/m"), None).await.unwrap();
    assert!(text_of(r).await.starts_with("from alpha"));
    assert!(!alive(spawns[1].0));
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_spills_to_the_next_candidate_and_the_last_one_waits() {
    let release = Arc::new(tokio::sync::Notify::new());
    let hold = release.clone();
    let busy = FakeServer::start(move |_| {
        Reply::new(200)
            .header("content-type", "text/event-stream")
            .bytes("data: {\"choices\":[{\"delta\":{\"content\":\"slow\"}}]}\n\n")
            .wait(hold.clone())
            .bytes("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
    })
    .await;
    let spare = FakeServer::start(|_| {
        Reply::sse([
            "data: {\"choices\":[{\"delta\":{\"content\":\"spare\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        ])
    })
    .await;
    let providers = format!(
        r#"busy: {{ baseUrl: "{}", maxConcurrent: 1, spillAfterMs: 200, models: [{{ id: "m" }}] }},
           spare: {{ baseUrl: "{}", models: [{{ id: "m" }}] }},"#,
        busy.base_url(),
        spare.base_url()
    );
    let reg = registry(&providers, "busy/m", &["spare/m"]);
    let (sup, runner) = setup();
    let first = route(&runner, &reg, None, None).await.unwrap();
    assert_eq!(first.served.reference, "busy/m");
    // The slot is taken: the next request waits 200 ms, then spills.
    let second = route(&runner, &reg, None, None).await.unwrap();
    assert_eq!(second.served.reference, "spare/m");
    let skipped = second.attempts[0].skipped.clone().unwrap();
    assert!(skipped.contains("spillAfterMs"), "{skipped}");
    assert!(skipped.contains("maxConcurrent 1"), "{skipped}");
    assert_eq!(text_of(second).await, "spare");
    // Asked for explicitly, busy/m is the last candidate: it waits its turn.
    let third = tokio::spawn({
        let reg = reg.clone();
        let runner = gated(&sup);
        async move {
            let r = route(&runner, &reg, Some("busy/m"), None).await.unwrap();
            (r.served.reference.clone(), r.queued(), text_of(r).await)
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !third.is_finished(),
        "the last candidate did not wait for its slot"
    );
    let q = sup.queues();
    assert_eq!(
        (q[0].provider.as_str(), q[0].waiting, q[0].spilled_total),
        ("busy", 1, 1)
    );
    // Let every held answer finish from now on.
    let pump = tokio::spawn(async move {
        loop {
            release.notify_waiters();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(text_of(first).await, "slow");
    let (served, queued, text) = third.await.unwrap();
    pump.abort();
    assert_eq!(served, "busy/m");
    assert!(queued >= Duration::from_millis(300), "{queued:?}");
    assert_eq!(text, "slow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loading_server_is_waited_for_with_a_progress_notice() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = calls.clone();
    let server = FakeServer::start(move |_| {
        if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3 {
            return Reply::json(
                503,
                r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#,
            );
        }
        Reply::sse([
            "data: {\"choices\":[{\"delta\":{\"content\":\"loaded\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        ])
    })
    .await;
    let spare = FakeServer::start(|_| Reply::json(500, "{}")).await;
    let providers = format!(
        r#"llama: {{ baseUrl: "{}", models: [{{ id: "m" }}] }},
           spare: {{ baseUrl: "{}", models: [{{ id: "m" }}] }},"#,
        server.base_url(),
        spare.base_url()
    );
    let reg = registry(&providers, "llama/m", &["spare/m"]);
    let (_sup, runner) = setup();
    let notices = Mutex::new(Vec::new());
    let r = route(&runner, &reg, None, Some(&notices)).await.unwrap();
    assert_eq!(
        r.served.reference, "llama/m",
        "a loading server is not failed over"
    );
    assert_eq!(text_of(r).await, "loaded");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert!(spare.requests().is_empty());
    let notices = notices.lock().unwrap().clone();
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("waiting for llama/m to load")),
        "{notices:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_that_waits_too_long_spills_to_the_next_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spawns.log");
    let (pa, pb) = (free_port(), free_port());
    let slow = ["--chunks", "20", "--chunk-ms", "50"];
    let spare = FakeServer::start(|_| {
        Reply::sse([
            "data: {\"choices\":[{\"delta\":{\"content\":\"spare\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        ])
    })
    .await;
    let providers = format!(
        "{}\n{}\nspare: {{ baseUrl: \"{}\", models: [{{ id: \"m\" }}] }},",
        service("alpha", pa, &log, &slow, "group: \"gpu\",", ""),
        service(
            "beta",
            pb,
            &log,
            &slow,
            "group: \"gpu\",",
            "spillAfterMs: 150,"
        ),
        spare.base_url()
    );
    let reg = registry(&providers, "beta/m", &["spare/m"]);
    let (sup, runner) = setup();
    let mut a = route(&runner, &reg, Some("alpha/m"), None).await.unwrap();
    assert!(a.stream.next().await.unwrap().is_ok());
    // beta's chain is beta → spare: the swap would wait ~1 s for alpha.
    let r = route(&runner, &reg, None, None).await.unwrap();
    assert_eq!(r.served.reference, "spare/m");
    let why = r.attempts[0].skipped.clone().unwrap();
    assert!(
        why.contains("alpha to finish (swap group)") && why.contains("spillAfterMs"),
        "{why}"
    );
    assert_eq!(text_of(r).await, "spare");
    // alpha was not disturbed and beta never started.
    while let Some(ev) = a.stream.next().await {
        ev.unwrap();
    }
    assert_eq!(spawned(&log).len(), 1);
    // The group is not left draining: alpha still takes requests at once.
    drop(a);
    let r = route(&runner, &reg, Some("alpha/m"), None).await.unwrap();
    assert!(
        r.starting() < Duration::from_millis(100),
        "{:?}",
        r.starting()
    );
    drop(text_of(r).await);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_starts_a_service_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spawns.log");
    let port = free_port();
    let reg = Arc::new(registry(
        &service(
            "alpha",
            port,
            &log,
            &["--load-ms", "200"],
            "warmUp: true,",
            "",
        ),
        "alpha/m",
        &[],
    ));
    let (sup, runner) = setup();
    sup.warm_up(reg.clone());
    eventually("warm-up started the server", || {
        sup.running().first().is_some_and(|v| v.state == "running")
    })
    .await;
    let r = route(&runner, &reg, None, None).await.unwrap();
    assert!(text_of(r).await.starts_with("from alpha"));
    assert_eq!(spawned(&log).len(), 1);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_a_changed_server_and_stops_a_removed_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spawns.log");
    let port = free_port();
    let v1 = registry(&service("alpha", port, &log, &[], "", ""), "alpha/m", &[]);
    let (sup, runner) = setup();
    let r = route(&runner, &v1, None, None).await.unwrap();
    assert_eq!(text_of(r).await, "from alpha 1 2");
    let first = spawned(&log)[0].0;
    // The same provider with other arguments: another name, and another
    // port (a server restarted on the same port is not what this tests).
    let port2 = free_port();
    let v2 = registry(
        &service("alpha", port2, &log, &[], "", "").replace(
            "\"alpha\", \"--spawn-log\"",
            "\"alpha-v2\", \"--spawn-log\"",
        ),
        "alpha/m",
        &[],
    );
    sup.retire_missing(&v2);
    let r = route(&runner, &v2, None, None).await.unwrap();
    assert_eq!(text_of(r).await, "from alpha-v2 1 2");
    assert!(
        !alive(first),
        "the old server still runs beside the new one"
    );
    let second = spawned(&log)[1].0;
    assert!(alive(second));
    // The provider removed: its server stops.
    let v3 = registry(
        r#"other: { baseUrl: "http://127.0.0.1:9/v1", models: [{ id: "m" }] },"#,
        "other/m",
        &[],
    );
    sup.retire_missing(&v3);
    eventually("the removed provider's server stopped", || !alive(second)).await;
    assert!(sup.running().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_queue_depth_is_what_each_server_runs_at_once() {
    let models = |owner: &'static str, extra: &'static str| {
        move |r: &clawgate_testkit::Recorded| {
            if r.path == "/props" && owner == "llamacpp" {
                return Reply::json(
                    200,
                    r#"{"default_generation_settings":{"n_ctx":4096},"total_slots":2}"#,
                );
            }
            if r.path == "/v1/models" {
                return Reply::json(
                    200,
                    &format!(
                        r#"{{"object":"list","data":[{{"id":"m","object":"model","owned_by":"{owner}"{extra}}}]}}"#
                    ),
                );
            }
            Reply::json(404, "{}")
        }
    };
    let llama = FakeServer::start(models("llamacpp", r#","meta":{"n_ctx":4096}"#)).await;
    let lmstudio = FakeServer::start(models("organization_owner", "")).await;
    let vllm = FakeServer::start(models("vllm", r#","max_model_len":32768"#)).await;
    let litellm = FakeServer::start(models("openai", "")).await;
    let providers = format!(
        r#"llama: {{ baseUrl: "{}", models: [{{ id: "m" }}] }},
           lmstudio: {{ baseUrl: "{}", models: [{{ id: "m" }}] }},
           vllm: {{ baseUrl: "{}", models: [{{ id: "m" }}] }},
           litellm: {{ baseUrl: "{}", models: [{{ id: "m" }}] }},
           pinned: {{ baseUrl: "{}", maxConcurrent: 7, models: [{{ id: "m" }}] }},
           unlimited: {{ baseUrl: "{}", maxConcurrent: 0, models: [{{ id: "m" }}] }},"#,
        llama.base_url(),
        lmstudio.base_url(),
        vllm.base_url(),
        litellm.base_url(),
        llama.base_url(),
        llama.base_url(),
    );
    let reg = Arc::new(registry(&providers, "llama/m", &[]));
    let (sup, runner) = setup();
    sup.learn_all(&reg);
    eventually("every server asked", || {
        ["llama", "lmstudio", "vllm", "litellm"]
            .iter()
            .all(|p| runner.served_context(p, "m").is_some() || *p == "lmstudio" || *p == "litellm")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let limit = |id: &str| sup.concurrency_limit(reg.provider(id).unwrap());
    assert_eq!(limit("llama"), Some(2), "llama.cpp: its slots");
    assert_eq!(
        limit("lmstudio"),
        Some(4),
        "LM Studio: its default parallelism"
    );
    assert_eq!(limit("vllm"), None, "vLLM batches");
    assert_eq!(
        limit("litellm"),
        None,
        "an unrecognised server queues itself"
    );
    assert_eq!(limit("pinned"), Some(7));
    assert_eq!(limit("unlimited"), None);
    let hosted = load_text(Path::new("h.json5"), "{}", &|_| None)
        .unwrap()
        .registry;
    assert_eq!(
        sup.concurrency_limit(hosted.provider("anthropic").unwrap()),
        None,
        "hosted: no limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_server_that_vanishes_is_replaced_by_this_providers_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spawns.log");
    // Each answer closes its connection: once it is dropped, nothing of
    // it answers any more (no pooled connection lives on).
    let theirs = FakeServer::start(|req| {
        if req.path.ends_with("/models") {
            return Reply::json(200, r#"{"object":"list","data":[{"id":"m"}]}"#)
                .header("connection", "close");
        }
        Reply::sse([
            "data: {\"choices\":[{\"delta\":{\"content\":\"from theirs\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        ])
        .header("connection", "close")
    })
    .await;
    let port = theirs.addr.port();
    let reg = registry(&service("alpha", port, &log, &[], "", ""), "alpha/m", &[]);
    let (sup, runner) = setup();
    let r = route(&runner, &reg, None, None).await.unwrap();
    assert_eq!(text_of(r).await, "from theirs");
    assert_eq!(sup.running()[0].state, "external");
    // Whoever ran it stops it.
    drop(theirs);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // The next request finds it gone and starts this provider's own,
    // instead of failing into a cooldown.
    let r = route(&runner, &reg, None, None)
        .await
        .expect("answered by the provider's own server");
    let text = text_of(r).await;
    assert!(!text.contains("from theirs"), "{text}");
    assert_eq!(spawned(&log).len(), 1);
    assert_eq!(sup.running()[0].state, "running");
}

/// Issue 22 (10): the first requests to a llama.cpp server behind a
/// `localService` queue on the slots `/props` reports (2), not on the
/// default of 4 taken before the server said how many it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_burst_to_a_started_server_queues_on_its_reported_slots() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let arrived = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (a, rel) = (arrived.clone(), release.clone());
    let server = FakeServer::start(move |r| match r.path.as_str() {
        "/props" => Reply::json(
            200,
            r#"{"default_generation_settings":{"n_ctx":4096},"total_slots":2}"#,
        ),
        "/v1/models" => Reply::json(
            200,
            r#"{"object":"list","data":[{"id":"m","object":"model","owned_by":"llamacpp","meta":{"n_ctx":4096}}]}"#,
        ),
        "/v1/chat/completions" => {
            a.fetch_add(1, Ordering::SeqCst);
            Reply::new(200)
                .header("content-type", "text/event-stream")
                .wait(rel.clone())
                .bytes("data: {\"choices\":[{\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
        }
        _ => Reply::json(404, "{}"),
    })
    .await;
    // The server already answers: the localService is never spawned, but
    // the provider is one clawgate would start (default limit 4 until the
    // server says).
    let providers = format!(
        r#"llama: {{ baseUrl: "{}", localService: {{ command: "/bin/false" }}, models: [{{ id: "m" }}] }},"#,
        server.base_url()
    );
    let reg = registry(&providers, "llama/m", &[]);
    let (_sup, runner) = setup();
    let (reg, runner) = (Arc::new(reg), Arc::new(runner));
    let all = tokio::spawn({
        let (reg, runner) = (reg.clone(), runner.clone());
        async move {
            let burst = (0..6).map(|_| async {
                let r = route(&runner, &reg, None, None).await.unwrap();
                text_of(r).await
            });
            futures_util::future::join_all(burst).await
        }
    });
    eventually("two requests reached the server", || {
        arrived.load(Ordering::SeqCst) >= 2
    })
    .await;
    // Time enough for any more to arrive if the queue let them through.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        arrived.load(Ordering::SeqCst),
        2,
        "requests in flight beyond the server's 2 slots"
    );
    // Let them all finish, two at a time.
    while !all.is_finished() {
        release.notify_waiters();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let texts = all.await.unwrap();
    assert!(texts.iter().all(|t| t == "ok"), "{texts:?}");
    assert_eq!(arrived.load(Ordering::SeqCst), 6);
}
