//! `GET /metrics` (GW-1): Prometheus text — requests per endpoint, routing
//! counters (attempts, fallbacks, failures by class), tokens, cost,
//! answers without reported usage and answer latency per served model.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use clawgate_wire::Usage;

use crate::AppState;

const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
struct ModelStats {
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    /// From the model's `cost` table (CTX-5).
    cost_usd: f64,
    /// Answers whose server reported no usage.
    unreported: u64,
    answers: u64,
    latency_sum: f64,
    buckets: [u64; BUCKETS.len()],
    overhead_sum: f64,
    overhead_buckets: [u64; OVERHEAD_BUCKETS.len()],
}

/// Gateway overhead buckets, in seconds (PERF-5: microseconds expected).
const OVERHEAD_BUCKETS: [f64; 8] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1];

#[derive(Default)]
pub struct Telemetry {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// provider → model → stats; looked up by `&str`, so a known model
    /// costs no allocation per answer.
    models: Mutex<PerModel>,
}

/// Every finished answer counts in the per-model series.
impl clawgate_router::Observer for Telemetry {
    fn finished(&self, a: &clawgate_router::Finished<'_>) {
        self.answer(
            &a.served.provider,
            &a.served.model,
            a.usage,
            a.usage.map_or(0.0, |u| {
                clawgate_session::session::cost_usd(&a.served.cost, u)
            }),
            a.took,
            a.took.saturating_sub(a.upstream_wait),
        );
    }
}

impl Telemetry {
    pub fn request(&self, endpoint: &'static str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((endpoint, status)).or_default() += 1;
        }
    }

    /// One finished answer of a served model.
    pub fn answer(
        &self,
        provider: &str,
        model: &str,
        usage: Option<&Usage>,
        cost_usd: f64,
        took: Duration,
        overhead: Duration,
    ) {
        if let Ok(mut m) = self.models.lock() {
            if !m.contains_key(provider) {
                m.insert(provider.to_string(), BTreeMap::new());
            }
            let Some(per) = m.get_mut(provider) else {
                return;
            };
            if !per.contains_key(model) {
                per.insert(model.to_string(), ModelStats::default());
            }
            let Some(s) = per.get_mut(model) else {
                return;
            };
            if let Some(u) = usage {
                s.input_tokens += u.input;
                s.output_tokens += u.output;
                s.cache_read_tokens += u.cache_read;
                s.cache_write_tokens += u.cache_write;
            } else {
                s.unreported += 1;
            }
            s.cost_usd += cost_usd;
            s.answers += 1;
            let secs = took.as_secs_f64();
            s.latency_sum += secs;
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    s.buckets[i] += 1;
                }
            }
            let o = overhead.as_secs_f64();
            s.overhead_sum += o;
            for (i, b) in OVERHEAD_BUCKETS.iter().enumerate() {
                if o <= *b {
                    s.overhead_buckets[i] += 1;
                }
            }
        }
    }
}

type PerModel = BTreeMap<String, BTreeMap<String, ModelStats>>;

