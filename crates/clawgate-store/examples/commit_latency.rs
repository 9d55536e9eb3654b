//! Turn-commit latency of the SQLite store, the figure the store crate was
//! chosen by (ARCHITECTURE.md): a typical turn (user text, reasoning,
//! answer, one usage row, a credential pin) committed 2 000 times into a
//! session, p50 and p99, for each durability level.
//! `cargo run --release -p clawgate-store --example commit_latency [DIR]`

use std::time::Instant;

use clawgate_store::{Durability, EntryKind, NewEntry, SqliteStore, Store, TurnCommit, UsageRow};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("clawgate-commit-{}", std::process::id())),
    };
    for durability in [Durability::ProcessCrash, Durability::PowerLoss] {
        let path = dir.join(format!("{durability:?}.sqlite3"));
        let _ = std::fs::remove_file(&path);
        let store = SqliteStore::open_with(&path, durability)?;
        let s = store.load_turn("bench", None, 0).await?.session;
        let mut took = Vec::new();
        for i in 0..2_000i64 {
            let turn = TurnCommit {
                calibration: None,
                session: s.id,
                entries: vec![
                    NewEntry::new(EntryKind::User, format!("question {i} ").repeat(20)),
                    NewEntry::new(EntryKind::Reasoning, "thinking ".repeat(40)),
                    NewEntry::new(EntryKind::Assistant, format!("answer {i} ").repeat(60)),
                ],
                context: Some((1_000 + i as u64, 1)),
                usage: vec![UsageRow {
                    provider: "lmstudio".into(),
                    model: "m".into(),
                    host: "127.0.0.1:1234".into(),
                    api: "openai-completions".into(),
                    input: 1_000 + i as u64,
                    output: 120,
                    cache_read: 900,
                    cache_write: 0,
                    reasoning: 40,
                    cost_usd: 0.0,
                    estimated: false,
                }],
                sticky: Some(("lmstudio".into(), "lmstudio:default".into())),
                response: None,
                at_ms: i,
            };
            let t = Instant::now();
            store.commit(turn).await?;
            took.push(t.elapsed().as_micros());
        }
        took.sort_unstable();
        println!(
            "{durability:?}: commit p50 {} µs, p99 {} µs ({} turns)",
            took[took.len() / 2],
            took[took.len() * 99 / 100],
            took.len()
        );
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
