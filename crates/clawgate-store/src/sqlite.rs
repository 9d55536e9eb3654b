//! The embedded store: one SQLite file (WAL), migrations keyed by
//! `PRAGMA user_version`, one connection shared by the callers' threads
//! (a turn's short calls, when nothing can make them wait) and one store
//! thread (everything else, and checkpoints). By default `synchronous = NORMAL` in WAL mode: a
//! committed turn survives the process being killed at any point; only an
//! operating-system crash or power loss can drop the last turns (never
//! corrupt the file); [`Durability::PowerLoss`] adds an fsync per commit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::cache::{TurnCache, Written};
use crate::types::{
    Entry, EntryKind, GroupBy, ModelSource, NewEntry, Session, TurnCommit, TurnState, UsageQuery,
    UsageTotal,
};
use crate::{KeptResponse, Store, StoreError, StoreFuture};

/// The schema this build writes; older files are migrated on open, newer
/// ones are refused.
pub const SCHEMA_VERSION: i64 = 3;

const MIGRATIONS: [&str; 3] = [
    r#"
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY,
    key          TEXT NOT NULL UNIQUE,
    agent        TEXT,
    model        TEXT,
    model_source TEXT NOT NULL DEFAULT 'default',
    compactions  INTEGER NOT NULL DEFAULT 0,
    turns        INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL
);
CREATE TABLE entries (
    id               INTEGER PRIMARY KEY,
    session_id       INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    turn             INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    text             TEXT NOT NULL,
    tool_id          TEXT,
    tool_name        TEXT,
    is_error         INTEGER NOT NULL DEFAULT 0,
    incomplete       INTEGER NOT NULL DEFAULT 0,
    replaces_through INTEGER,
    at_ms            INTEGER NOT NULL
);
CREATE INDEX entries_by_session ON entries(session_id, id);
CREATE INDEX summaries_by_session ON entries(session_id, id) WHERE kind = 'summary';
CREATE TABLE usage (
    id          INTEGER PRIMARY KEY,
    session_id  INTEGER REFERENCES sessions(id) ON DELETE SET NULL,
    session_key TEXT,
    at_ms       INTEGER NOT NULL,
    provider    TEXT NOT NULL,
    model       TEXT NOT NULL,
    host        TEXT NOT NULL,
    api         TEXT NOT NULL,
    input       INTEGER NOT NULL,
    output      INTEGER NOT NULL,
    cache_read  INTEGER NOT NULL,
    cache_write INTEGER NOT NULL,
    reasoning   INTEGER NOT NULL,
    cost_usd    REAL NOT NULL,
    estimated   INTEGER NOT NULL
);
CREATE INDEX usage_by_time ON usage(at_ms);
CREATE TABLE responses (
    id         TEXT PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    body       TEXT NOT NULL,
    at_ms      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE sticky (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    profile    TEXT NOT NULL,
    PRIMARY KEY (session_id, provider)
) WITHOUT ROWID;
"#,
    // 2: the last server-reported prompt size and the last entry it
    // covered, to calibrate the next turn's estimate (CTX-2).
    r#"
ALTER TABLE sessions ADD COLUMN context_tokens INTEGER;
ALTER TABLE sessions ADD COLUMN context_through INTEGER;
"#,
    // 3: per served model, what its tokenizer makes of text (decayed sums
    // of prompt bytes and the tokens the server counted for them, CTX-2).
    r#"
CREATE TABLE calibration (
    model  TEXT PRIMARY KEY,
    bytes  REAL NOT NULL,
    tokens REAL NOT NULL,
    at_ms  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
];

/// How much of the earlier samples a new one keeps, per
/// [`CALIBRATION_SPAN`] bytes of it: the ratio follows a model that
/// changes (a swapped GGUF under the same id) within a few large turns,
/// while a run of small requests barely moves it.
const CALIBRATION_DECAY: f64 = 0.5;
const CALIBRATION_SPAN: f64 = 8_192.0;

/// Models whose ratio is kept in memory at most (they come from the
/// config, not from requests; past it the map starts over).
const MAX_RATIOS: usize = 4_096;

/// `(bytes, tokens)` per served model.
type Ratios = Arc<Mutex<std::collections::HashMap<String, (f64, f64)>>>;

fn lock_ratios(
    r: &Mutex<std::collections::HashMap<String, (f64, f64)>>,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (f64, f64)>> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Work for the store thread: it runs, and returns how to answer its
/// caller once the batch it ran in is committed (with the batch's commit
/// error, if that failed).
type Job = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

/// Most calls one group commit takes.
const MAX_BATCH: usize = 64;

/// How long the store thread waits for another process's write lock.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// WAL pages after which the store thread checkpoints (SQLite's own
/// default for its automatic checkpoint).
const CHECKPOINT_PAGES: i32 = 1000;

/// WAL pages after which calls stop running on the callers' threads and
/// queue behind the checkpoint: the bound on the WAL when the store thread
/// is slow to get the CPU.
const WAL_LIMIT_PAGES: i32 = 4 * CHECKPOINT_PAGES;

/// The SQLite [`Store`]. One connection, behind a mutex, and one store
/// thread that runs queued calls in group commits: no pool of blocked
/// threads under load (the blocking pool grew to one thread per waiting
/// call, each with its own allocator heap).
///
/// The short calls of a turn (load, commit, model selection, a kept
/// answer) run on the caller's thread when the connection is free and
/// nothing can make them wait: `synchronous = NORMAL` (no fsync in a
/// commit), no busy wait (another process holding the write lock sends
/// the call to the store thread instead), and checkpoints are the store
/// thread's. A hop to the store thread and back cost two context switches
/// and two wake-ups per call, more than the call itself. When the
/// connection is busy, calls queue and share a group commit as before.
/// Clones share the thread; it ends when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: std::sync::mpsc::Sender<Job>,
    conn: Arc<Mutex<Connection>>,
    /// Commits waiting for the worker-side group commit they joined.
    pending: Arc<Mutex<Vec<Job>>>,
    /// Hot sessions' turn state; locked only by a holder of `conn`.
    cache: Arc<Mutex<TurnCache>>,
    /// Whether short calls may run on the caller's thread.
    inline: bool,
    path: PathBuf,
    /// Calls run and transactions (group commits) they ran in.
    counts: Arc<Counts>,
    /// Every model's calibration, read once at open and kept by commits.
    ratios: Ratios,
}

#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    batches: AtomicU64,
    /// Pages in the WAL after the last commit (SQLite's WAL hook).
    wal_pages: AtomicI32,
    /// A checkpoint is queued for the store thread.
    checkpoint_queued: AtomicBool,
}

