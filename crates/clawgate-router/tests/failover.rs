//! FO-1..7 end to end against fault-injecting upstreams on 127.0.0.1: each
//! fault on each of the three protocols, cooldowns and overload retry on an
//! injected clock, credential rotation, data policy, exhaustion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawgate_catalog::{load_text, Registry, SelectionSource};
use clawgate_router::clock::{Clock, ManualClock, TokioClock};
use clawgate_router::{ErrorClass, RunError, Runner, Turn, OVERLOAD_NOTICE};
use clawgate_testkit::{FakeServer, Recorded, Reply};
use clawgate_wire::{ChatRequest, Client, Collected, Message};
use serde_json::json;

const APIS: [&str; 3] = [
    "openai-completions",
    "openai-responses",
    "anthropic-messages",
];

fn ok_reply(api: &str, text: &str) -> Reply {
    match api {
        "openai-completions" => Reply::sse([
            format!(
                "data: {}\n\n",
                json!({"choices":[{"delta":{"content":text},"finish_reason":"stop"}]})
            ),
            "data: [DONE]\n\n".to_string(),
        ]),
        "openai-responses" => Reply::sse([
            format!(
                "event: response.output_text.delta\ndata: {}\n\n",
                json!({"delta":text})
            ),
            format!(
                "event: response.completed\ndata: {}\n\n",
                json!({"response":{"status":"completed"}})
            ),
        ]),
        _ => Reply::sse([
            format!(
                "event: content_block_delta\ndata: {}\n\n",
                json!({"index":0,"delta":{"type":"text_delta","text":text}})
            ),
            format!("event: message_stop\ndata: {}\n\n", json!({})),
        ]),
    }
}

fn first_chunk(api: &str, text: &str) -> String {
    match api {
        "openai-completions" => format!(
            "data: {}\n\n",
            json!({"choices":[{"delta":{"content":text}}]})
        ),
        "openai-responses" => format!(
            "event: response.output_text.delta\ndata: {}\n\n",
            json!({"delta":text})
        ),
        _ => format!(
            "event: content_block_delta\ndata: {}\n\n",
            json!({"index":0,"delta":{"type":"text_delta","text":text}})
        ),
    }
}

fn registry(primary: &str, backup: &str, api: &str, extra: &str) -> Registry {
    let text = format!(
        r#"{{
  agents: {{ defaults: {{ model: {{ primary: "primary/m", fallbacks: ["backup/m"] }} }} {extra} }},
  models: {{ mode: "replace", providers: {{
    primary: {{ baseUrl: "{primary}", api: "{api}", apiKey: "sk-primary", timeoutSeconds: 1, models: [{{ id: "m" }}] }},
    backup: {{ baseUrl: "{backup}", api: "{api}", apiKey: "sk-backup", models: [{{ id: "m" }}] }},
  }} }},
}}"#
    );
    load_text(Path::new("t.json5"), &text, &|_| None)
        .unwrap()
        .registry
}

fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![Message::user("hi")],
        stream: true,
        ..Default::default()
    }
}

async fn run_turn(
    runner: &Runner,
    reg: &Registry,
    requested: Option<&str>,
) -> Result<
    (
        String,
        Collected,
        Option<ErrorClass>,
        Vec<clawgate_router::Attempt>,
    ),
    RunError,
> {
    let chain = reg
        .chain(None, requested.map(|r| (r, SelectionSource::User)))
        .unwrap();
    let turn = Turn {
        registry: reg,
        chain: &chain,
        request: request(),
        session: Some("s1".into()),
        agent: None,
        on_notice: None,
        pinned: Vec::new(),
    };
    let mut routed = runner.run(turn).await?;
    let mut c = Collected::default();
    let mut failure = None;
    while let Some(ev) = routed.stream.next().await {
        match ev {
            Ok(ev) => c.apply(&ev),
            Err(f) => {
                failure = Some(f.class);
                break;
            }
        }
    }
    Ok((routed.served.reference.clone(), c, failure, routed.attempts))
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Refused,
    ResetBeforeHeaders,
    ResetMidStream,
    RateLimitRetryAfter,
    RateLimit,
    S500,
    S502,
    Loading503,
    S529,
    S401,
    S402,
    S404,
    Overflow400,
    Other400,
    Hang,
    SlowDrip,
    MalformedSse,
    EmptyBody,
}

