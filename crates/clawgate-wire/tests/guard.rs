//! The outbound guard (SEC-2, SEC-6) on the address actually connected to.
//! No test here can open a connection beyond loopback, even with the guard
//! broken: names are answered by a fake DNS and every admitted address is
//! dialled at a recorder on 127.0.0.1; IP-literal targets go through a
//! recording proxy on 127.0.0.1. Each refusal is checked against the
//! recorder (nothing arrived) and each "allowed" control proves the seam
//! would have caught a leak.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use clawgate_core::net::OutboundPolicy;
use clawgate_core::ApiKind;
use clawgate_testkit::{FakeServer, Reply};
use clawgate_wire::guard::Hooks;
use clawgate_wire::{ChatRequest, Client, Endpoint, Message, WireError, WireErrorKind};

const OK: &str = r#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

fn request() -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages: vec![Message::user("hello")],
        max_tokens: Some(4),
        ..Default::default()
    }
}

async fn recorder() -> FakeServer {
    FakeServer::start(|_| Reply::json(200, OK)).await
}

/// A fake DNS table, and every admitted address redialled at `to`; the
/// admitted addresses are recorded.
fn dns(
    table: &'static [(&'static str, &'static [&'static str])],
    to: SocketAddr,
) -> (Hooks, Arc<Mutex<Vec<IpAddr>>>, Arc<AtomicUsize>) {
    let dialled = Arc::new(Mutex::new(Vec::new()));
    let asked = Arc::new(AtomicUsize::new(0));
    let d = dialled.clone();
    let a = asked.clone();
    let hooks = Hooks {
        lookup: Some(Arc::new(move |name: &str| {
            a.fetch_add(1, Ordering::SeqCst);
            table
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, ips)| ips.iter().filter_map(|i| i.parse().ok()).collect())
        })),
        dial: Some(Arc::new(move |addr: SocketAddr| {
            d.lock().unwrap().push(addr.ip());
            to
        })),
        proxy: None,
    };
    (hooks, dialled, asked)
}

fn addr_of(server: &FakeServer) -> SocketAddr {
    let url = server.base_url();
    let hostport = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    hostport.parse().unwrap()
}

fn policy(provider: &str, trusted: &[&str]) -> Arc<OutboundPolicy> {
    Arc::new(OutboundPolicy {
        provider: provider.into(),
        trusted: trusted.iter().map(|s| s.to_string()).collect(),
        allow_private: None,
        allow_special: false,
    })
}

fn endpoint(base: &str, policy: Arc<OutboundPolicy>) -> Endpoint {
    let mut ep = Endpoint::new(ApiKind::OpenAiCompletions, base);
    ep.policy = Some(policy);
    ep
}

async fn send(client: &Client, ep: &Endpoint) -> Result<(), WireError> {
    let mut s = client.send(ep, &request()).await?;
    while let Some(ev) = s.next().await {
        ev?;
    }
    Ok(())
}

fn blocked(r: Result<(), WireError>) -> String {
    match r {
        Err(e) if e.kind == WireErrorKind::Blocked => e.message,
        Err(e) => panic!("not a guard refusal: {e}"),
        Ok(()) => panic!("the guard let the request through"),
    }
}

#[tokio::test]
async fn a_configured_loopback_provider_works_and_false_opts_out() {
    let server = recorder().await;
    let base = server.base_url();
    let origin = base.trim_end_matches("/v1").to_string();
    let client = Client::new().unwrap();
    send(&client, &endpoint(&base, policy("lm", &[&origin])))
        .await
        .unwrap();
    assert_eq!(server.requests().len(), 1);

    // `allowPrivateNetwork: false` written out opts out of the trust.
    let mut p = (*policy("lm", &[&origin])).clone();
    p.allow_private = Some(false);
    let msg = blocked(send(&client, &endpoint(&base, Arc::new(p))).await);
    assert_eq!(
        msg,
        "outbound guard: refused to connect to a loopback address; models.providers.lm.request.allowPrivateNetwork is false; set it to true to allow it"
    );
    // Another port of the same host is not the configured origin.
    let msg = blocked(
        send(
            &client,
            &endpoint(&base, policy("lm", &["http://127.0.0.1:1"])),
        )
        .await,
    );
    assert!(
        msg.contains("set models.providers.lm.request.allowPrivateNetwork: true"),
        "{msg}"
    );
    assert_eq!(server.requests().len(), 1, "nothing reached the server");
}