/// Locks the connection; a caller that panicked while holding it left
/// SQLite consistent (every call is a savepoint that rolls back).
fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_cache(cache: &Mutex<TurnCache>) -> std::sync::MutexGuard<'_, TurnCache> {
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_pending(pending: &Mutex<Vec<Job>>) -> std::sync::MutexGuard<'_, Vec<Job>> {
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Another connection (a CLI command, say) holds the lock.
fn is_busy(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Checkpoints when the WAL has grown past [`CHECKPOINT_PAGES`] (on the
/// store thread only: it may fsync).
fn checkpoint_if_due(conn: &Connection, counts: &Counts) {
    counts.checkpoint_queued.store(false, Ordering::Relaxed);
    if counts.wal_pages.load(Ordering::Relaxed) >= CHECKPOINT_PAGES {
        match conn.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE) {
            Ok(_) => counts.wal_pages.store(0, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed; retried later"),
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteStore({})", self.path.display())
    }
}

fn open_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// What a committed turn survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The process being killed at any point (`synchronous = NORMAL` in
    /// WAL mode: no fsync per commit).
    #[default]
    ProcessCrash,
    /// Also an operating-system crash or power loss (`synchronous = FULL`:
    /// one fsync per commit).
    PowerLoss,
}

impl SqliteStore {
    /// Opens (creating the file and its folder on first use) and migrates.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Durability::default())
    }

    /// [`SqliteStore::open`] with a durability level.
    pub fn open_with(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        // Transcripts are private: the folder 0700, the file (and the
        // WAL and shared-memory files SQLite makes with its mode) 0600.
        crate::private::prepare(path).map_err(|e| open_error(path, e))?;
        let mut conn = Connection::open(path).map_err(|e| open_error(path, e))?;
        // Before anything that takes a lock: another process opening the
        // same new file at the same moment is waited for, not an error.
        conn.busy_timeout(BUSY_WAIT)?;
        let sync = match durability {
            Durability::ProcessCrash => "NORMAL",
            Durability::PowerLoss => "FULL",
        };
        // Switching a new file to WAL and migrating it can still meet a
        // lock SQLite does not wait for (another process doing the same at
        // that instant): tried again, within the same bound.
        let started = std::time::Instant::now();
        loop {
            let set = conn
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(StoreError::from)
                .and_then(|()| Ok(conn.pragma_update(None, "synchronous", sync)?))
                .and_then(|()| Ok(conn.pragma_update(None, "foreign_keys", "ON")?))
                .and_then(|()| migrate(&mut conn));
            match set {
                Ok(()) => break,
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
        // More distinct statements than rusqlite's default cache of 16 run
        // in a turn; an evicted one is parsed again.
        conn.set_prepared_statement_cache_capacity(64);
        // Without the planner stability guarantee SQLite re-prepares a
        // statement whenever a bound value it looked at changes; the
        // partial index on summaries made it look at the session id, so
        // every history read of another session was parsed and planned
        // again (a third of a session turn's instructions).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        let ratios: Ratios = Arc::default();
        {
            let mut stmt = conn.prepare("SELECT model, bytes, tokens FROM calibration")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?))))?;
            let mut map = lock_ratios(&ratios);
            for row in rows.take(MAX_RATIOS) {
                let (model, v) = row?;
                map.insert(model, v);
            }
        }
        let counts = Arc::new(Counts::default());
        // Replaces SQLite's automatic checkpoint, which would run (and
        // fsync) inside whichever commit crossed the threshold, possibly
        // on a caller's thread.
        let pages = counts.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n: i32| {
            pages.wal_pages.store(n, Ordering::Relaxed);
            Ok(())
        }))?;
        let conn = Arc::new(Mutex::new(conn));
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let cache: Arc<Mutex<TurnCache>> = Arc::default();
        let (counted, owned, cached) = (counts.clone(), conn.clone(), cache.clone());
        std::thread::Builder::new()
            .name("clawgate-store".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    counted
                        .calls
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    counted.batches.fetch_add(1, Ordering::Relaxed);
                    let mut conn = lock(&owned);
                    group_commit(&mut conn, batch, &cached);
                    checkpoint_if_due(&conn, &counted);
                }
            })
            .map_err(|e| open_error(path, e))?;
        Ok(Self {
            jobs,
            conn,
            pending: Arc::default(),
            cache,
            inline: durability == Durability::ProcessCrash,
            path: path.to_path_buf(),
            counts,
            ratios,
        })
    }

    /// Calls run so far, and the transactions they ran in (fewer under
    /// load: group commit).
    pub fn batching(&self) -> (u64, u64) {
        let o = Ordering::Relaxed;
        (self.counts.calls.load(o), self.counts.batches.load(o))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's own consistency check: `"ok"` or the problems it found.
    /// Blocks the calling thread until the store thread has run it.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move |conn| {
            let check = (|| {
                let mut stmt = conn.prepare("PRAGMA integrity_check")?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?.join("; "))
            })();
            let _ = tx.send(check);
            Box::new(|_: Option<&str>| {})
        });
        self.jobs.send(job).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }

    /// Runs a short call on the caller's thread when the connection is
    /// free and the store never waits in it (see [`SqliteStore`]);
    /// otherwise on the store thread. `f` runs again there if the first
    /// try found the database locked by another process (its savepoint
    /// rolled back).
    fn quick<'a, T: Send + 'static>(
        &'a self,
        f: impl Fn(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        if self.here() {
            if let Ok(mut conn) = self.conn.try_lock() {
                let _ = conn.busy_timeout(std::time::Duration::ZERO);
                let result = f(&mut conn);
                let _ = conn.busy_timeout(BUSY_WAIT);
                drop(conn);
                if !matches!(&result, Err(e) if is_busy(e)) {
                    self.counts.calls.fetch_add(1, Ordering::Relaxed);
                    self.counts.batches.fetch_add(1, Ordering::Relaxed);
                    self.checkpoint_later();
                    return Box::pin(std::future::ready(result));
                }
            }
        }
        self.run(f)
    }

    /// Commits a turn: on the caller's thread in a group commit of the
    /// turns that reach their commit meanwhile, or on the store thread
    /// (see [`SqliteStore`]). The first commit to arrive leads: it yields
    /// once, so the other ready tasks on its worker run up to their own
    /// commits and join the batch, then it runs the batch in one
    /// transaction. Alone, a turn commits at once after one yield.
    fn commit_turn<'a>(
        &'a self,
        f: impl FnOnce(&mut Connection) -> Result<(), StoreError> + Send + 'static,
    ) -> StoreFuture<'a, ()> {
        if !self.inline {
            return self.run(f);
        }
        let (job, rx) = job(f);
        let leads = {
            let mut pending = lock_pending(&self.pending);
            pending.push(job);
            pending.len() == 1
        };
        Box::pin(async move {
            if leads {
                let mut leader = Leader {
                    store: self,
                    done: false,
                };
                tokio::task::yield_now().await;
                leader.done = true;
                self.commit_here(self.take_pending());
            }
            rx.await.map_err(|_| gone())?
        })
    }

    fn take_pending(&self) -> Vec<Job> {
        std::mem::take(&mut *lock_pending(&self.pending))
    }

    /// Sends jobs to the store thread (their callers learn if it is gone:
    /// their answer channels close).
    fn queue(&self, batch: Vec<Job>) {
        for job in batch {
            let _ = self.jobs.send(job);
        }
    }

    /// Runs a batch in one transaction on this thread, or hands it to the
    /// store thread when the connection is busy here or another process
    /// holds the write lock (nothing ran yet in either case).
    fn commit_here(&self, batch: Vec<Job>) {
        if batch.is_empty() {
            return;
        }
        if !self.here() {
            return self.queue(batch);
        }
        let Ok(mut conn) = self.conn.try_lock() else {
            return self.queue(batch);
        };
        let _ = conn.busy_timeout(std::time::Duration::ZERO);
        let began = begin_immediate(&conn);
        let _ = conn.busy_timeout(BUSY_WAIT);
        if began.is_err() {
            drop(conn);
            return self.queue(batch);
        }
        let n = batch.len() as u64;
        let (replies, outcome) = run_batch(&mut conn, batch, true, &self.cache);
        drop(conn);
        self.counts.calls.fetch_add(n, Ordering::Relaxed);
        self.counts.batches.fetch_add(1, Ordering::Relaxed);
        answer(replies, &outcome);
        self.checkpoint_later();
    }

    /// Whether a call may run on the caller's thread now.
    fn here(&self) -> bool {
        self.inline && self.counts.wal_pages.load(Ordering::Relaxed) < WAL_LIMIT_PAGES
    }

    /// Queues a checkpoint for the store thread when the WAL is due one.
    fn checkpoint_later(&self) {
        if self.counts.wal_pages.load(Ordering::Relaxed) >= CHECKPOINT_PAGES
            && !self.counts.checkpoint_queued.swap(true, Ordering::Relaxed)
        {
            let job: Job = Box::new(|_| Box::new(|_: Option<&str>| {}));
            // The thread checkpoints after every batch it runs.
            let _ = self.jobs.send(job);
        }
    }

    /// Runs `f` with the connection on the store thread.
    fn run<'a, T: Send + 'static>(
        &'a self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        let (job, rx) = job(f);
        let sent = self.jobs.send(job);
        Box::pin(async move {
            sent.map_err(|_| gone())?;
            rx.await.map_err(|_| gone())?
        })
    }
}