/// (fault, class of the first attempt, chain advanced, served by)
const MATRIX: &[(Fault, Option<ErrorClass>, bool)] = &[
    (Fault::Refused, Some(ErrorClass::Unreachable), true),
    (
        Fault::ResetBeforeHeaders,
        Some(ErrorClass::Unreachable),
        true,
    ),
    (Fault::ResetMidStream, None, false),
    (
        Fault::RateLimitRetryAfter,
        Some(ErrorClass::RateLimit),
        true,
    ),
    (Fault::RateLimit, Some(ErrorClass::RateLimit), true),
    (Fault::S500, Some(ErrorClass::ServerError), true),
    (Fault::S502, Some(ErrorClass::ServerError), true),
    // LOC-2: waited for within the provider timeout, then a timeout of
    // this candidate (fail over), not an overloaded chain.
    (Fault::Loading503, Some(ErrorClass::Timeout), true),
    (Fault::S529, Some(ErrorClass::Overloaded), true),
    (Fault::S401, Some(ErrorClass::Auth), true),
    (Fault::S402, Some(ErrorClass::Billing), true),
    (Fault::S404, Some(ErrorClass::ModelNotFound), true),
    (Fault::Overflow400, Some(ErrorClass::ContextOverflow), false),
    (Fault::Other400, Some(ErrorClass::Format), false),
    (Fault::Hang, Some(ErrorClass::Timeout), true),
    (Fault::SlowDrip, None, false),
    (Fault::MalformedSse, Some(ErrorClass::ServerError), true),
    // The connection closed without an answer: the server went away.
    (Fault::EmptyBody, Some(ErrorClass::Unreachable), true),
];