#[tokio::test]
async fn a_name_that_resolves_to_a_blocked_address_is_refused_at_connect() {
    static TABLE: &[(&str, &[&str])] = &[
        ("public.example", &["93.184.216.34"]),
        ("meta.example", &["169.254.169.254"]),
        ("meta6.example", &["fd00:ec2::254"]),
        ("mapped.example", &["::ffff:169.254.169.254"]),
        ("nat64.example", &["64:ff9b::a9fe:a9fe"]),
        ("localnat64.example", &["64:ff9b:1::a00:5"]),
        ("linklocal.example", &["fe80::1"]),
        ("rebind.example", &["10.0.0.5"]),
        ("loop.example", &["127.0.0.1"]),
    ];
    let server = recorder().await;
    let (hooks, dialled, _) = dns(TABLE, addr_of(&server));
    let client = Client::with_hooks(hooks).unwrap();
    // A hosted provider nobody configured: no origin is trusted.
    let hosted = policy("openrouter", &[]);

    // The control: a public answer is dialled (at the recorder).
    send(
        &client,
        &endpoint("http://public.example/v1", hosted.clone()),
    )
    .await
    .unwrap();
    assert_eq!(server.requests().len(), 1);
    assert_eq!(
        server.requests()[0].header("host"),
        Some("public.example"),
        "the request went out for the name"
    );
    let before = dialled.lock().unwrap().len();

    for name in [
        "meta.example",
        "meta6.example",
        "mapped.example",
        "nat64.example",
        "localnat64.example",
        "linklocal.example",
    ] {
        let msg = blocked(
            send(
                &client,
                &endpoint(&format!("http://{name}/v1"), hosted.clone()),
            )
            .await,
        );
        assert!(
            msg.ends_with("set models.providers.openrouter.request.allowSpecialUseAddresses: true to allow it"),
            "{name}: {msg}"
        );
        assert!(!msg.contains("169.254") && !msg.contains(name), "{msg}");
    }
    // A public name rebinding to the LAN or loopback needs the opt-in.
    for name in ["rebind.example", "loop.example"] {
        let msg = blocked(
            send(
                &client,
                &endpoint(&format!("http://{name}/v1"), hosted.clone()),
            )
            .await,
        );
        assert!(
            msg.ends_with(
                "set models.providers.openrouter.request.allowPrivateNetwork: true to allow it"
            ),
            "{name}: {msg}"
        );
    }
    assert_eq!(
        dialled.lock().unwrap().len(),
        before,
        "nothing refused was dialled"
    );
    assert_eq!(server.requests().len(), 1);

    // The opt-ins open exactly their ranges.
    let mut open = (*hosted).clone();
    open.allow_private = Some(true);
    let open = Arc::new(open);
    send(&client, &endpoint("http://rebind.example/v1", open.clone()))
        .await
        .unwrap();
    blocked(send(&client, &endpoint("http://meta.example/v1", open)).await);
    let mut special = (*hosted).clone();
    special.allow_special = true;
    send(
        &client,
        &endpoint("http://linklocal.example/v1", Arc::new(special)),
    )
    .await
    .unwrap();
    let got = dialled.lock().unwrap().clone();
    assert_eq!(
        got[before..],
        [
            "10.0.0.5".parse::<IpAddr>().unwrap(),
            "fe80::1".parse().unwrap()
        ]
    );
}