/// Runs the calls that queued up meanwhile in one transaction — each in
/// its own savepoint, so one that fails leaves the others whole — and
/// answers every caller only after the commit: under load many turns share
/// one WAL commit (the same pages written once, not once per turn); a
/// lone call is its own transaction.
fn group_commit(conn: &mut Connection, batch: Vec<Job>, cache: &Mutex<TurnCache>) {
    if batch.len() == 1 {
        for job in batch {
            job(conn)(None);
        }
        return;
    }
    let began = begin_immediate(conn).is_ok();
    let (replies, outcome) = run_batch(conn, batch, began, cache);
    answer(replies, &outcome);
}

fn begin_immediate(conn: &Connection) -> rusqlite::Result<usize> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])
}

/// Runs the jobs, then commits when a transaction was begun (rolls back
/// when the commit fails). The replies wait for [`answer`].
fn run_batch(
    conn: &mut Connection,
    batch: Vec<Job>,
    began: bool,
    cache: &Mutex<TurnCache>,
) -> (Vec<Reply>, Result<(), String>) {
    let replies: Vec<Reply> = batch.into_iter().map(|job| job(conn)).collect();
    let outcome = if began {
        conn.prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    if outcome.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
        // What the jobs put in the cache was rolled back.
        lock_cache(cache).clear();
    }
    (replies, outcome)
}

