//! Durable sessions (CTX-1, GW-2): the [`Store`] trait the turn step talks
//! to — sessions, transcript entries, usage rows, sticky credentials — and
//! [`SqliteStore`], its embedded implementation (one file, WAL, versioned
//! migrations, created on first use; no server to start).
//!
//! The trait is asynchronous and narrow (load what the next turn needs,
//! commit a turn in one transaction, select a model, read a session, its
//! transcript or a kept answer, list, delete, sum usage) so a PostgreSQL implementation can follow without touching
//! callers (SPEC section 10). SQLite work runs on one store thread.

mod cache;
pub mod private;
mod sqlite;
mod types;

use std::future::Future;
use std::pin::Pin;

pub use sqlite::{Durability, SqliteStore, SCHEMA_VERSION};
pub use types::{
    Calibration, Entry, EntryKind, GroupBy, ModelSource, NewEntry, Session, TurnCommit, TurnState,
    UsageQuery, UsageRow, UsageTotal,
};

/// A kept Responses answer and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptResponse {
    /// The session it continues.
    pub key: String,
    /// The agent that owns that session (`None`: the default agent).
    pub agent: Option<String>,
    /// The response object as JSON text.
    pub body: String,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store {path}: {message}")]
    Open { path: String, message: String },
    #[error("session store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("session store: the database was written by a newer clawgate (schema {found}, this one knows up to {known})")]
    TooNew { found: i64, known: i64 },
    #[error("session store: no session {0:?}")]
    NoSession(String),
    #[error("session store: committing failed: {0}")]
    Commit(String),
    #[error("session store: a worker thread failed: {0}")]
    Worker(String),
    #[error("session store: session key {0:?} and its per-agent forms all belong to other agents; use another key")]
    Owner(String),
    #[error("session store: unexpected value in {column}: {value:?}")]
    Corrupt { column: &'static str, value: String },
}

/// A boxed future, so the trait is object safe (`Arc<dyn Store>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where sessions live. Every method is one transaction.
pub trait Store: Send + Sync {
    /// Everything the next turn needs in one call: the session (created,
    /// for `agent`, when missing; a key another agent owns names that
    /// agent's session, never this one's: `agent`'s own session is the
    /// key with `@<agent>` appended, `@default` for the default agent); its history — the latest compaction
    /// summary first, then every entry after what it replaced, oldest
    /// first, never the whole of a long transcript —; and its credential
    /// pins.
    fn load_turn<'a>(
        &'a self,
        key: &'a str,
        agent: Option<&'a str>,
        now_ms: i64,
    ) -> StoreFuture<'a, TurnState>;

    /// The session with this key, if any.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Session>>;

    /// Every entry, oldest first (export).
    fn transcript(&self, session: i64) -> StoreFuture<'_, Vec<Entry>>;

    /// Appends a turn's entries and usage rows, pins the credential and
    /// touches the session, all or nothing.
    fn commit(&self, turn: TurnCommit) -> StoreFuture<'_, ()>;

    /// `/new` (and `/reset` with `model_too`): the next turn starts with an
    /// empty history — an empty summary marks where (the transcript stays
    /// whole) —, the credential pins and the context calibration are
    /// dropped, and with `model_too` the model selection goes back to the
    /// default.
    fn reset(&self, session: i64, model_too: bool, now_ms: i64) -> StoreFuture<'_, ()>;

    /// Records the session's model selection and where it came from.
    fn select_model<'a>(
        &'a self,
        session: i64,
        model: Option<&'a str>,
        source: ModelSource,
        now_ms: i64,
    ) -> StoreFuture<'a, ()>;

    /// A stored Responses answer: its session's key, the agent that owns
    /// that session and the response object as JSON text
    /// (`previous_response_id`, `GET /v1/responses/{id}`).
    fn response<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<KeptResponse>>;

    /// The bytes per token learned for a served model (`provider/model`)
    /// from the server's own prompt counts, when any were reported.
    fn ratio<'a>(&'a self, model: &'a str) -> StoreFuture<'a, Option<f64>>;

    /// Sessions, most recently updated first.
    fn sessions(&self, limit: usize) -> StoreFuture<'_, Vec<Session>>;

    /// Deletes a session with its entries and pins (usage rows stay, with
    /// the session forgotten: what left the machine stays accounted).
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;

    /// Usage totals grouped as asked.
    fn usage(&self, query: UsageQuery) -> StoreFuture<'_, Vec<UsageTotal>>;
}
