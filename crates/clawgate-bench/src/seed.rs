//! A session database to start the gateway on (issue 11's targets): long
//! sessions of 10 000 stored entries each — a summary near the end, as
//! compaction leaves them — adding up to about 100 MB, written through
//! the same `Store` the gateway uses.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use clawgate_store::{EntryKind, NewEntry, SqliteStore, Store, TurnCommit};

/// Entries per long session.
pub const ENTRIES: usize = 10_000;
/// Entries left after the summary (what the next turn loads).
const TAIL: usize = 10;

/// The key of long session `i`.
pub fn key(i: usize) -> String {
    format!("long-{i}")
}

/// Writes `sessions` long sessions into the database at `path`; returns
/// its size in bytes.
pub async fn seed(path: &Path, sessions: usize) -> Result<u64> {
    let store = Arc::new(SqliteStore::open(path)?);
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = store.load_turn(&key(i), None, 0).await?.session.id;
            // 10 entries a turn, about 200 bytes each.
            for t in 0..ENTRIES / 10 {
                let entries = (0..10)
                    .map(|k| {
                        let kind = if k % 2 == 0 {
                            EntryKind::User
                        } else {
                            EntryKind::Assistant
                        };
                        NewEntry::new(
                            kind,
                            format!("turn {t} part {k} of session {i}: ").repeat(5),
                        )
                    })
                    .collect();
                store
                    .commit(TurnCommit {
                        calibration: None,
                        session: id,
                        entries,
                        usage: Vec::new(),
                        sticky: None,
                        response: None,
                        context: None,
                        at_ms: t as i64,
                    })
                    .await?;
            }
            let all = store.transcript(id).await?;
            let through = all
                .get(all.len().saturating_sub(TAIL + 1))
                .map(|e| e.id)
                .unwrap_or(0);
            store
                .commit(TurnCommit {
                    calibration: None,
                    session: id,
                    entries: vec![NewEntry {
                        replaces_through: Some(through),
                        ..NewEntry::new(
                            EntryKind::Summary,
                            "The user and the assistant talked at length about turns and parts.",
                        )
                    }],
                    usage: Vec::new(),
                    sticky: None,
                    response: None,
                    context: None,
                    at_ms: ENTRIES as i64,
                })
                .await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    drop(store);
    let wal = path.with_extension("sqlite3-wal");
    let size = std::fs::metadata(path)?.len() + std::fs::metadata(&wal).map_or(0, |m| m.len());
    Ok(size)
}