fn answer(replies: Vec<Reply>, outcome: &Result<(), String>) {
    let failed = outcome.as_ref().err().map(String::as_str);
    for reply in replies {
        reply(failed);
    }
}

/// One call's unit of work: a savepoint (a transaction of its own outside a
/// group commit) whose statements are prepared once — rusqlite's
/// `savepoint()` parses its SQL on every call, which showed in profiles.
/// Dropped without `commit`, it rolls back.
struct Unit<'c> {
    conn: &'c Connection,
    done: bool,
}

impl<'c> Unit<'c> {
    fn begin(conn: &'c Connection) -> Result<Self, StoreError> {
        conn.prepare_cached("SAVEPOINT unit")?.execute([])?;
        Ok(Self { conn, done: false })
    }

    fn commit(mut self) -> Result<(), StoreError> {
        self.conn.prepare_cached("RELEASE unit")?.execute([])?;
        self.done = true;
        Ok(())
    }
}

impl std::ops::Deref for Unit<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Unit<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK TO unit; RELEASE unit");
        }
    }
}

/// `f` as a job for a batch, and where its answer arrives.
fn job<T: Send + 'static>(
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
) -> (Job, tokio::sync::oneshot::Receiver<Result<T, StoreError>>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |conn| {
        let result = f(conn);
        Box::new(move |batch: Option<&str>| {
            let _ = tx.send(match (result, batch) {
                (Ok(_), Some(e)) => Err(StoreError::Commit(e.to_string())),
                (r, _) => r,
            });
        })
    });
    (job, rx)
}

