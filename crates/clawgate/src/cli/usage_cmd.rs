//! `clawgate usage` (CTX-5): what left this machine, to where, since when —
//! the usage rows of kept sessions, grouped by model, session, day or
//! endpoint host, with cost from the models' `cost` tables.

use clap::{Args, ValueEnum};
use clawgate_store::{GroupBy, SqliteStore, Store, UsageQuery};
use serde_json::{json, Value};

use super::output::{emit, json, table};
use super::{exit, CliError, CliResult};

#[derive(Clone, Copy, ValueEnum)]
pub enum By {
    Model,
    Session,
    Day,
    Endpoint,
}

#[derive(Args)]
pub struct UsageArgs {
    /// From when: a date (2026-11-01) or a span back from now (24h, 7d);
    /// default the start of this month (UTC).
    #[arg(long)]
    since: Option<String>,
    /// How to group the rows.
    #[arg(long, value_enum, default_value = "model")]
    by: By,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil `(year, month)` of a day count since 1970-01-01.
fn year_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// `--since` as Unix milliseconds.
fn since_ms(since: Option<&str>, now_ms: i64) -> Result<i64, CliError> {
    let bad = |s: &str| {
        CliError::msg(
            exit::USAGE,
            format!("--since {s:?}: expected a date like 2026-11-01 or a span like 24h or 7d"),
        )
    };
    let Some(s) = since.map(str::trim) else {
        let (y, m) = year_month(now_ms.div_euclid(DAY_MS));
        return Ok(days_from_civil(y, m, 1) * DAY_MS);
    };
    if let Some(n) = s.strip_suffix('d').and_then(|n| n.parse::<i64>().ok()) {
        return Ok(now_ms - n.max(0) * DAY_MS);
    }
    if let Some(n) = s.strip_suffix('h').and_then(|n| n.parse::<i64>().ok()) {
        return Ok(now_ms - n.max(0) * 3_600_000);
    }
    let parts: Vec<i64> = s.split('-').filter_map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [y, m, d] if (1..=12).contains(m) && (1..=31).contains(d) => {
            Ok(days_from_civil(*y, *m, *d) * DAY_MS)
        }
        _ => Err(bad(s)),
    }
}

pub fn run(args: UsageArgs) -> CliResult {
    let now = super::state::now_unix_ms() as i64;
    let since = since_ms(args.since.as_deref(), now)?;
    let by = match args.by {
        By::Model => GroupBy::Model,
        By::Session => GroupBy::Session,
        By::Day => GroupBy::Day,
        By::Endpoint => GroupBy::Endpoint,
    };
    let path = super::state::sessions_file()
        .ok_or_else(|| CliError::msg(exit::FAILURE, "no HOME or CLAWGATE_STATE_DIR"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::FAILURE, e))?;
    let rows = rt.block_on(async {
        let store =
            SqliteStore::open(&path).map_err(|e| CliError::msg(exit::FAILURE, e.to_string()))?;
        store
            .usage(UsageQuery {
                session_id: None,
                session: None,
                since_ms: since,
                by,
            })
            .await
            .map_err(|e| CliError::msg(exit::FAILURE, e.to_string()))
    })?;
    if args.json {
        let v: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "group": r.group, "calls": r.calls, "input": r.input, "output": r.output,
                    "cacheRead": r.cache_read, "cacheWrite": r.cache_write, "reasoning": r.reasoning,
                    "costUsd": r.cost_usd, "estimatedCalls": r.estimated_calls,
                })
            })
            .collect();
        return json(&json!({"sinceMs": since, "rows": v}));
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.group.clone(),
                r.calls.to_string(),
                r.input.to_string(),
                r.output.to_string(),
                r.cache_read.to_string(),
                format!("{:.6}", r.cost_usd),
                if r.estimated_calls > 0 {
                    format!("{} estimated", r.estimated_calls)
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    emit(&table(
        &[
            "GROUP",
            "CALLS",
            "INPUT",
            "OUTPUT",
            "CACHE READ",
            "COST USD",
            "ESTIMATES",
        ],
        &table_rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_spans() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 11, 30) * DAY_MS, 1_795_996_800_000);
        assert_eq!(year_month(days_from_civil(2024, 2, 29)), (2024, 2));
        assert_eq!(year_month(days_from_civil(2026, 12, 31)), (2026, 12));
        let now = 1_795_996_800_000 + 5 * 3_600_000; // 2026-11-30T05:00Z
        assert_eq!(
            since_ms(None, now).ok(),
            Some(days_from_civil(2026, 11, 1) * DAY_MS)
        );
        assert_eq!(since_ms(Some("24h"), now).ok(), Some(now - DAY_MS));
        assert_eq!(since_ms(Some("7d"), now).ok(), Some(now - 7 * DAY_MS));
        assert_eq!(
            since_ms(Some("2026-11-30"), now).ok(),
            Some(1_795_996_800_000)
        );
        assert!(since_ms(Some("yesterday"), now).is_err());
        assert!(since_ms(Some("2026-13-01"), now).is_err());
    }
}
