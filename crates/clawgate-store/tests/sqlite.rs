//! The SQLite store on real files: schema, restart, turns committed whole,
//! history from the last compaction, usage totals, deletion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clawgate_store::{
    EntryKind, GroupBy, ModelSource, NewEntry, SqliteStore, Store, StoreError, TurnCommit,
    UsageQuery, UsageRow, SCHEMA_VERSION,
};

fn usage(
    provider: &str,
    model: &str,
    host: &str,
    input: u64,
    output: u64,
    cost: f64,
    estimated: bool,
) -> UsageRow {
    UsageRow {
        provider: provider.into(),
        model: model.into(),
        host: host.into(),
        api: "openai-completions".into(),
        input,
        output,
        cache_read: input / 2,
        cache_write: 0,
        reasoning: 1,
        cost_usd: cost,
        estimated,
    }
}

fn turn(session: i64, at_ms: i64, entries: Vec<NewEntry>, usage: Vec<UsageRow>) -> TurnCommit {
    TurnCommit {
        calibration: None,
        session,
        entries,
        usage,
        sticky: None,
        response: None,
        context: None,
        at_ms,
    }
}

#[tokio::test]
async fn a_session_survives_a_restart_with_its_turns_model_and_pin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/sessions.sqlite3");
    {
        let store = SqliteStore::open(&path).unwrap();
        let s = store
            .load_turn("chat-1", Some("coder"), 1_000)
            .await
            .unwrap()
            .session;
        assert_eq!(
            (s.key.as_str(), s.agent.as_deref(), s.turns),
            ("chat-1", Some("coder"), 0)
        );
        let again = store
            .load_turn("chat-1", Some("coder"), 2_000)
            .await
            .unwrap()
            .session;
        assert_eq!(again.id, s.id, "open is idempotent");
        let mut t = turn(
            s.id,
            3_000,
            vec![
                NewEntry::new(EntryKind::User, "Bonjour"),
                NewEntry::new(EntryKind::Reasoning, "thinking"),
                NewEntry::new(EntryKind::Assistant, "Salut !"),
            ],
            vec![usage("lmstudio", "m", "127.0.0.1:1234", 10, 3, 0.0, false)],
        );
        t.sticky = Some(("anthropic".into(), "anthropic:work".into()));
        t.response = Some(("resp_1".into(), "{\"id\":\"resp_1\"}".into()));
        store.commit(t).await.unwrap();
        store
            .select_model(s.id, Some("lmstudio/m"), ModelSource::User, 4_000)
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let s = store.get("chat-1").await.unwrap().expect("kept");
    assert_eq!(s.turns, 1);
    assert_eq!(
        (s.model.as_deref(), s.model_source),
        (Some("lmstudio/m"), ModelSource::User)
    );
    assert_eq!(s.updated_ms, 4_000);
    let loaded = store
        .load_turn("chat-1", Some("coder"), 5_000)
        .await
        .unwrap();
    assert_eq!(loaded.session.updated_ms, 4_000, "loading touches nothing");
    let h = loaded.history;
    let kinds: Vec<_> = h
        .iter()
        .map(|e| (e.kind, e.text.as_str(), e.turn))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EntryKind::User, "Bonjour", 1),
            (EntryKind::Reasoning, "thinking", 1),
            (EntryKind::Assistant, "Salut !", 1)
        ]
    );
    assert_eq!(
        loaded.pins,
        vec![("anthropic".to_string(), "anthropic:work".to_string())]
    );
    assert!(store.get("nope").await.unwrap().is_none());
    assert_eq!(
        store.response("resp_1").await.unwrap(),
        Some(clawgate_store::KeptResponse {
            key: "chat-1".to_string(),
            agent: Some("coder".to_string()),
            body: "{\"id\":\"resp_1\"}".to_string()
        })
    );
    assert_eq!(store.response("resp_2").await.unwrap(), None);
}