/// The leader of a worker-side group commit, dropped before it ran the
/// batch (its caller went away): the store thread runs the batch, so the
/// commits waiting in it are neither lost nor left waiting.
struct Leader<'a> {
    store: &'a SqliteStore,
    done: bool,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.store.queue(self.store.take_pending());
        }
    }
}

fn gone() -> StoreError {
    StoreError::Worker("the store thread has stopped".into())
}

/// Brings the schema up to [`SCHEMA_VERSION`] once, whoever opens the
/// file first: the version is read again inside one immediate
/// transaction (which waits for another process's migration), so a
/// second process starting at the same moment finds the work done.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version = |c: &Connection| -> Result<i64, StoreError> {
        let found: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(found)
    };
    if version(conn)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    for sql in MIGRATIONS.iter().skip(found as usize) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// The columns as a macro, so the per-turn queries are constants (no
/// string built per call).
macro_rules! session_columns {
    () => {
        "id, key, agent, model, model_source, compactions, turns, created_ms, updated_ms, context_tokens, context_through"
    };
}
const SESSION_COLUMNS: &str = session_columns!();

fn session_row(r: &Row<'_>) -> rusqlite::Result<(Session, String)> {
    let source: String = r.get(4)?;
    Ok((
        Session {
            id: r.get(0)?,
            key: r.get(1)?,
            agent: r.get(2)?,
            model: r.get(3)?,
            model_source: ModelSource::Default,
            compactions: r.get(5)?,
            turns: r.get(6)?,
            created_ms: r.get(7)?,
            updated_ms: r.get(8)?,
            context: match (r.get::<_, Option<i64>>(9)?, r.get::<_, Option<i64>>(10)?) {
                (Some(t), Some(through)) => Some((t.max(0) as u64, through)),
                _ => None,
            },
        },
        source,
    ))
}

fn session(found: (Session, String)) -> Result<Session, StoreError> {
    let (mut s, source) = found;
    s.model_source = ModelSource::parse(&source).ok_or(StoreError::Corrupt {
        column: "sessions.model_source",
        value: source,
    })?;
    Ok(s)
}

fn get_session(conn: &Connection, key: &str) -> Result<Option<Session>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE key = ?1"
    ))?
    .query_row([key], session_row)
    .optional()?
    .map(session)
    .transpose()
}

macro_rules! entry_columns {
    () => {
        "id, turn, kind, text, tool_id, tool_name, is_error, incomplete, replaces_through, at_ms"
    };
}
const ENTRY_COLUMNS: &str = entry_columns!();

/// An entry, or the unknown kind it was stored with (the text of the
/// kind is read in place: no string per row for a known kind).
fn entry_row(r: &Row<'_>) -> rusqlite::Result<Result<Entry, String>> {
    let kind = r.get_ref(2)?.as_str()?;
    let Some(kind) = EntryKind::parse(kind) else {
        return Ok(Err(kind.to_string()));
    };
    Ok(Ok(Entry {
        id: r.get(0)?,
        turn: r.get(1)?,
        kind,
        text: r.get(3)?,
        tool_id: r.get(4)?,
        tool_name: r.get(5)?,
        is_error: r.get(6)?,
        incomplete: r.get(7)?,
        replaces_through: r.get(8)?,
        at_ms: r.get(9)?,
    }))
}

fn entries(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Entry>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, entry_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?.map_err(|value| StoreError::Corrupt {
            column: "entries.kind",
            value,
        })?);
    }
    Ok(out)
}

fn append(
    tx: &Connection,
    session: i64,
    turn: u32,
    e: &NewEntry,
    at_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO entries (session_id, turn, kind, text, tool_id, tool_name, is_error, incomplete, replaces_through, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        session,
        turn,
        e.kind.as_str(),
        e.text,
        e.tool_id,
        e.tool_name,
        e.is_error,
        e.incomplete,
        e.replaces_through,
        at_ms
    ])?;
    Ok(())
}

