//! The stand-in local server binary: loads, then serves. (This test also
//! makes `cargo test --workspace` build the binary other crates' tests
//! spawn.)

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(port: u16, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    // The fake server keeps connections open: read up to the last chunk.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.ends_with(b"0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn loads_then_serves_then_stops_on_sigterm() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawgate-fake-server"))
        .args([
            "--port",
            &port.to_string(),
            "--name",
            "alpha",
            "--load-ms",
            "300",
        ])
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut saw_loading = false;
    let mut ready = None;
    for _ in 0..200 {
        match get(port, "/v1/models").await {
            Some(r) if r.starts_with("HTTP/1.1 503") => {
                assert!(r.contains("Loading model"), "{r}");
                saw_loading = true;
            }
            Some(r) if r.starts_with("HTTP/1.1 200") => {
                ready = Some(r);
                break;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = ready.expect("the fake server never became ready");
    assert!(saw_loading, "no 503 while loading");
    assert!(ready.contains("\"n_ctx\":4096"), "{ready}");
    let pid = child.id().expect("pid") as i32;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("did not stop on SIGTERM")
        .expect("wait");
    assert!(!status.success());
}