fn fault_reply(f: Fault, api: &str) -> Reply {
    let err = |status: u16, body: &str| Reply::json(status, body);
    match f {
        Fault::Refused => unreachable!(),
        Fault::ResetBeforeHeaders => Reply::new(200).reset(),
        Fault::ResetMidStream => Reply::sse([first_chunk(api, "partial ")]).close(),
        Fault::RateLimitRetryAfter => err(
            429,
            r#"{"error":{"message":"Rate limit reached","type":"rate_limit_error"}}"#,
        )
        .header("retry-after", "7"),
        Fault::RateLimit => err(429, r#"{"error":{"message":"Too many requests"}}"#),
        Fault::S500 => err(
            500,
            r#"{"error":{"message":"internal","type":"server_error"}}"#,
        ),
        Fault::S502 => Reply::new(502).bytes("<html>Bad Gateway</html>"),
        Fault::Loading503 => err(
            503,
            r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#,
        ),
        Fault::S529 => err(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
        Fault::S401 => err(
            401,
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
        ),
        Fault::S402 => err(
            402,
            r#"{"error":{"message":"Insufficient credits","code":402}}"#,
        ),
        Fault::S404 => err(
            404,
            r#"{"error":{"message":"model 'm' not found","type":"not_found_error"}}"#,
        ),
        Fault::Overflow400 => err(
            400,
            r#"{"error":{"code":400,"message":"request (5000 tokens) exceeds the available context size (1024 tokens), try increasing it","type":"exceed_context_size_error"}}"#,
        ),
        Fault::Other400 => err(
            400,
            r#"{"error":{"message":"Unsupported parameter: 'top_k'","type":"invalid_request_error"}}"#,
        ),
        Fault::Hang => Reply::new(200)
            .header("content-type", "text/event-stream")
            .sleep(Duration::from_secs(30)),
        Fault::SlowDrip => {
            let mut r = ok_reply(api, "drip");
            let steps = std::mem::take(&mut r.steps);
            for s in steps {
                r.steps
                    .push(clawgate_testkit::Step::Sleep(Duration::from_millis(40)));
                r.steps.push(s);
            }
            r
        }
        Fault::MalformedSse => Reply::sse(["data: {not json\n\n".to_string()]),
        Fault::EmptyBody => Reply::new(200).header("content-type", "text/event-stream"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fo_2_fault_matrix_on_every_protocol() {
    let mut failures = Vec::new();
    for api in APIS {
        for &(fault, class, advanced) in MATRIX {
            let a = api.to_string();
            let backup = FakeServer::start(move |_| ok_reply(&a, "from backup")).await;
            let a = api.to_string();
            let primary = FakeServer::start(move |_| fault_reply(fault, &a)).await;
            let primary_url = match fault {
                Fault::Refused => "http://127.0.0.1:9/v1".to_string(),
                _ => primary.base_url(),
            };
            let reg = registry(&primary_url, &backup.base_url(), api, "");
            let runner = Runner::new(Client::new().unwrap(), Arc::new(TokioClock::default()));
            let got = run_turn(&runner, &reg, None).await;
            let label = format!("{api} {fault:?}");
            match (got, advanced) {
                (Ok((served, c, failure, attempts)), true) => {
                    if served != "backup/m" || c.text != "from backup" {
                        failures.push(format!("{label}: served {served} text {:?}", c.text));
                    }
                    if attempts.first().and_then(|a| a.class) != class {
                        failures.push(format!("{label}: first attempt {:?}", attempts.first()));
                    }
                    if failure.is_some() {
                        failures.push(format!("{label}: unexpected stream failure"));
                    }
                }
                (Ok((served, c, failure, _)), false) => {
                    if served != "primary/m" || !backup.requests().is_empty() {
                        failures.push(format!("{label}: chain advanced to {served}"));
                    }
                    match fault {
                        // FO-5: output started, so no switch; the turn ends with an error.
                        Fault::ResetMidStream => {
                            if c.text != "partial " || failure != Some(ErrorClass::Unreachable) {
                                failures.push(format!(
                                    "{label}: text {:?} failure {failure:?}",
                                    c.text
                                ));
                            }
                        }
                        _ => {
                            if c.text != "drip" || failure.is_some() {
                                failures.push(format!(
                                    "{label}: text {:?} failure {failure:?}",
                                    c.text
                                ));
                            }
                        }
                    }
                }
                (
                    Err(RunError::Surfaced {
                        class: got,
                        attempts,
                        ..
                    }),
                    false,
                ) => {
                    if Some(got) != class || attempts.len() != 1 || !backup.requests().is_empty() {
                        failures.push(format!(
                            "{label}: surfaced {got:?} after {} attempts",
                            attempts.len()
                        ));
                    }
                }
                (other, _) => failures.push(format!("{label}: unexpected {:?}", other.err())),
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn fo_1_explicit_model_on_dead_provider_is_strict() {
    let backup = FakeServer::start(|_| ok_reply("openai-completions", "x")).await;
    let reg = registry(
        "http://127.0.0.1:9/v1",
        &backup.base_url(),
        "openai-completions",
        "",
    );
    let runner = Runner::new(Client::new().unwrap(), Arc::new(TokioClock::default()));
    let err = run_turn(&runner, &reg, Some("primary/m"))
        .await
        .err()
        .unwrap();
    let RunError::Exhausted(x) = &err else {
        panic!("{err}")
    };
    assert_eq!(x.attempts.len(), 1);
    assert!(
        backup.requests().is_empty(),
        "no fallback for an explicit selection"
    );
    let text = err.to_string();
    assert!(text.starts_with("all candidates failed (1 attempts)\n  1. primary/m [primary:default] — unreachable: connection failed: connection refused (is the server running?)"), "{text}");
    assert!(!text.contains("127.0.0.1"), "no upstream URL: {text}");
    assert!(text.ends_with("soonest cooldown ends in 5s"), "{text}");
}

#[tokio::test]
async fn fo_3_cooldown_skips_then_expires_on_injected_clock() {
    let primary = FakeServer::start(|_| Reply::json(500, r#"{"error":{"message":"boom"}}"#)).await;
    let backup = FakeServer::start(|_| ok_reply("openai-completions", "b")).await;
    let reg = registry(
        &primary.base_url(),
        &backup.base_url(),
        "openai-completions",
        "",
    );
    let clock = Arc::new(ManualClock::default());
    let runner = Runner::new(Client::new().unwrap(), clock.clone());
    let (served, ..) = run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!(served, "backup/m");
    assert_eq!(primary.requests().len(), 1);
    assert!(runner.cooldowns().is_empty(), "one 500 is no cooldown");
    let (served, ..) = run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!(served, "backup/m");
    assert_eq!(primary.requests().len(), 2);
    // Within 30 s the primary is skipped without a request.
    clock.advance(Duration::from_secs(29));
    let (served, _, _, attempts) = run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!(served, "backup/m");
    assert_eq!(primary.requests().len(), 2);
    assert!(
        attempts[0]
            .skipped
            .as_deref()
            .unwrap()
            .starts_with("cooling down after server_error for 1s"),
        "{:?}",
        attempts[0]
    );
    let cd = runner.cooldowns();
    assert_eq!(cd.len(), 1);
    // After expiry one probe tries it again; its failure cools for 60 s.
    clock.advance(Duration::from_secs(2));
    run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!(primary.requests().len(), 3);
    assert_eq!(runner.cooldowns()[0].1, Duration::from_secs(60));
}

#[tokio::test]
async fn fo_4_overload_retries_whole_chain_with_backoff_and_one_notice() {
    // Overloaded, not loading: a loading server is waited for (LOC-2).
    let s = FakeServer::start(|_| {
        Reply::json(
            503,
            r#"{"error":{"message":"Service temporarily overloaded","type":"unavailable_error"}}"#,
        )
    })
    .await;
    let reg = registry(&s.base_url(), &s.base_url(), "openai-completions", "");
    let clock = Arc::new(ManualClock::default());
    let runner = Runner::new(Client::new().unwrap(), clock.clone());
    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let n2 = notices.clone();
    let on_notice = move |m: &str| n2.lock().unwrap().push(m.to_string());
    let chain = reg.chain(None, None).unwrap();
    let turn = Turn {
        registry: &reg,
        chain: &chain,
        request: request(),
        session: None,
        agent: None,
        on_notice: Some(&on_notice),
        pinned: Vec::new(),
    };
    let err = runner.run(turn).await.err().unwrap();
    let RunError::Exhausted(x) = err else {
        panic!()
    };
    assert_eq!(x.attempts.len(), 22, "11 passes over 2 candidates");
    let secs: Vec<f64> = clock.sleeps().iter().map(|d| d.as_secs_f64()).collect();
    assert_eq!(
        secs,
        [2.5, 5.0, 10.0, 20.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0]
    );
    assert_eq!(*notices.lock().unwrap(), vec![OVERLOAD_NOTICE.to_string()]);
    assert_eq!(s.requests().len(), 22);
}

#[tokio::test]
async fn fo_4_overload_then_recovery_answers() {
    let count = Arc::new(Mutex::new(0));
    let c2 = count.clone();
    let s = FakeServer::start(move |_| {
        let mut n = c2.lock().unwrap();
        *n += 1;
        if *n <= 4 {
            Reply::json(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
        } else {
            ok_reply("openai-completions", "finally")
        }
    })
    .await;
    let reg = registry(&s.base_url(), &s.base_url(), "openai-completions", "");
    let clock = Arc::new(ManualClock::default());
    let runner = Runner::new(Client::new().unwrap(), clock.clone());
    let (served, c, ..) = run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!((served.as_str(), c.text.as_str()), ("primary/m", "finally"));
    assert_eq!(clock.sleeps().len(), 2);
}

#[tokio::test]
async fn fo_3_credentials_rotate_and_stick_per_session() {
    let s = FakeServer::start(|r: &Recorded| {
        if r.header("authorization") == Some("Bearer sk-primary") {
            Reply::json(401, r#"{"error":{"message":"Incorrect API key provided"}}"#)
        } else {
            ok_reply("openai-completions", "second key")
        }
    })
    .await;
    let backup = FakeServer::start(|_| ok_reply("openai-completions", "backup")).await;
    let extra = r#"}, auth: { profiles: { "primary:work": { provider: "primary", apiKey: "sk-work" } }, order: { primary: ["primary:default", "primary:work"] }"#;
    let reg = registry(
        &s.base_url(),
        &backup.base_url(),
        "openai-completions",
        extra,
    );
    let runner = Runner::new(Client::new().unwrap(), Arc::new(TokioClock::default()));
    let (served, c, _, attempts) = run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!(
        (served.as_str(), c.text.as_str()),
        ("primary/m", "second key")
    );
    assert_eq!(attempts[0].class, Some(ErrorClass::Auth));
    assert_eq!(attempts[0].profile.as_deref(), Some("primary:default"));
    // Sticky: the next turn of the session starts with the working profile.
    run_turn(&runner, &reg, None).await.unwrap();
    let reqs = s.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].header("authorization"), Some("Bearer sk-work"));
    assert!(backup.requests().is_empty());
}

#[tokio::test]
async fn sec_6_local_only_skips_hosted_candidates() {
    let local = FakeServer::start(|_| ok_reply("openai-completions", "local")).await;
    let text = format!(
        r#"{{
  agents: {{ defaults: {{ model: {{ primary: "cloud/m", fallbacks: ["home/m"] }}, dataPolicy: "local-only" }} }},
  models: {{ mode: "replace", providers: {{
    cloud: {{ baseUrl: "https://example.invalid/v1", apiKey: "sk-x", models: [{{ id: "m" }}] }},
    home: {{ baseUrl: "{}", models: [{{ id: "m" }}] }},
  }} }},
}}"#,
        local.base_url()
    );
    let reg = load_text(Path::new("t.json5"), &text, &|_| None)
        .unwrap()
        .registry;
    let runner = Runner::new(Client::new().unwrap(), Arc::new(TokioClock::default()));
    let (served, _, _, attempts) = run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!(served, "home/m");
    assert_eq!(
        attempts[0].skipped.as_deref(),
        Some("dataPolicy local-only: endpoint is not local")
    );
    let chain = reg.chain(None, None).unwrap();
    let turn = Turn {
        registry: &reg,
        chain: &chain,
        request: request(),
        session: None,
        agent: None,
        on_notice: None,
        pinned: Vec::new(),
    };
    let routed = runner.run(turn).await.unwrap();
    assert_eq!(
        routed.fallback_notice().unwrap(),
        "answered by home/m (selected cloud/m: dataPolicy local-only: endpoint is not local)"
    );
    assert_eq!(routed.served.host, local.addr.to_string());
}

#[tokio::test]
async fn sec_6_local_only_judges_the_address_a_name_resolves_to() {
    // `looks-local.lan` claims to be on the LAN but resolves to a public
    // address: under local-only it is refused at connect (never dialled)
    // and the turn fails over to the loopback server.
    let local = FakeServer::start(|_| ok_reply("openai-completions", "local")).await;
    let dialled = Arc::new(Mutex::new(Vec::new()));
    let d = dialled.clone();
    let to: std::net::SocketAddr = local.addr;
    let hooks = clawgate_wire::guard::Hooks {
        lookup: Some(Arc::new(|name: &str| {
            (name == "looks-local.lan").then(|| vec!["93.184.216.34".parse().unwrap()])
        })),
        dial: Some(Arc::new(move |a| {
            d.lock().unwrap().push(a);
            to
        })),
        proxy: None,
    };
    let text = format!(
        r#"{{
  agents: {{ defaults: {{ model: {{ primary: "lan/m", fallbacks: ["home/m"] }}, dataPolicy: "local-only" }} }},
  models: {{ mode: "replace", providers: {{
    lan: {{ baseUrl: "http://looks-local.lan/v1", models: [{{ id: "m" }}] }},
    home: {{ baseUrl: "{}", models: [{{ id: "m" }}] }},
  }} }},
}}"#,
        local.base_url()
    );
    let reg = load_text(Path::new("t.json5"), &text, &|_| None)
        .unwrap()
        .registry;
    let runner = Runner::new(
        Client::with_hooks(hooks).unwrap(),
        Arc::new(TokioClock::default()),
    );
    let (served, _, _, attempts) = run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!(served, "home/m");
    assert_eq!(attempts[0].class, Some(ErrorClass::Blocked));
    assert_eq!(
        attempts[0].detail,
        "blocked: outbound guard: refused to connect to a public address; dataPolicy is \"local-only\"; set agents.defaults.dataPolicy: \"allow-hosted\" to allow it"
    );
    assert!(
        dialled.lock().unwrap().is_empty(),
        "the public address was never dialled"
    );
    assert_eq!(local.requests().len(), 1);

    // Without the policy the same name is a public endpoint, dialled.
    let open = text.replace(r#", dataPolicy: "local-only""#, "");
    let reg = load_text(Path::new("t.json5"), &open, &|_| None)
        .unwrap()
        .registry;
    let (served, _, _, _) = run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!(served, "lan/m");
    assert_eq!(dialled.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn sec_6_a_local_only_agent_whose_server_is_down_fails_clearly() {
    let port = clawgate_testkit::free_port();
    let text = format!(
        r#"{{
  agents: {{ defaults: {{ model: {{ primary: "home/m", fallbacks: ["cloud/m"] }}, dataPolicy: "local-only" }} }},
  models: {{ mode: "replace", providers: {{
    home: {{ baseUrl: "http://127.0.0.1:{port}/v1", models: [{{ id: "m" }}] }},
    cloud: {{ baseUrl: "https://example.invalid/v1", apiKey: "sk-x", models: [{{ id: "m" }}] }},
  }} }},
}}"#
    );
    let reg = load_text(Path::new("t.json5"), &text, &|_| None)
        .unwrap()
        .registry;
    let runner = Runner::new(Client::new().unwrap(), Arc::new(ManualClock::default()));
    let err = run_turn(&runner, &reg, None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("1. home/m [home:default] — unreachable"),
        "{err}"
    );
    assert!(
        err.contains("cloud/m — skipped: dataPolicy local-only: endpoint is not local"),
        "{err}"
    );
}

#[tokio::test]
async fn fo_6_exhaustion_lists_every_attempt_and_counts() {
    let a = FakeServer::start(|_| Reply::json(502, "bad gateway")).await;
    let b =
        FakeServer::start(|_| Reply::json(401, r#"{"error":{"message":"invalid api key"}}"#)).await;
    let reg = registry(&a.base_url(), &b.base_url(), "openai-completions", "");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::default());
    let runner = Runner::new(Client::new().unwrap(), clock);
    let err = run_turn(&runner, &reg, None).await.err().unwrap();
    let text = err.to_string();
    assert!(
        text.contains(
            "1. primary/m [primary:default] — server_error (HTTP 502): HTTP 502: bad gateway"
        ),
        "{text}"
    );
    assert!(
        text.contains("2. backup/m [backup:default] — auth (HTTP 401)"),
        "{text}"
    );
    assert_eq!(runner.metrics.failures().get("auth"), Some(&1));
    assert_eq!(
        runner
            .metrics
            .exhausted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn fo_3_short_retry_after_is_waited_for_once_long_one_is_not() {
    let count = Arc::new(Mutex::new(0));
    let c2 = count.clone();
    let s = FakeServer::start(move |r: &Recorded| {
        let mut n = c2.lock().unwrap();
        *n += 1;
        let long = r.body_str().contains("long");
        if *n == 1 || long {
            let ra = if long { "3600" } else { "7" };
            Reply::json(429, r#"{"error":{"message":"Rate limit reached"}}"#)
                .header("retry-after", ra)
        } else {
            ok_reply("openai-completions", "after wait")
        }
    })
    .await;
    let reg = registry(&s.base_url(), &s.base_url(), "openai-completions", "");
    let clock = Arc::new(ManualClock::default());
    let runner = Runner::new(Client::new().unwrap(), clock.clone());
    // Strict selection: nothing to fail over to, so the 7 s wait is taken.
    let (served, c, ..) = run_turn(&runner, &reg, Some("primary/m")).await.unwrap();
    assert_eq!(
        (served.as_str(), c.text.as_str()),
        ("primary/m", "after wait")
    );
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(7)]);
    // An hour-long Retry-After is not waited for: the turn fails with it.
    let runner = Runner::new(Client::new().unwrap(), clock.clone());
    let chain = reg
        .chain(None, Some(("primary/m", SelectionSource::User)))
        .unwrap();
    let mut req = request();
    req.messages = vec![Message::user("long")];
    let turn = Turn {
        registry: &reg,
        chain: &chain,
        request: req,
        session: None,
        agent: None,
        on_notice: None,
        pinned: Vec::new(),
    };
    let err = runner.run(turn).await.err().unwrap();
    assert!(
        err.to_string().contains("soonest cooldown ends in 3600s"),
        "{err}"
    );
    assert_eq!(clock.sleeps().len(), 1);
}

/// A port on 127.0.0.1 that refuses connections (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_burst_of_concurrent_failures_climbs_the_ladder_once() {
    let clock = Arc::new(ManualClock::default());
    let c2 = clock.clone();
    // Every request advances the clock a little and fails after a pause,
    // so all 50 are in flight when the first failure is counted.
    let primary = FakeServer::start(move |_| {
        c2.advance(Duration::from_millis(1));
        Reply::json(500, r#"{"error":{"message":"boom"}}"#).sleep(Duration::from_millis(300))
    })
    .await;
    let backup = FakeServer::start(|_| ok_reply("openai-completions", "b")).await;
    let reg = registry(
        &primary.base_url(),
        &backup.base_url(),
        "openai-completions",
        "",
    );
    let runner = Runner::new(Client::new().unwrap(), clock.clone());
    let turns = (0..50).map(|_| run_turn(&runner, &reg, None));
    for r in futures_util::future::join_all(turns).await {
        assert_eq!(r.unwrap().0, "backup/m");
    }
    assert_eq!(primary.requests().len(), 50);
    let cd = runner.cooldowns();
    assert_eq!(cd.len(), 1, "{cd:?}");
    assert!(
        cd[0].1 <= Duration::from_secs(30) && cd[0].1 > Duration::from_secs(29),
        "the first step of the ladder, not 5 min: {:?}",
        cd[0].1
    );
}

#[tokio::test]
async fn half_open_lets_one_probe_through_when_a_cooldown_ends() {
    let clock = Arc::new(ManualClock::default());
    let primary = FakeServer::start(|_| Reply::json(500, r#"{"error":{"message":"boom"}}"#)).await;
    let backup = FakeServer::start(|_| ok_reply("openai-completions", "b")).await;
    let reg = registry(
        &primary.base_url(),
        &backup.base_url(),
        "openai-completions",
        "",
    );
    let runner = Runner::new(Client::new().unwrap(), clock.clone());
    run_turn(&runner, &reg, None).await.unwrap();
    run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!(primary.requests().len(), 2);
    clock.advance(Duration::from_secs(31));
    // Two turns at once after expiry: one probes the primary, the other
    // goes straight to the backup.
    let (a, b) = tokio::join!(run_turn(&runner, &reg, None), run_turn(&runner, &reg, None));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(primary.requests().len(), 3, "exactly one probe");
    let skipped: Vec<_> = [&a.3, &b.3]
        .iter()
        .flat_map(|atts| atts.iter().filter_map(|x| x.skipped.clone()))
        .collect();
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("another request is probing")),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn a_strict_ref_is_tried_while_cooling_when_it_is_the_last_candidate() {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f2 = fail.clone();
    let primary = FakeServer::start(move |_| {
        if f2.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::json(500, r#"{"error":{"message":"boom"}}"#)
        } else {
            ok_reply("openai-completions", "back")
        }
    })
    .await;
    let reg = registry(
        &primary.base_url(),
        "http://127.0.0.1:9/v1",
        "openai-completions",
        "",
    );
    let clock = Arc::new(ManualClock::default());
    let runner = Runner::new(Client::new().unwrap(), clock.clone());
    for _ in 0..2 {
        let err = run_turn(&runner, &reg, Some("primary/m"))
            .await
            .err()
            .unwrap();
        let RunError::Exhausted(x) = err else {
            panic!()
        };
        assert!(x.attempts.iter().all(|a| a.skipped.is_none()));
    }
    assert_eq!(runner.cooldowns().len(), 1, "cooling now");
    // The server restarted: the strict ref is tried, not refused.
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    clock.advance(Duration::from_secs(3));
    let (served, c, ..) = run_turn(&runner, &reg, Some("primary/m")).await.unwrap();
    assert_eq!((served.as_str(), c.text.as_str()), ("primary/m", "back"));
    assert!(runner.cooldowns().is_empty(), "a success clears it");
}

#[tokio::test]
async fn a_local_server_that_is_not_running_is_unreachable_and_reprobed_when_it_starts() {
    let port = free_port();
    let backup = FakeServer::start(|_| ok_reply("openai-completions", "b")).await;
    let reg = registry(
        &format!("http://127.0.0.1:{port}/v1"),
        &backup.base_url(),
        "openai-completions",
        "",
    );
    let runner = Runner::new(Client::new().unwrap(), Arc::new(TokioClock::default()));
    let (served, _, _, attempts) = run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!(served, "backup/m");
    assert_eq!(attempts[0].class, Some(ErrorClass::Unreachable));
    let saved = runner.export_cooldowns(1_000_000);
    assert_eq!(saved.len(), 1);
    assert!(
        (1_004_000..=1_005_000).contains(&saved[0].until_unix_ms),
        "a short 5 s cooldown: {}",
        saved[0].until_unix_ms
    );
    // The next CLI run (a fresh runner with the saved cooldowns), after
    // the server has started: it is checked and used, not skipped.
    let primary = FakeServer::start_at(port, |_| ok_reply("openai-completions", "p")).await;
    let next = Runner::new(Client::new().unwrap(), Arc::new(TokioClock::default()));
    next.import_cooldowns(&saved, 1_000_500);
    let (served, ..) = run_turn(&next, &reg, None).await.unwrap();
    assert_eq!(served, "primary/m");
    assert_eq!(primary.requests().len(), 1);
}

/// What an observer was told: who served, reported input tokens, the
/// failure class, and whether the upstream wait fits in the total.
type Told = (String, Option<u64>, Option<ErrorClass>, bool);

/// Records what observers are told.
#[derive(Default)]
struct Seen(Mutex<Vec<Told>>);

impl clawgate_router::Observer for Seen {
    fn finished(&self, a: &clawgate_router::Finished<'_>) {
        self.0.lock().unwrap().push((
            a.served.reference.clone(),
            a.usage.map(|u| u.input),
            a.failure,
            a.upstream_wait <= a.took,
        ));
    }
}

#[tokio::test]
async fn observers_are_told_once_how_each_answer_ended() {
    let up = FakeServer::start(|r| {
        if r.body_str().contains("break") {
            Reply::sse([first_chunk("openai-completions", "partial ")]).close()
        } else {
            Reply::sse([
                format!(
                    "data: {}\n\n",
                    json!({"choices":[{"delta":{"content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":1}})
                ),
                "data: [DONE]\n\n".to_string(),
            ])
        }
    })
    .await;
    let reg = registry(
        &up.base_url(),
        "http://127.0.0.1:9/v1",
        "openai-completions",
        "",
    );
    let runner = Runner::new(Client::new().unwrap(), Arc::new(TokioClock::default()));
    let seen = Arc::new(Seen::default());
    for text in ["fine", "break", "dropped"] {
        let chain = reg
            .chain(None, Some(("primary/m", SelectionSource::User)))
            .unwrap();
        let mut request = request();
        request.messages = vec![Message::user(text)];
        let turn = Turn {
            registry: &reg,
            chain: &chain,
            request,
            session: None,
            agent: None,
            on_notice: None,
            pinned: Vec::new(),
        };
        let mut routed = runner.run(turn).await.unwrap();
        routed.observe(seen.clone());
        if text != "dropped" {
            while let Some(ev) = routed.stream.next().await {
                if ev.is_err() {
                    break;
                }
            }
        }
        // "dropped": the client went away after the first event.
    }
    let seen = seen.0.lock().unwrap();
    assert_eq!(
        *seen,
        vec![
            ("primary/m".to_string(), Some(7), None, true),
            (
                "primary/m".to_string(),
                None,
                Some(ErrorClass::Unreachable),
                true
            ),
            ("primary/m".to_string(), None, None, true),
        ]
    );
}

#[tokio::test]
async fn each_attempt_sends_its_own_model_token_cap_and_extra_body() {
    let api = "openai-completions";
    let backup = FakeServer::start(move |_| ok_reply(api, "from backup")).await;
    let primary = FakeServer::start(move |_| fault_reply(Fault::S500, api)).await;
    let text = format!(
        r#"{{
  agents: {{ defaults: {{ model: {{ primary: "primary/pm", fallbacks: ["backup/bm"] }},
    models: {{ "primary/pm": {{ params: {{ extra_body: {{ top_k: 5 }} }} }} }} }} }},
  models: {{ mode: "replace", providers: {{
    primary: {{ baseUrl: "{}", api: "{api}", apiKey: "sk-primary", models: [{{ id: "pm", maxTokens: 100 }}] }},
    backup: {{ baseUrl: "{}", api: "{api}", apiKey: "sk-backup", models: [{{ id: "bm", maxTokens: 50 }}] }},
  }} }},
}}"#,
        primary.base_url(),
        backup.base_url()
    );
    let reg = load_text(Path::new("t.json5"), &text, &|_| None)
        .unwrap()
        .registry;
    let runner = Runner::new(Client::new().unwrap(), Arc::new(TokioClock::default()));
    let (served, c, _, _) = run_turn(&runner, &reg, None).await.unwrap();
    assert_eq!(
        (served.as_str(), c.text.as_str()),
        ("backup/bm", "from backup")
    );
    let body = |r: &Recorded| serde_json::from_str::<serde_json::Value>(&r.body_str()).unwrap();
    let first = body(&primary.requests()[0]);
    assert_eq!(
        (&first["model"], &first["max_tokens"], &first["top_k"]),
        (&json!("pm"), &json!(100), &json!(5))
    );
    // The fallback gets its own model and cap, and nothing of the first
    // candidate's `extra_body`.
    let second = body(&backup.requests()[0]);
    assert_eq!(
        (&second["model"], &second["max_tokens"]),
        (&json!("bm"), &json!(50))
    );
    assert!(second.get("top_k").is_none(), "{second}");
}