/// Creates the session `key` unless it exists. Its own write transaction
/// when called outside one: SQLite answers a read transaction that tries
/// to become a write one while another connection writes with "database
/// is locked" at once, without waiting; a transaction that starts by
/// taking the write lock waits (the store thread's busy timeout).
fn create_session(
    conn: &Connection,
    key: &str,
    agent: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let own = conn.is_autocommit();
    if own {
        begin_immediate(conn)?;
    }
    let inserted = conn
        .prepare_cached(
            "INSERT INTO sessions (key, agent, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(key) DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![key, agent, now_ms]));
    if own {
        match &inserted {
            Ok(_) => {
                conn.prepare_cached("COMMIT")?.execute([])?;
            }
            Err(_) => {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
    inserted?;
    Ok(())
}

/// Keys tried at most for one agent's session (its own key, then the
/// `@<agent>` forms).
const MAX_OWNER_HOPS: usize = 4;

/// The key of `agent`'s own session where `key` belongs to another agent.
fn owned_key(key: &str, agent: Option<&str>) -> String {
    format!("{key}@{}", agent.unwrap_or("default"))
}

/// The last summary first, then every entry after what it replaced.
fn history_of(conn: &Connection, session: i64) -> Result<Vec<Entry>, StoreError> {
    let summary = entries(
        conn,
        concat!(
            "SELECT ",
            entry_columns!(),
            " FROM entries WHERE session_id = ?1 AND kind = 'summary' ORDER BY id DESC LIMIT 1"
        ),
        [session],
    )?;
    let from = summary
        .first()
        .and_then(|s| s.replaces_through)
        .unwrap_or(0);
    let rest = entries(
        conn,
        concat!(
            "SELECT ",
            entry_columns!(),
            " FROM entries WHERE session_id = ?1 AND id > ?2 AND kind <> 'summary' ORDER BY id"
        ),
        params![session, from],
    )?;
    let mut out = summary;
    out.extend(rest);
    Ok(out)
}

fn pins_of(conn: &Connection, session: i64) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT provider, profile FROM sticky WHERE session_id = ?1 ORDER BY provider",
    )?;
    let rows = stmt.query_map([session], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

impl Store for SqliteStore {
    fn load_turn<'a>(
        &'a self,
        key: &'a str,
        agent: Option<&'a str>,
        now_ms: i64,
    ) -> StoreFuture<'a, TurnState> {
        let (asked, agent) = (key.to_string(), agent.map(str::to_string));
        let cache = self.cache.clone();
        self.quick(move |conn| {
            let mut key = asked.clone();
            let mut cached = lock_cache(&cache);
            cached.check(conn)?;
            // A session belongs to the agent that created it (CTX-4):
            // another agent on the same key gets its own, under the key
            // with `@<agent>` appended (again, if a client took that one
            // for yet another agent).
            let mut hops = 0;
            let state = loop {
                hops += 1;
                if hops > MAX_OWNER_HOPS {
                    return Err(StoreError::Owner(key));
                }
                if let Some(state) = cached.get(&key) {
                    if state.session.agent == agent {
                        return Ok(state);
                    }
                    key = owned_key(&key, agent.as_deref());
                    continue;
                }
                // One transaction: one snapshot, one lock round for the three.
                // Most turns continue a session: a read, and a write only for
                // a new one (an upsert would take the write lock every turn).
                let mut tx = Unit::begin(conn)?;
                let session = match get_session(&tx, &key)? {
                    Some(s) => s,
                    None => {
                        tx.commit()?;
                        create_session(conn, &key, agent.as_deref(), now_ms)?;
                        tx = Unit::begin(conn)?;
                        get_session(&tx, &key)?.ok_or_else(|| StoreError::NoSession(key.clone()))?
                    }
                };
                if session.agent != agent {
                    tx.commit()?;
                    key = owned_key(&key, agent.as_deref());
                    continue;
                }
                let history = history_of(&tx, session.id)?;
                let pins = pins_of(&tx, session.id)?;
                tx.commit()?;
                break TurnState {
                    session,
                    history,
                    pins,
                };
            };
            cached.put(state.clone());
            Ok(state)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Session>> {
        let key = key.to_string();
        self.quick(move |conn| get_session(conn, &key))
    }

    fn transcript(&self, session: i64) -> StoreFuture<'_, Vec<Entry>> {
        self.run(move |conn| {
            entries(
                conn,
                &format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE session_id = ?1 ORDER BY id"),
                [session],
            )
        })
    }

    fn commit(&self, turn: TurnCommit) -> StoreFuture<'_, ()> {
        let cache = self.cache.clone();
        let ratios = self.ratios.clone();
        self.commit_turn(move |conn| {
            let tx = Unit::begin(conn)?;
            // A compaction committed on its own is not a turn; an empty
            // summary is a `/new` marker, not a compaction.
            let counts = turn.entries.iter().any(|e| e.kind != EntryKind::Summary);
            let compacted = turn
                .entries
                .iter()
                .any(|e| e.kind == EntryKind::Summary && !e.text.is_empty());
            // One statement numbers the turn and touches the session.
            let (key, number): (String, u32) = tx
                .prepare_cached(
                    "UPDATE sessions SET turns = turns + ?2, updated_ms = ?3, compactions = compactions + ?4
                     WHERE id = ?1 RETURNING key, turns",
                )?
                .query_row(
                    params![turn.session, u32::from(counts), turn.at_ms, u32::from(compacted)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| StoreError::NoSession(format!("#{}", turn.session)))?;
            let mut through = None;
            let mut ids = Vec::with_capacity(turn.entries.len());
            for (i, e) in turn.entries.iter().enumerate() {
                append(&tx, turn.session, number, e, turn.at_ms)?;
                ids.push(tx.last_insert_rowid());
                if turn.context.is_some_and(|(_, n)| n == i + 1) {
                    through = Some(tx.last_insert_rowid());
                }
            }
            for u in &turn.usage {
                tx.prepare_cached(
                    "INSERT INTO usage (session_id, session_key, at_ms, provider, model, host, api, input, output, cache_read, cache_write, reasoning, cost_usd, estimated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )?
                .execute(params![
                    turn.session,
                    key,
                    turn.at_ms,
                    u.provider,
                    u.model,
                    u.host,
                    u.api,
                    u.input as i64,
                    u.output as i64,
                    u.cache_read as i64,
                    u.cache_write as i64,
                    u.reasoning as i64,
                    u.cost_usd,
                    u.estimated
                ])?;
            }
            if let Some((id, body)) = &turn.response {
                tx.prepare_cached(
                    "INSERT INTO responses (id, session_id, body, at_ms) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![id, turn.session, body, turn.at_ms])?;
            }
            if let Some((provider, profile)) = &turn.sticky {
                tx.prepare_cached(
                    "INSERT INTO sticky (session_id, provider, profile) VALUES (?1, ?2, ?3)
                     ON CONFLICT(session_id, provider) DO UPDATE SET profile = excluded.profile",
                )?
                .execute(params![turn.session, provider, profile])?;
            }
            // The calibration follows the newest reported prompt; a summary
            // without one makes the old one meaningless.
            let context = match (turn.context, through) {
                (Some((tokens, _)), Some(through)) => Some((tokens, through)),
                _ => None,
            };
            match (turn.context, through) {
                (Some((tokens, _)), Some(through)) => {
                    tx.prepare_cached(
                        "UPDATE sessions SET context_tokens = ?2, context_through = ?3 WHERE id = ?1",
                    )?
                    .execute(params![turn.session, tokens as i64, through])?;
                }
                _ if compacted => {
                    tx.prepare_cached(
                        "UPDATE sessions SET context_tokens = NULL, context_through = NULL WHERE id = ?1",
                    )?
                    .execute([turn.session])?;
                }
                _ => {}
            }
            let learned = match &turn.calibration {
                Some(c) if c.bytes > 0 && c.tokens > 0 => Some((
                    c.model.clone(),
                    tx.prepare_cached(
                        "INSERT INTO calibration (model, bytes, tokens, at_ms) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(model) DO UPDATE SET bytes = bytes * ?5 + excluded.bytes,
                         tokens = tokens * ?5 + excluded.tokens, at_ms = excluded.at_ms
                         RETURNING bytes, tokens",
                    )?
                    .query_row(
                        params![
                            c.model,
                            c.bytes as f64,
                            c.tokens as f64,
                            turn.at_ms,
                            CALIBRATION_DECAY.powf(c.bytes as f64 / CALIBRATION_SPAN)
                        ],
                        |r| Ok((r.get::<_, f64>(0)?, r.get::<_, f64>(1)?)),
                    )?,
                )),
                _ => None,
            };
            tx.commit()?;
            if let Some((model, v)) = learned {
                let mut map = lock_ratios(&ratios);
                if map.len() >= MAX_RATIOS && !map.contains_key(&model) {
                    map.clear();
                }
                map.insert(model, v);
            }
            lock_cache(&cache).committed(
                &key,
                &turn,
                Written {
                    number,
                    ids,
                    context,
                },
            );
            Ok(())
        })
    }

    fn reset(&self, session: i64, model_too: bool, now_ms: i64) -> StoreFuture<'_, ()> {
        let cache = self.cache.clone();
        self.quick(move |conn| {
            lock_cache(&cache).forget_id(session);
            let tx = Unit::begin(conn)?;
            let last: Option<i64> = tx
                .prepare_cached("SELECT MAX(id) FROM entries WHERE session_id = ?1")?
                .query_row([session], |r| r.get(0))?;
            if let Some(last) = last {
                let turns: u32 = tx
                    .prepare_cached("SELECT turns FROM sessions WHERE id = ?1")?
                    .query_row([session], |r| r.get(0))?;
                append(
                    &tx,
                    session,
                    turns,
                    &NewEntry {
                        replaces_through: Some(last),
                        ..NewEntry::new(EntryKind::Summary, "")
                    },
                    now_ms,
                )?;
            }
            tx.prepare_cached("DELETE FROM sticky WHERE session_id = ?1")?
                .execute([session])?;
            tx.prepare_cached(
                "UPDATE sessions SET context_tokens = NULL, context_through = NULL, updated_ms = ?2 WHERE id = ?1",
            )?
            .execute(params![session, now_ms])?;
            if model_too {
                tx.prepare_cached(
                    "UPDATE sessions SET model = NULL, model_source = 'default' WHERE id = ?1",
                )?
                .execute([session])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn select_model<'a>(
        &'a self,
        session: i64,
        model: Option<&'a str>,
        source: ModelSource,
        now_ms: i64,
    ) -> StoreFuture<'a, ()> {
        let model = model.map(str::to_string);
        let cache = self.cache.clone();
        self.quick(move |conn| {
            lock_cache(&cache).forget_id(session);
            let n = conn
                .prepare_cached(
                    "UPDATE sessions SET model = ?2, model_source = ?3, updated_ms = ?4 WHERE id = ?1",
                )?
                .execute(params![session, model, source.as_str(), now_ms])?;
            if n == 0 {
                return Err(StoreError::NoSession(format!("#{session}")));
            }
            Ok(())
        })
    }

    fn response<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<KeptResponse>> {
        let id = id.to_string();
        self.quick(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT s.key, s.agent, r.body FROM responses r JOIN sessions s ON s.id = r.session_id WHERE r.id = ?1",
                )?
                .query_row([&id], |r| {
                    Ok(KeptResponse {
                        key: r.get(0)?,
                        agent: r.get(1)?,
                        body: r.get(2)?,
                    })
                })
                .optional()?)
        })
    }

    fn ratio<'a>(&'a self, model: &'a str) -> StoreFuture<'a, Option<f64>> {
        let found = lock_ratios(&self.ratios)
            .get(model)
            .filter(|(b, t)| *b > 0.0 && *t > 0.0)
            .map(|(b, t)| b / t);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn sessions(&self, limit: usize) -> StoreFuture<'_, Vec<Session>> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY updated_ms DESC, id DESC LIMIT ?1"
            ))?;
            let rows = stmt.query_map([limit as i64], session_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(session(r?)?);
            }
            Ok(out)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        let key = key.to_string();
        let cache = self.cache.clone();
        self.run(move |conn| {
            lock_cache(&cache).forget_key(&key);
            Ok(conn
                .prepare_cached("DELETE FROM sessions WHERE key = ?1")?
                .execute([&key])?
                > 0)
        })
    }

    fn usage(&self, query: UsageQuery) -> StoreFuture<'_, Vec<UsageTotal>> {
        self.run(move |conn| {
            let group = match query.by {
                GroupBy::Model => "provider || '/' || model",
                GroupBy::Session => "COALESCE(session_key, '(none)')",
                GroupBy::Day => "strftime('%Y-%m-%d', at_ms / 1000, 'unixepoch')",
                GroupBy::Endpoint => "host",
            };
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {group} AS g, COUNT(*), SUM(input), SUM(output), SUM(cache_read), SUM(cache_write),
                        SUM(reasoning), SUM(cost_usd), SUM(estimated)
                 FROM usage WHERE at_ms >= ?1 AND (?2 IS NULL OR session_key = ?2)
                   AND (?3 IS NULL OR session_id = ?3)
                 GROUP BY g ORDER BY g"
            ))?;
            let rows = stmt.query_map(params![query.since_ms, query.session, query.session_id], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(UsageTotal {
                    group: r.get(0)?,
                    calls: n(1)?,
                    input: n(2)?,
                    output: n(3)?,
                    cache_read: n(4)?,
                    cache_write: n(5)?,
                    reasoning: n(6)?,
                    cost_usd: r.get(7)?,
                    estimated_calls: n(8)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
