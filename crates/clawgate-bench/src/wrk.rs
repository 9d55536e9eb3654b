//! wrk as the load generator for the throughput scenarios (issue 14): a
//! separate C process, so a system's rate is not capped by the bench's own
//! client. It inherits the bench's CPU (CPU 0 when pinning), which it
//! shares with the mock; the run proves it is not the bottleneck when
//! DIRECT reaches at least twice NGINX's rate.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::load::Stats;
use crate::systems::System;

/// The wrk executable, when installed (bench/run.sh installs Debian's).
pub fn find() -> Option<PathBuf> {
    ["/usr/bin/wrk", "/usr/local/bin/wrk"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Lua string literal of `s` (long brackets cannot hold `]]`, so escape).
fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The script: a fixed POST, and a machine-readable line at the end.
/// Where a session key goes in a session scenario's body.
pub const SESSION_SLOT: &str = "@SESSION@";

/// Runs of wrk in this process, so each run's sessions are new ones.
static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn script(body: &str, key: Option<&str>, conc: usize) -> String {
    let auth = key
        .map(|k| {
            format!(
                "wrk.headers[\"Authorization\"] = {}\n",
                lua_str(&format!("Bearer {k}"))
            )
        })
        .unwrap_or_default();
    // A body with a session slot: each connection's turns go to its own
    // session, 10 turns each, as the in-process generator does (the
    // counter is wrk's, one thread: consecutive requests, which are the
    // ones in flight together, get different sessions).
    let sessions = match body.split_once(SESSION_SLOT) {
        Some((prefix, suffix)) => {
            let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!(
                r#"counter = 0
request = function()
  counter = counter + 1
  local k = string.format("wrk-{pid}-{run}-%d-%d", counter % {conc}, math.floor(counter / {turns}))
  return wrk.format(nil, nil, nil, {prefix} .. k .. {suffix})
end
"#,
                pid = std::process::id(),
                turns = conc.max(1) * 10,
                prefix = lua_str(prefix),
                suffix = lua_str(suffix)
            )
        }
        None => String::new(),
    };
    format!(
        r#"wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{auth}{sessions}done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout + e.status))
end
"#,
        body = lua_str(body)
    )
}

pub fn run(
    wrk: &std::path::Path,
    dir: &std::path::Path,
    sys: &System,
    path: &str,
    body: &str,
    conc: usize,
    seconds: f64,
) -> Option<Stats> {
    let file = dir.join(format!("wrk-{}.lua", sys.name));
    std::fs::write(&file, script(body, sys.key, conc)).ok()?;
    let out = Command::new(wrk)
        .args(["-t1", "-c", &conc.to_string()])
        // wrk takes whole seconds (no `ms` unit).
        .args(["-d", &format!("{}s", (seconds.round() as u64).max(1))])
        .args(["--timeout", "10s", "-s"])
        .arg(&file)
        .arg(format!("{}{path}", sys.url))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("WRKRESULT "))?;
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let [requests, duration_us, p50, p99, errors] = n[..] else {
        return None;
    };
    let requests = requests as usize;
    let errors = errors as usize;
    Some(Stats {
        count: requests.saturating_sub(errors),
        errors,
        wall: Duration::from_micros(duration_us),
        round_pcts: vec![(Duration::from_micros(p50), Duration::from_micros(p99))],
        ..Stats::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_a_valid_lua_string() {
        assert_eq!(lua_str(r#"{"a":"b\"c"}"#), r#""{\"a\":\"b\\\"c\"}""#);
        let s = script("{}", Some("k"), 1);
        assert!(s.contains("Bearer k"));
        assert!(s.contains("WRKRESULT"));
        assert!(!s.contains("request = function"));
        // A session body: the key goes where the slot was, per request.
        let s = script(r#"{"user":"@SESSION@"}"#, None, 64);
        assert!(
            s.contains(r#"wrk.format(nil, nil, nil, "{\"user\":\"" .. k .. "\"}")"#),
            "{s}"
        );
        assert!(s.contains("counter % 64, math.floor(counter / 640)"), "{s}");
    }
}