#[tokio::test]
async fn metadata_names_are_refused_before_dns() {
    static TABLE: &[(&str, &[&str])] = &[("metadata.google.internal", &["93.184.216.34"])];
    let server = recorder().await;
    let (hooks, dialled, asked) = dns(TABLE, addr_of(&server));
    let client = Client::with_hooks(hooks).unwrap();
    let msg = blocked(
        send(
            &client,
            &endpoint(
                "http://metadata.google.internal/v1",
                policy("x", &["http://metadata.google.internal"]),
            ),
        )
        .await,
    );
    assert!(msg.contains("a cloud metadata address"), "{msg}");
    assert_eq!(asked.load(Ordering::SeqCst), 0, "DNS was not asked");
    assert!(dialled.lock().unwrap().is_empty());
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn ip_literal_targets_are_judged_before_sending() {
    let proxy = recorder().await;
    let hooks = Hooks {
        proxy: Some(proxy.base_url().trim_end_matches("/v1").to_string()),
        ..Hooks::default()
    };
    let client = Client::with_hooks(hooks).unwrap();
    for (base, fix) in [
        ("http://169.254.169.254/v1", "allowSpecialUseAddresses"),
        ("http://169.254.10.1/v1", "allowSpecialUseAddresses"),
        ("http://[fd00:ec2::254]/v1", "allowSpecialUseAddresses"),
        (
            "http://[::ffff:169.254.169.254]/v1",
            "allowSpecialUseAddresses",
        ),
        ("http://[64:ff9b::a9fe:a9fe]/v1", "allowSpecialUseAddresses"),
        ("http://[64:ff9b:1::1]/v1", "allowSpecialUseAddresses"),
        ("http://[fe80::1]/v1", "allowSpecialUseAddresses"),
        ("http://0.0.0.0/v1", "allowSpecialUseAddresses"),
        ("http://10.1.2.3/v1", "allowPrivateNetwork"),
        ("http://[::ffff:192.168.1.1]/v1", "allowPrivateNetwork"),
    ] {
        let msg = blocked(send(&client, &endpoint(base, policy("h", &[]))).await);
        assert!(
            msg.contains(&format!("models.providers.h.request.{fix}: true")),
            "{base}: {msg}"
        );
    }
    assert!(proxy.requests().is_empty(), "no refused request left");
    // The control: an allowed literal goes out (to the recording proxy).
    send(
        &client,
        &endpoint("http://203.0.113.9/v1", policy("h", &[])),
    )
    .await
    .unwrap();
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].path.starts_with("http://203.0.113.9/"),
        "{}",
        seen[0].path
    );
}

#[tokio::test]
async fn a_redirect_is_refused_and_not_quoted() {
    // The recording proxy answers the redirect itself: were redirects
    // followed, the second request would reach it too, not the metadata
    // address.
    let proxy = FakeServer::start(|_| {
        Reply::new(302).header("location", "http://169.254.169.254/latest/meta-data/")
    })
    .await;
    let client = Client::with_hooks(Hooks {
        proxy: Some(proxy.base_url().trim_end_matches("/v1").to_string()),
        ..Hooks::default()
    })
    .unwrap();
    let msg = blocked(
        send(
            &client,
            &endpoint(
                "http://127.0.0.1:9/v1",
                policy("lm", &["http://127.0.0.1:9"]),
            ),
        )
        .await,
    );
    assert_eq!(
        msg,
        "the server answered 302 with a redirect; the outbound guard does not follow redirects"
    );
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "asked once, not followed");
    assert!(
        seen[0].path.starts_with("http://127.0.0.1:9/"),
        "{}",
        seen[0].path
    );
}

#[tokio::test]
async fn local_only_judges_the_resolved_address() {
    static TABLE: &[(&str, &[&str])] = &[
        ("looks-local.lan", &["93.184.216.34"]),
        ("gpu.example.com", &["192.168.1.5"]),
    ];
    let server = recorder().await;
    let (hooks, _, _) = dns(TABLE, addr_of(&server));
    let client = Client::with_hooks(hooks).unwrap();
    // A name that looks local but resolves to a public address is refused.
    let mut ep = endpoint(
        "http://looks-local.lan/v1",
        policy("lan", &["http://looks-local.lan"]),
    );
    ep.local_only = Some("agents.entries.private.dataPolicy".into());
    let msg = blocked(send(&client, &ep).await);
    assert_eq!(
        msg,
        "outbound guard: refused to connect to a public address; dataPolicy is \"local-only\"; set agents.entries.private.dataPolicy: \"allow-hosted\" to allow it"
    );
    assert!(server.requests().is_empty());
    // A configured LAN server is reached under local-only.
    let mut ep = endpoint(
        "http://gpu.example.com/v1",
        policy("gpu", &["http://gpu.example.com"]),
    );
    ep.local_only = Some("agents.defaults.dataPolicy".into());
    send(&client, &ep).await.unwrap();
    assert_eq!(server.requests().len(), 1);
}
