//! The turn state of hot sessions, kept in memory so that a turn does not
//! read back from SQLite what the previous turn just wrote (the history
//! rows were a quarter of a session turn's instructions).
//!
//! Exact, not approximate: it is read and changed only by calls that hold
//! the store's connection, a commit updates it from what it wrote, every
//! other write through the store drops the session, a batch that fails to
//! commit drops everything, and a write by another connection (another
//! process: a `clawgate sessions` command) is seen through SQLite's
//! `data_version`, which then drops everything too.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::types::{Entry, EntryKind, TurnCommit, TurnState};
use crate::StoreError;

/// Sessions kept at most; past it the cache starts over.
const MAX_SESSIONS: usize = 256;
/// Text bytes kept at most, over all sessions; a single history larger
/// than a quarter of it is not kept.
const MAX_BYTES: usize = 16 * 1024 * 1024;

#[derive(Default)]
pub(crate) struct TurnCache {
    /// SQLite's `data_version` when the cache was last checked.
    version: Option<i64>,
    turns: HashMap<String, TurnState>,
    bytes: usize,
}

fn size(t: &TurnState) -> usize {
    t.history.iter().map(|e| e.text.len() + 64).sum::<usize>() + t.session.key.len() + 256
}

impl TurnCache {
    /// Drops everything when another connection committed since the last
    /// check.
    pub(crate) fn check(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let v: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if self.version != Some(v) {
            self.clear();
            self.version = Some(v);
        }
        Ok(())
    }

    pub(crate) fn clear(&mut self) {
        self.turns.clear();
        self.bytes = 0;
    }

    pub(crate) fn get(&self, key: &str) -> Option<TurnState> {
        self.turns.get(key).cloned()
    }

    pub(crate) fn put(&mut self, state: TurnState) {
        let n = size(&state);
        if n > MAX_BYTES / 4 {
            self.forget_key(&state.session.key);
            return;
        }
        if self.turns.len() >= MAX_SESSIONS || self.bytes + n > MAX_BYTES {
            self.clear();
        }
        self.bytes += n;
        if let Some(old) = self.turns.insert(state.session.key.clone(), state) {
            self.bytes = self.bytes.saturating_sub(size(&old));
        }
    }

    pub(crate) fn forget_key(&mut self, key: &str) {
        if let Some(old) = self.turns.remove(key) {
            self.bytes = self.bytes.saturating_sub(size(&old));
        }
    }

    pub(crate) fn forget_id(&mut self, id: i64) {
        let key = self
            .turns
            .iter()
            .find(|(_, t)| t.session.id == id)
            .map(|(k, _)| k.clone());
        if let Some(k) = key {
            self.forget_key(&k);
        }
    }

    /// A turn committed as [`crate::SqliteStore`]'s commit wrote it: the
    /// session row as the `UPDATE` left it, the entries with the ids and
    /// turn number they got, the pin. A turn with a summary changes which
    /// entries the history holds: that session is read again next time.
    pub(crate) fn committed(&mut self, key: &str, turn: &TurnCommit, written: Written) {
        let Some(mut state) = self.turns.remove(key) else {
            return;
        };
        self.bytes = self.bytes.saturating_sub(size(&state));
        if turn.entries.iter().any(|e| e.kind == EntryKind::Summary) {
            return;
        }
        let s = &mut state.session;
        s.turns = written.number;
        s.updated_ms = turn.at_ms;
        if let Some(context) = written.context {
            s.context = Some(context);
        }
        for (e, id) in turn.entries.iter().zip(written.ids) {
            state.history.push(Entry {
                id,
                turn: written.number,
                kind: e.kind,
                text: e.text.clone(),
                tool_id: e.tool_id.clone(),
                tool_name: e.tool_name.clone(),
                is_error: e.is_error,
                incomplete: e.incomplete,
                replaces_through: e.replaces_through,
                at_ms: turn.at_ms,
            });
        }
        if let Some((provider, profile)) = &turn.sticky {
            match state.pins.iter_mut().find(|(p, _)| p == provider) {
                Some(pin) => pin.1 = profile.clone(),
                None => {
                    state.pins.push((provider.clone(), profile.clone()));
                    state.pins.sort();
                }
            }
        }
        self.put(state);
    }
}

/// What a commit wrote that the cache needs.
pub(crate) struct Written {
    /// The turn number the entries got.
    pub number: u32,
    /// Each entry's id, in order.
    pub ids: Vec<i64>,
    /// The new context calibration, when the commit set one.
    pub context: Option<(u64, i64)>,
}