#[tokio::test]
async fn history_starts_at_the_last_compaction_and_the_transcript_stays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap();
    let s = store.load_turn("long", None, 0).await.unwrap().session;
    // 10 000 stored entries before a compaction.
    for i in 0..2_500 {
        store
            .commit(turn(
                s.id,
                i,
                vec![
                    NewEntry::new(EntryKind::User, format!("question {i}")),
                    NewEntry {
                        tool_id: Some(format!("call_{i}")),
                        tool_name: Some("read".into()),
                        ..NewEntry::new(EntryKind::ToolCall, "{\"path\":\"/src/main.rs\"}")
                    },
                    NewEntry {
                        tool_id: Some(format!("call_{i}")),
                        ..NewEntry::new(EntryKind::ToolResult, "fn main() {}")
                    },
                    NewEntry::new(EntryKind::Assistant, format!("answer {i}")),
                ],
                vec![],
            ))
            .await
            .unwrap();
    }
    let all = store.transcript(s.id).await.unwrap();
    assert_eq!(all.len(), 10_000);
    // The summary stands for everything but the last turn.
    let through = all[all.len() - 5].id;
    store
        .commit(turn(
            s.id,
            10_000,
            vec![
                NewEntry {
                    replaces_through: Some(through),
                    ..NewEntry::new(
                        EntryKind::Summary,
                        "summary of 2 499 turns: /src/main.rs, call_7",
                    )
                },
                NewEntry::new(EntryKind::User, "next"),
                NewEntry::new(EntryKind::Assistant, "ok"),
            ],
            vec![],
        ))
        .await
        .unwrap();
    let h = store.load_turn("long", None, 0).await.unwrap().history;
    let texts: Vec<&str> = h.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        texts,
        vec![
            "summary of 2 499 turns: /src/main.rs, call_7",
            "question 2499",
            "{\"path\":\"/src/main.rs\"}",
            "fn main() {}",
            "answer 2499",
            "next",
            "ok"
        ],
        "the summary first, then only what it did not replace"
    );
    assert_eq!(h[2].tool_id.as_deref(), Some("call_2499"));
    let s = store.get("long").await.unwrap().unwrap();
    assert_eq!((s.turns, s.compactions), (2_501, 1));
    assert_eq!(
        store.transcript(s.id).await.unwrap().len(),
        10_003,
        "nothing is lost"
    );
}

