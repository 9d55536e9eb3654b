//! What this gateway started, written down (issue 22, item 6): one small
//! file per `localService` child in `<state>/local-servers/`, with the
//! child's pid and kernel start time, its provider and service identity,
//! and the pid and start time of the clawgate process that owns it. A
//! gateway killed with SIGKILL cannot stop its children; the next one
//! reads the ledger and takes back (or stops) what its dead predecessor
//! left running, instead of mistaking it for someone else's server.
//!
//! A process is identified by pid *and* start time (`/proc/<pid>/stat`
//! field 22), so a recycled pid is never taken for the recorded one.
//! A parent-death signal (`PR_SET_PDEATHSIG`) would need `pre_exec`,
//! which is `unsafe`, and fires when the spawning *thread* exits — a
//! tokio worker — so it is not used.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Most records read at start (each is one child; a swap group runs one).
const MAX_RECORDS: usize = 256;
/// Largest record file read.
const MAX_RECORD_BYTES: u64 = 16 * 1024;

/// One recorded child.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub pid: u32,
    /// Kernel start time of `pid`, in clock ticks since boot.
    pub start: u64,
    pub provider: String,
    /// The service identity (provider + command, args, env …).
    pub service: String,
    pub command: String,
    owner_pid: u32,
    owner_start: u64,
}

/// The folder of records.
pub struct Ledger {
    dir: PathBuf,
    me: (u32, u64),
}

/// A process as `/proc` shows it: (state letter, process group, start
/// time); `None` when there is no such process.
fn proc_stat(pid: u32) -> Option<(char, u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start
    // after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); field 5 is the group, 22 the start.
    let state = f.first()?.chars().next()?;
    let group = f.get(2)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((state, group, start))
}

/// The kernel start time of `pid` while it runs (not a zombie).
pub fn start_time(pid: u32) -> Option<u64> {
    match proc_stat(pid)? {
        ('Z' | 'X', _, _) => None,
        (_, _, start) => Some(start),
    }
}

/// Whether `pid` still is the process recorded with `start`, leading its
/// own process group (as every `localService` child does).
pub fn is_same(pid: u32, start: u64) -> bool {
    matches!(proc_stat(pid), Some((s, group, t)) if s != 'Z' && s != 'X' && t == start && group == pid)
}

impl Ledger {
    /// The ledger under `state_dir`, created private (0700).
    pub fn open(state_dir: &Path) -> io::Result<Ledger> {
        let dir = state_dir.join("local-servers");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let me = std::process::id();
        Ok(Ledger {
            dir,
            me: (me, start_time(me).unwrap_or(0)),
        })
    }

    fn path(&self, pid: u32) -> PathBuf {
        self.dir.join(format!("{pid}.json"))
    }

    /// Writes down a child this process now owns.
    pub fn record(&self, pid: u32, provider: &str, service: &str, command: &str) {
        let Some(start) = start_time(pid) else {
            return;
        };
        let body = json!({
            "pid": pid, "start": start, "provider": provider, "service": service,
            "command": command, "ownerPid": self.me.0, "ownerStart": self.me.1,
        });
        let tmp = self.dir.join(format!(".{pid}.tmp"));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(body.to_string().as_bytes()))
            .and_then(|()| fs::rename(&tmp, self.path(pid)));
        if let Err(e) = written {
            tracing::warn!(pid, dir = %self.dir.display(), "could not record a local server in the state directory: {e}");
        }
    }

    /// Forgets a child that exited or was stopped.
    pub fn forget(&self, pid: u32) {
        let _ = fs::remove_file(self.path(pid));
    }

    /// Children left running by a clawgate process that is gone. Records
    /// of children that ended are removed; those of a clawgate process
    /// that still runs (another gateway or `chat` on the same state
    /// directory) are left alone.
    pub fn orphans(&self) -> Vec<Record> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten().take(MAX_RECORDS) {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Some(rec) = read_record(&path) else {
                tracing::warn!(file = %path.display(), "unreadable local server record: removed");
                let _ = fs::remove_file(&path);
                continue;
            };
            if !is_same(rec.pid, rec.start) {
                let _ = fs::remove_file(&path);
                continue;
            }
            let owner_runs = (rec.owner_pid, rec.owner_start) == self.me
                || start_time(rec.owner_pid) == Some(rec.owner_start);
            if !owner_runs {
                out.push(rec);
            }
        }
        out.sort_by_key(|r| r.pid);
        out
    }
}

fn read_record(path: &Path) -> Option<Record> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_RECORD_BYTES {
        return None;
    }
    let v: Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    let num = |k: &str| v.get(k).and_then(Value::as_u64);
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let pid = u32::try_from(num("pid")?).ok()?;
    // pid 0 and 1 are never a child of ours (a signal to group 0 or 1
    // would hit the wrong processes).
    if pid <= 1 {
        return None;
    }
    Some(Record {
        pid,
        start: num("start")?,
        provider: text("provider")?,
        service: text("service")?,
        command: text("command")?,
        owner_pid: u32::try_from(num("ownerPid")?).ok()?,
        owner_start: num("ownerStart")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn records_of_live_owners_and_dead_children_are_not_orphans() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ledger = Ledger::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        // A child of ours, recorded by us: not an orphan while we run.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        ledger.record(child.id(), "p", "p#1", "sleep");
        assert!(ledger.orphans().is_empty());
        // Recorded by an owner that is gone: an orphan.
        let start = start_time(child.id()).unwrap_or(0);
        let dead = json!({"pid": child.id(), "start": start, "provider": "p", "service": "p#1",
            "command": "sleep", "ownerPid": 999_999_999u32, "ownerStart": 1});
        fs::write(ledger.path(child.id()), dead.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let found = ledger.orphans();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pid, child.id());
        // A recycled pid (another start time) is not the recorded child.
        let other = json!({"pid": child.id(), "start": start + 1, "provider": "p", "service": "p#1",
            "command": "sleep", "ownerPid": 999_999_999u32, "ownerStart": 1});
        fs::write(ledger.path(child.id()), other.to_string()).unwrap_or_else(|e| panic!("{e}"));
        assert!(ledger.orphans().is_empty());
        assert!(!ledger.path(child.id()).exists(), "stale record removed");
        // Garbage and pid 1 are never taken.
        fs::write(ledger.path(1), r#"{"pid":1,"start":1,"provider":"p","service":"s","command":"c","ownerPid":5,"ownerStart":1}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        fs::write(ledger.dir.join("7.json"), "not json").unwrap_or_else(|e| panic!("{e}"));
        assert!(ledger.orphans().is_empty());
        let _ = child.kill();
        let _ = child.wait();
    }
}
