//! The benchmark runs end to end (issue 6): a tiny run of every scenario
//! against the debug gateway, checked for its tables and for zero errors
//! through clawgate. Numbers are not checked here; timing belongs in the
//! benchmark itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn bench_runs_every_scenario_end_to_end() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_clawgate-bench"));
    // The workspace's other binaries are built next to this one.
    let gateway = bench.with_file_name("clawgate");
    assert!(
        gateway.exists(),
        "{} not built (run the workspace tests: cargo test --workspace)",
        gateway.display()
    );
    let out = Command::new(&bench)
        .args(["--gateway", gateway.to_str().unwrap()])
        .args(["--scale", "1", "--rounds", "1", "--budget-s", "1"])
        .args([
            "--chunks",
            "5",
            "--open-streams",
            "20",
            "--long-sessions",
            "2",
            "--idle-requests",
            "2",
            // CI has no wrk; the wrk path has its own unit test.
            "--no-wrk",
        ])
        .env("CLAWGATE_BENCH_NO_LITELLM", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for scenario in [
        "chat, non-streaming, c=1",
        "chat, non-streaming, c=64",
        "chat, non-streaming, session, c=1",
        "chat, non-streaming, session, c=64",
        "chat, non-streaming, session of 10 000 entries, c=1",
        "chat, streaming, after 1 s idle, c=1",
        "chat, streaming, c=64",
        "responses, streaming, c=64",
        "messages in, chat out, streaming, c=64",
    ] {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| {scenario} | in-process | CLAWGATE |")))
            .unwrap_or_else(|| panic!("no CLAWGATE row for {scenario}:\n{text}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | scenario | generator | system | p50 | p99 | ttft | gap | req/s | CPU/req | errors | ...
        assert_eq!(cells[10], "0", "errors through clawgate: {row}");
        assert_ne!(cells[4], "0", "no latency recorded: {row}");
    }
    let open = text
        .lines()
        .find(|l| l.starts_with("| CLAWGATE | "))
        .unwrap_or_else(|| panic!("no open-streams row:\n{text}"));
    assert!(open.starts_with("| CLAWGATE | 20 |"), "{open}");
    assert!(
        text.contains("cold start, spawn to a ready /ready: CLAWGATE"),
        "{text}"
    );
    assert!(
        text.contains("session database: 2 sessions of 10000 entries"),
        "{text}"
    );
    assert!(
        text.contains("- a session of 10 000 stored entries, c=1: CLAWGATE p50"),
        "{text}"
    );
    for line in [
        "- CPU per request, chat, non-streaming, c=1: CLAWGATE vs NGINX",
        "- CPU per turn, session, c=64: CLAWGATE session vs stateless",
        "- time to first chunk overhead, chat, streaming, after 1 s idle, c=1",
    ] {
        // Each target line appears when nginx is installed (CPU lines also
        // need 200 ms of CPU, which a run this small may not reach).
        if text.contains("| NGINX |") && !line.contains("CPU") {
            assert!(text.contains(line), "{line}:\n{text}");
        }
    }
}
