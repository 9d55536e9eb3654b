//! Issue 22 (15): with `HTTP_PROXY` set, a provider on the user's own
//! network named by a plain DNS name goes direct, decided by the address
//! the name resolves to; a public name still goes through the proxy.
//! Alone in its binary: it sets the process environment. Names are
//! answered by a fake DNS and every admitted address is dialled at a
//! server on 127.0.0.1, so nothing leaves loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use clawgate_core::net::OutboundPolicy;
use clawgate_core::ApiKind;
use clawgate_testkit::{FakeServer, Reply};
use clawgate_wire::guard::Hooks;
use clawgate_wire::{ChatRequest, Client, Endpoint, Message};

const OK: &str = r#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

fn addr_of(server: &FakeServer) -> SocketAddr {
    let url = server.base_url();
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn send(client: &Client, base: &str, trusted: &str) {
    let mut ep = Endpoint::new(ApiKind::OpenAiCompletions, base);
    ep.policy = Some(Arc::new(OutboundPolicy {
        provider: "p".into(),
        trusted: vec![trusted.to_string()],
        allow_private: None,
        allow_special: false,
    }));
    let req = ChatRequest {
        model: "m".into(),
        messages: vec![Message::user("hello")],
        max_tokens: Some(4),
        ..Default::default()
    };
    let mut s = client.send(&ep, &req).await.unwrap();
    while let Some(ev) = s.next().await {
        ev.unwrap();
    }
}

#[tokio::test]
async fn a_lan_name_bypasses_the_environment_proxy_and_a_public_one_uses_it() {
    let lan = FakeServer::start(|_| Reply::json(200, OK)).await;
    let proxy = FakeServer::start(|_| Reply::json(200, OK)).await;
    let lan_addr = addr_of(&lan);
    // SAFETY of the test: this binary has this one test, so no other
    // thread reads the environment while it is set.
    std::env::set_var("HTTP_PROXY", format!("http://{}", addr_of(&proxy)));
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    let hooks = Hooks {
        lookup: Some(Arc::new(|name: &str| match name {
            "lan.example.test" => Some(vec!["10.1.2.3".parse().unwrap()]),
            "api.example.test" => Some(vec!["203.0.113.9".parse().unwrap()]),
            _ => None,
        })),
        // Every address the guard admits is dialled at the LAN stand-in.
        dial: Some(Arc::new(move |_| lan_addr)),
        proxy: None,
    };
    let client = Client::with_hooks(hooks).unwrap();
    let port = lan_addr.port();
    send(
        &client,
        &format!("http://lan.example.test:{port}/v1"),
        &format!("http://lan.example.test:{port}"),
    )
    .await;
    assert_eq!(
        lan.requests().len(),
        1,
        "the LAN server was not reached directly"
    );
    assert!(
        proxy.requests().is_empty(),
        "the proxy saw traffic to the user's own server"
    );
    // A public name: through the proxy (which answers for it).
    send(
        &client,
        "http://api.example.test/v1",
        "http://api.example.test",
    )
    .await;
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "a public host did not use the proxy");
    assert_eq!(lan.requests().len(), 1);
    std::env::remove_var("HTTP_PROXY");
}