#[tokio::test]
async fn usage_totals_add_up_exactly_by_model_session_day_and_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap();
    let a = store.load_turn("a", None, 0).await.unwrap().session;
    let b = store.load_turn("b", None, 0).await.unwrap().session;
    const DAY: i64 = 86_400_000;
    let nov30 = 1_795_996_800_000; // 2026-11-30T00:00:00Z
    store
        .commit(turn(
            a.id,
            nov30 + 10,
            vec![],
            vec![
                usage("lmstudio", "m", "127.0.0.1:1234", 100, 10, 0.0, false),
                usage(
                    "anthropic",
                    "claude",
                    "api.anthropic.com",
                    1_000,
                    50,
                    0.00375,
                    false,
                ),
            ],
        ))
        .await
        .unwrap();
    store
        .commit(turn(
            b.id,
            nov30 + DAY + 5,
            vec![],
            vec![usage(
                "anthropic",
                "claude",
                "api.anthropic.com",
                2_000,
                70,
                0.00705,
                true,
            )],
        ))
        .await
        .unwrap();
    let by = |g| {
        store.usage(UsageQuery {
            session_id: None,
            since_ms: 0,
            by: g,
            session: None,
        })
    };
    let model = by(GroupBy::Model).await.unwrap();
    assert_eq!(model.len(), 2);
    assert_eq!(model[0].group, "anthropic/claude");
    assert_eq!(
        (
            model[0].calls,
            model[0].input,
            model[0].output,
            model[0].estimated_calls
        ),
        (2, 3_000, 120, 1)
    );
    assert!((model[0].cost_usd - 0.0108).abs() < 1e-12);
    assert_eq!(model[1].group, "lmstudio/m");
    assert_eq!(
        (model[1].input, model[1].cache_read, model[1].cost_usd),
        (100, 50, 0.0)
    );
    let day = by(GroupBy::Day).await.unwrap();
    let days: Vec<_> = day.iter().map(|d| (d.group.as_str(), d.calls)).collect();
    assert_eq!(days, vec![("2026-11-30", 2), ("2026-12-01", 1)]);
    let sessions = by(GroupBy::Session).await.unwrap();
    assert_eq!(
        sessions
            .iter()
            .map(|s| s.group.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    let hosts = by(GroupBy::Endpoint).await.unwrap();
    assert_eq!(
        hosts
            .iter()
            .map(|h| (h.group.as_str(), h.calls))
            .collect::<Vec<_>>(),
        vec![("127.0.0.1:1234", 1), ("api.anthropic.com", 2)]
    );
    let recent = store
        .usage(UsageQuery {
            session_id: None,
            session: None,
            since_ms: nov30 + DAY,
            by: GroupBy::Model,
        })
        .await
        .unwrap();
    assert_eq!((recent.len(), recent[0].input), (1, 2_000));
    // Deleting a session keeps what left the machine accounted.
    assert!(store.delete("b").await.unwrap());
    assert!(!store.delete("b").await.unwrap());
    assert!(store.get("b").await.unwrap().is_none());
    let sessions = by(GroupBy::Session).await.unwrap();
    assert_eq!(
        sessions
            .iter()
            .map(|s| (s.group.as_str(), s.calls))
            .collect::<Vec<_>>(),
        vec![("a", 2), ("b", 1)]
    );
    assert_eq!(store.sessions(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_turn_is_committed_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap();
    let s = store.load_turn("x", None, 0).await.unwrap().session;
    let err = store
        .commit(turn(
            s.id + 99,
            1,
            vec![NewEntry::new(EntryKind::User, "lost")],
            vec![],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSession(_)), "{err}");
    assert!(store.transcript(s.id + 99).await.unwrap().is_empty());
    assert!(matches!(
        store
            .select_model(s.id + 99, None, ModelSource::Default, 1)
            .await,
        Err(StoreError::NoSession(_))
    ));
    // A failure after some rows were written (a kept answer whose id is
    // taken) undoes the whole turn.
    let mut first = turn(
        s.id,
        1,
        vec![NewEntry::new(EntryKind::User, "kept")],
        vec![],
    );
    first.response = Some(("resp_dup".into(), "{}".into()));
    store.commit(first).await.unwrap();
    let mut second = turn(
        s.id,
        2,
        vec![
            NewEntry::new(EntryKind::User, "half"),
            NewEntry::new(EntryKind::Assistant, "half"),
        ],
        vec![],
    );
    second.response = Some(("resp_dup".into(), "{}".into()));
    assert!(store.commit(second).await.is_err());
    let texts: Vec<String> = store
        .transcript(s.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(texts, vec!["kept"]);
    assert_eq!(store.get("x").await.unwrap().unwrap().turns, 1);
    // And the store goes on.
    store
        .commit(turn(
            s.id,
            3,
            vec![NewEntry::new(EntryKind::User, "next")],
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(store.get("x").await.unwrap().unwrap().turns, 2);
}

#[tokio::test]
async fn a_database_from_a_newer_clawgate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    drop(SqliteStore::open(&path).unwrap());
    {
        let c = rusqlite_connection(&path);
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("newer clawgate"));
    // Not a database at all: a clear error naming the file.
    let junk = dir.path().join("junk.sqlite3");
    std::fs::write(
        &junk,
        b"not a database, just text long enough to be read as a header........",
    )
    .unwrap();
    let err = SqliteStore::open(&junk).unwrap_err();
    assert!(err.to_string().contains("session store"), "{err}");
}

fn rusqlite_connection(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[tokio::test]
async fn ctx_2_the_last_reported_prompt_and_what_it_held_are_kept_until_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap();
    let s = store.load_turn("cal", None, 0).await.unwrap().session;
    assert_eq!(s.context, None);
    let mut t = turn(
        s.id,
        1,
        vec![
            NewEntry::new(EntryKind::User, "one"),
            NewEntry::new(EntryKind::User, "two"),
            NewEntry::new(EntryKind::Assistant, "answer"),
        ],
        vec![],
    );
    t.context = Some((1_234, 2));
    store.commit(t).await.unwrap();
    let all = store.transcript(s.id).await.unwrap();
    let s = store.get("cal").await.unwrap().unwrap();
    assert_eq!(
        s.context,
        Some((1_234, all[1].id)),
        "through the last sent entry"
    );
    // A turn whose server reports nothing keeps the calibration.
    store
        .commit(turn(
            s.id,
            2,
            vec![NewEntry::new(EntryKind::User, "three")],
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(store.get("cal").await.unwrap().unwrap().context, s.context);
    // A compaction alone is not a turn, and it ends the calibration.
    let summary = NewEntry {
        replaces_through: Some(all[2].id),
        ..NewEntry::new(EntryKind::Summary, "sum")
    };
    store
        .commit(turn(s.id, 3, vec![summary], vec![]))
        .await
        .unwrap();
    let after = store.get("cal").await.unwrap().unwrap();
    assert_eq!(
        (after.turns, after.compactions, after.context),
        (2, 1, None)
    );
}

#[tokio::test]
async fn a_version_1_database_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite3");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE sessions (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, agent TEXT, model TEXT,
               model_source TEXT NOT NULL DEFAULT 'default', compactions INTEGER NOT NULL DEFAULT 0,
               turns INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
             INSERT INTO sessions (key, created_ms, updated_ms) VALUES ('kept', 5, 6);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let s = store.get("kept").await.unwrap().unwrap();
    assert_eq!((s.created_ms, s.context), (5, None));
    let v: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, clawgate_store::SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_transactions_and_one_failure_spoils_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            store
                .load_turn(&format!("g{i}"), None, 0)
                .await
                .unwrap()
                .session
                .id,
        );
    }
    // 400 commits at once: they queue up and run in batches; every tenth
    // names a session that does not exist.
    let tasks: Vec<_> = (0..400)
        .map(|n| {
            let store = store.clone();
            let session = if n % 10 == 9 { 999_999 } else { ids[n % 20] };
            tokio::spawn(async move {
                store
                    .commit(turn(
                        session,
                        n as i64,
                        vec![
                            NewEntry::new(EntryKind::User, format!("q{n}")),
                            NewEntry::new(EntryKind::Assistant, format!("a{n}")),
                        ],
                        vec![],
                    ))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for (n, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::NoSession(_)) => assert_eq!(n % 10, 9),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 360);
    let mut entries = 0;
    for i in 0..20 {
        let s = store.get(&format!("g{i}")).await.unwrap().unwrap();
        let t = store.transcript(s.id).await.unwrap();
        assert_eq!(t.len() as u32, 2 * s.turns, "whole turns only");
        entries += t.len();
    }
    assert_eq!(entries, 720);
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let (calls, batches) = store.batching();
    assert!(batches < calls, "{calls} calls in {batches} transactions");
}

/// Two entries of a turn.
fn qa(n: usize) -> Vec<NewEntry> {
    vec![
        NewEntry::new(EntryKind::User, format!("q{n}")),
        NewEntry::new(EntryKind::Assistant, format!("a{n}")),
    ]
}

#[tokio::test(flavor = "current_thread")]
async fn commits_on_one_worker_share_a_transaction_without_the_store_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap();
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            store
                .load_turn(&format!("w{i}"), None, 1)
                .await
                .unwrap()
                .session
                .id,
        );
    }
    let before = store.batching();
    // Eight turns reach their commit in the same scheduler pass: the
    // first leads, the others join its batch.
    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let store = store.clone();
            let id = ids[n % 8];
            tokio::spawn(async move { store.commit(turn(id, n as i64, qa(n), vec![])).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (calls, batches) = store.batching();
    let (calls, batches) = (calls - before.0, batches - before.1);
    assert_eq!(calls, 64);
    assert!(batches < 8, "64 commits in {batches} transactions");
    for id in &ids {
        assert_eq!(store.transcript(*id).await.unwrap().len(), 16);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_by_another_process_sends_calls_to_the_store_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    let store = SqliteStore::open(&path).unwrap();
    let id = store.load_turn("held", None, 1).await.unwrap().session.id;
    // Another process (a CLI command) holds the write lock.
    let other = rusqlite_connection(&path);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (commit, load) = {
        let (a, b) = (store.clone(), store.clone());
        (
            tokio::spawn(async move { a.commit(turn(id, 2, qa(1), vec![])).await }),
            // A new session needs the write lock too.
            tokio::spawn(async move { b.load_turn("new", None, 2).await.map(|t| t.session.id) }),
        )
    };
    // Neither failed with "database is locked": both wait on the store
    // thread (up to its busy timeout) and finish once the lock is gone.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!commit.is_finished() && !load.is_finished());
    other.execute_batch("COMMIT").unwrap();
    commit.await.unwrap().unwrap();
    let new = load.await.unwrap().unwrap();
    assert_ne!(new, id);
    assert_eq!(store.transcript(id).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn a_commit_whose_caller_went_away_is_still_committed_with_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap();
    let id = store.load_turn("gone", None, 1).await.unwrap().session.id;
    // The leader is polled once (it yields to let others join) and then
    // dropped, as when a client disconnects mid-turn; a second commit
    // joined its batch meanwhile.
    let mut leader = store.commit(turn(id, 2, qa(1), vec![]));
    assert!(futures_poll_once(&mut leader).await.is_none());
    let follower = store.commit(turn(id, 3, qa(2), vec![]));
    drop(leader);
    follower.await.unwrap();
    let t = store.transcript(id).await.unwrap();
    assert_eq!(
        t.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
        ["q1", "a1", "q2", "a2"]
    );
}

/// Polls a future once: its output if it was ready.
async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn the_wal_is_checkpointed_by_the_store_thread_and_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    let store = SqliteStore::open(&path).unwrap();
    let id = store.load_turn("long", None, 1).await.unwrap().session.id;
    // About six WAL pages a turn: 3000 turns would make an 18 000-page
    // (70 MB) log without checkpoints.
    let text = "x".repeat(2000);
    for n in 0..3000 {
        let entries = vec![
            NewEntry::new(EntryKind::User, format!("{n} {text}")),
            NewEntry::new(EntryKind::Assistant, text.clone()),
        ];
        store.commit(turn(id, n, entries, vec![])).await.unwrap();
    }
    // A call through the store thread runs after the queued checkpoints.
    assert_eq!(store.transcript(id).await.unwrap().len(), 6000);
    let wal = std::fs::metadata(dir.path().join("s.sqlite3-wal"))
        .unwrap()
        .len();
    // At most 4 000 pages and one batch, however late the store thread
    // gets the CPU.
    assert!(wal < 20 * 1024 * 1024, "WAL of {wal} bytes");
}

#[tokio::test(flavor = "current_thread")]
async fn the_turn_state_kept_in_memory_matches_the_file_and_sees_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    let store = SqliteStore::open(&path).unwrap();
    let id = store
        .load_turn("hot", Some("main"), 1)
        .await
        .unwrap()
        .session
        .id;
    // Turns with a pin, a changed pin and a context calibration: what the
    // next turn loads (from memory) is what a fresh store reads from the
    // file.
    for n in 0..4usize {
        let mut t = turn(id, 10 + n as i64, qa(n), vec![]);
        t.sticky = Some(("p".into(), format!("profile-{}", n / 2)));
        if n == 2 {
            t.context = Some((1234, 1));
        }
        store.commit(t).await.unwrap();
        let hot = store.load_turn("hot", Some("main"), 20).await.unwrap();
        let fresh = SqliteStore::open(&path).unwrap();
        assert_eq!(
            hot,
            fresh.load_turn("hot", Some("main"), 20).await.unwrap(),
            "turn {n}"
        );
    }
    let hot = store.load_turn("hot", Some("main"), 30).await.unwrap();
    assert_eq!(hot.history.len(), 8);
    assert_eq!(hot.session.turns, 4);
    assert_eq!(hot.pins, [("p".to_string(), "profile-1".to_string())]);
    assert_eq!(hot.session.context.map(|c| c.0), Some(1234));
    // Another process writes: a turn through its own store, then a raw
    // delete of the newest entry. The next load sees both.
    let other = SqliteStore::open(&path).unwrap();
    other.commit(turn(id, 40, qa(9), vec![])).await.unwrap();
    let seen = store.load_turn("hot", Some("main"), 41).await.unwrap();
    assert_eq!(seen.history.len(), 10);
    assert_eq!(seen.history.last().map(|e| e.text.as_str()), Some("a9"));
    rusqlite_connection(&path)
        .execute("DELETE FROM entries WHERE text = 'a9'", [])
        .unwrap();
    let seen = store.load_turn("hot", Some("main"), 42).await.unwrap();
    assert_eq!(seen.history.last().map(|e| e.text.as_str()), Some("q9"));
    // Model selection and reset through this store are seen at once.
    store
        .select_model(id, Some("m/x"), ModelSource::User, 43)
        .await
        .unwrap();
    assert_eq!(
        store
            .load_turn("hot", Some("main"), 44)
            .await
            .unwrap()
            .session
            .model
            .as_deref(),
        Some("m/x")
    );
    store.reset(id, false, 45).await.unwrap();
    let after = store.load_turn("hot", Some("main"), 46).await.unwrap();
    assert!(after.pins.is_empty());
    assert!(after.history.iter().all(|e| e.kind == EntryKind::Summary));
    assert!(store.delete("hot").await.unwrap());
    let new = store.load_turn("hot", Some("main"), 47).await.unwrap();
    // A new session (SQLite may give it the same id): nothing of the old.
    assert_eq!(new.session.turns, 0);
    assert!(new.history.is_empty() && new.pins.is_empty());
}

#[tokio::test]
async fn ctx_4_a_session_belongs_to_the_agent_that_created_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap();
    let private = store
        .load_turn("shared", Some("priv"), 1)
        .await
        .unwrap()
        .session;
    store
        .commit(turn(
            private.id,
            2,
            vec![NewEntry::new(EntryKind::User, "my secret plan")],
            Vec::new(),
        ))
        .await
        .unwrap();
    // Another agent (and the default one) on the same key: its own
    // session, empty, under the key with its name appended.
    let public = store.load_turn("shared", Some("pub"), 3).await.unwrap();
    assert_ne!(public.session.id, private.id);
    assert_eq!(public.session.key, "shared@pub");
    assert_eq!(public.session.agent.as_deref(), Some("pub"));
    assert!(public.history.is_empty(), "{:?}", public.history);
    let default = store.load_turn("shared", None, 4).await.unwrap();
    assert_eq!(default.session.key, "shared@default");
    assert!(default.history.is_empty());
    // The owner still gets its own, from the cache and after a restart.
    let again = store.load_turn("shared", Some("priv"), 5).await.unwrap();
    assert_eq!(again.session.id, private.id);
    assert_eq!(again.history.len(), 1);
    drop(store);
    let store = SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap();
    let public2 = store.load_turn("shared", Some("pub"), 6).await.unwrap();
    assert_eq!(public2.session.id, public.session.id);
    // A client that took `shared@pub` for `priv` first does not get `pub`
    // into it either.
    let taken = store.load_turn("k@pub", Some("priv"), 7).await.unwrap();
    store
        .commit(turn(
            taken.session.id,
            8,
            vec![NewEntry::new(EntryKind::User, "private again")],
            Vec::new(),
        ))
        .await
        .unwrap();
    let first = store.load_turn("k", Some("priv"), 9).await.unwrap();
    assert_eq!(first.session.key, "k");
    let other = store.load_turn("k", Some("pub"), 10).await.unwrap();
    assert_eq!(other.session.key, "k@pub@pub");
    assert!(other.history.is_empty());
}

#[tokio::test]
async fn ctx_2_a_models_calibration_is_learned_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.ratio("local/tiny").await.unwrap(), None);
        let s = store.load_turn("c", None, 1).await.unwrap().session;
        let mut t = turn(
            s.id,
            2,
            vec![NewEntry::new(EntryKind::User, "x")],
            Vec::new(),
        );
        t.calibration = Some(clawgate_store::Calibration {
            model: "local/tiny".into(),
            bytes: 1_000,
            tokens: 1_000,
        });
        store.commit(t).await.unwrap();
        assert_eq!(store.ratio("local/tiny").await.unwrap(), Some(1.0));
        // A second sample moves it.
        let mut t = turn(
            s.id,
            3,
            vec![NewEntry::new(EntryKind::User, "y")],
            Vec::new(),
        );
        t.calibration = Some(clawgate_store::Calibration {
            model: "local/tiny".into(),
            bytes: 3_000,
            tokens: 1_000,
        });
        store.commit(t).await.unwrap();
        // The earlier sums decay by half per 8 KiB of the new sample.
        let d = 0.5f64.powf(3_000.0 / 8_192.0);
        let want = (1_000.0 * d + 3_000.0) / (1_000.0 * d + 1_000.0);
        let r = store.ratio("local/tiny").await.unwrap().unwrap();
        assert!((r - want).abs() < 1e-9, "{r}");
        // After a long session at 4 bytes a token, a run of small samples
        // at 1 byte a token barely moves it (a client cannot skew it with
        // tiny requests).
        let mut t = turn(
            s.id,
            9,
            vec![NewEntry::new(EntryKind::User, "y")],
            Vec::new(),
        );
        t.calibration = Some(clawgate_store::Calibration {
            model: "local/long".into(),
            bytes: 100_000,
            tokens: 25_000,
        });
        store.commit(t).await.unwrap();
        for i in 0..10 {
            let mut t = turn(
                s.id,
                10 + i,
                vec![NewEntry::new(EntryKind::User, "z")],
                Vec::new(),
            );
            t.calibration = Some(clawgate_store::Calibration {
                model: "local/long".into(),
                bytes: 300,
                tokens: 300,
            });
            store.commit(t).await.unwrap();
        }
        let moved = store.ratio("local/long").await.unwrap().unwrap();
        assert!(moved > 3.5, "4.0 -> {moved}");
    }
    let store = SqliteStore::open(&path).unwrap();
    let r = store.ratio("local/tiny").await.unwrap().unwrap();
    let d = 0.5f64.powf(3_000.0 / 8_192.0);
    assert!(
        (r - (1_000.0 * d + 3_000.0) / (1_000.0 * d + 1_000.0)).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(store.ratio("other/model").await.unwrap(), None);
}

#[test]
fn a_new_file_opened_by_several_processes_at_once_is_migrated_once() {
    // Threads with their own connections lock the file as processes do.
    for round in 0..25 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("state/s{round}.sqlite3"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteStore::open(&path)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        for h in handles {
            let r = h.join().unwrap();
            assert!(r.is_ok(), "round {round}: {r:?}");
        }
    }
}

#[tokio::test]
async fn sec_the_session_database_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("home/.clawgate/state/sessions.sqlite3");
    let store = SqliteStore::open(&path).unwrap();
    let s = store.load_turn("k", None, 1).await.unwrap().session;
    store
        .commit(turn(
            s.id,
            2,
            vec![NewEntry::new(EntryKind::User, "secret")],
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);
    for side in ["-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{side}", path.display()));
        assert_eq!(mode(&p), 0o600, "{side}");
    }
    drop(store);
    // Files an earlier version left readable are tightened on open.
    for p in [
        path.clone(),
        std::path::PathBuf::from(format!("{}-wal", path.display())),
    ] {
        // (The WAL is gone once the last connection has closed.)
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    std::fs::set_permissions(
        path.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let _store = SqliteStore::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert!(clawgate_store::private::readable_by_others(path.parent().unwrap()).is_empty());
}