fn flat(m: &PerModel) -> impl Iterator<Item = (&String, &String, &ModelStats)> {
    m.iter()
        .flat_map(|(p, per)| per.iter().map(move |(model, s)| (p, model, s)))
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The per-model families, each family one group (as the text format
/// requires).
fn per_model(out: &mut String, models: &PerModel) {
    let label = |p: &str, m: &str| format!("provider=\"{}\",model=\"{}\"", esc(p), esc(m));
    let _ = writeln!(out, "# HELP clawgate_tokens_total Tokens reported by servers, per served model: input is the whole prompt (cache reads and writes included, whatever the protocol), cache_read and cache_write the parts of it served from or written to the cache.\n# TYPE clawgate_tokens_total counter");
    for (p, model, s) in flat(models) {
        let l = label(p, model);
        for (kind, n) in [
            ("input", s.input_tokens),
            ("output", s.output_tokens),
            ("cache_read", s.cache_read_tokens),
            ("cache_write", s.cache_write_tokens),
        ] {
            let _ = writeln!(out, "clawgate_tokens_total{{{l},kind=\"{kind}\"}} {n}");
        }
    }
    let _ = writeln!(out, "# HELP clawgate_cost_usd_total What answers cost by the model's cost table, per served model (local models cost 0).\n# TYPE clawgate_cost_usd_total counter");
    for (p, model, s) in flat(models) {
        let _ = writeln!(
            out,
            "clawgate_cost_usd_total{{{}}} {}",
            label(p, model),
            s.cost_usd
        );
    }
    let _ = writeln!(out, "# HELP clawgate_answers_without_usage_total Answers whose server reported no token usage (not in clawgate_tokens_total; kept sessions store an estimate, marked so).\n# TYPE clawgate_answers_without_usage_total counter");
    for (p, model, s) in flat(models) {
        let _ = writeln!(
            out,
            "clawgate_answers_without_usage_total{{{}}} {}",
            label(p, model),
            s.unreported
        );
    }
    for (name, help, buckets) in [
        (
            "clawgate_answer_duration_seconds",
            "Time from request to the end of the answer, per served model.",
            &BUCKETS[..],
        ),
        (
            "clawgate_overhead_seconds",
            "Gateway time per answer: total minus time waiting on upstreams.",
            &OVERHEAD_BUCKETS[..],
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let overhead = name == "clawgate_overhead_seconds";
        for (p, model, s) in flat(models) {
            let l = label(p, model);
            let (counts, sum) = if overhead {
                (&s.overhead_buckets[..], s.overhead_sum)
            } else {
                (&s.buckets[..], s.latency_sum)
            };
            for (b, n) in buckets.iter().zip(counts) {
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", s.answers);
            let _ = writeln!(out, "{name}_sum{{{l}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{l}}} {}", s.answers);
        }
    }
}

/// A metric family: name, type, help, and the value of one item.
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> String);

/// One family per entry, one sample per item labelled by its provider.
fn provider_families<T>(
    out: &mut String,
    items: &[T],
    provider: fn(&T) -> &str,
    families: &[Family<T>],
) {
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for it in items {
            let _ = writeln!(
                out,
                "{name}{{provider=\"{}\"}} {}",
                esc(provider(it)),
                value(it)
            );
        }
    }
}

/// LOC-6, LOC-7: queues in front of each backend and the local servers.
fn local_servers(out: &mut String, local: &clawgate_local::Supervisor) {
    use clawgate_local::{QueueStats, ServiceView};
    provider_families::<QueueStats>(
        out,
        &local.queues(),
        |q| &q.provider,
        &[
            (
                "clawgate_queue_limit",
                "gauge",
                "maxConcurrent in effect per provider.",
                |q| q.limit.to_string(),
            ),
            (
                "clawgate_queue_in_flight",
                "gauge",
                "Requests holding a queue slot.",
                |q| q.in_flight.to_string(),
            ),
            (
                "clawgate_queue_waiting",
                "gauge",
                "Requests waiting for a slot.",
                |q| q.waiting.to_string(),
            ),
            (
                "clawgate_queue_wait_seconds_total",
                "counter",
                "Time requests spent waiting for a slot.",
                |q| q.wait_seconds_total.to_string(),
            ),
            (
                "clawgate_queue_spilled_total",
                "counter",
                "Requests that waited past spillAfterMs and moved to the next candidate.",
                |q| q.spilled_total.to_string(),
            ),
        ],
    );
    provider_families::<ServiceView>(
        out,
        &local.running(),
        |s| &s.provider,
        &[
            (
                "clawgate_local_server_running",
                "gauge",
                "1 while the provider's local server runs (started by clawgate or not).",
                |s| u8::from(s.state != "stopped").to_string(),
            ),
            (
                "clawgate_local_server_leases",
                "gauge",
                "Requests in flight on the local server.",
                |s| s.leases.to_string(),
            ),
            (
                "clawgate_local_server_starts_total",
                "counter",
                "Times clawgate started the local server.",
                |s| s.starts.to_string(),
            ),
        ],
    );
}

pub async fn handle(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let m = &state.runner.metrics;
    let _ = writeln!(out, "# HELP clawgate_requests_total HTTP requests by endpoint and status.\n# TYPE clawgate_requests_total counter");
    if let Ok(r) = state.telemetry.requests.lock() {
        for ((ep, st), n) in r.iter() {
            let _ = writeln!(
                out,
                "clawgate_requests_total{{endpoint=\"{}\",status=\"{st}\"}} {n}",
                esc(ep)
            );
        }
    }
    for (name, help, v) in [
        ("clawgate_turns_total", "Turns routed.", &m.turns),
        ("clawgate_attempts_total", "Upstream attempts.", &m.attempts),
        (
            "clawgate_fallbacks_total",
            "Turns answered by another candidate than the selected one.",
            &m.fallbacks,
        ),
        (
            "clawgate_exhausted_total",
            "Turns where every candidate failed.",
            &m.exhausted,
        ),
        (
            "clawgate_overload_retries_total",
            "Whole-chain retries because every candidate was overloaded.",
            &m.overload_retries,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# HELP clawgate_upstream_failures_total Failed upstream attempts by error class.\n# TYPE clawgate_upstream_failures_total counter");
    let mut failures: Vec<_> = m.failures().into_iter().collect();
    failures.sort();
    for (class, n) in failures {
        let _ = writeln!(
            out,
            "clawgate_upstream_failures_total{{class=\"{class}\"}} {n}"
        );
    }
    if let Ok(models) = state.telemetry.models.lock() {
        per_model(&mut out, &models);
    }
    if let Some(local) = &state.local {
        local_servers(&mut out, local);
    }
    let mut r = out.into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
