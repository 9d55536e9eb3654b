//! One `localService` child process: spawned without a shell in its own
//! process group, its output kept as a bounded, redacted tail, stopped
//! with SIGTERM to the whole group (SIGKILL after a grace period), and
//! SIGKILLed if clawgate drops it without stopping it.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawgate_config::LocalService;
use clawgate_core::Redactor;

use crate::ledger::{self, Ledger};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// Lines of child output kept.
const TAIL_LINES: usize = 40;
/// Longest line kept (a server that prints a megabyte without a newline
/// cannot grow the tail).
const LINE_MAX: usize = 512;
/// How long a stopped server gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a taken-back server (not our child: no exit to wait for)
/// is looked up in `/proc`.
const RECLAIMED_POLL: Duration = Duration::from_millis(200);

/// The last lines a child printed, already redacted.
#[derive(Default)]
pub struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    fn push(&mut self, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The last `n` lines.
    pub fn last(&self, n: usize) -> Vec<String> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }
}

/// A running child: one this process spawned, or one a killed
/// predecessor spawned and this process took back from the ledger.
pub struct Child {
    pub pid: u32,
    /// `Some(how it ended)` once it exited.
    exited: watch::Receiver<Option<String>>,
    /// Set before a deliberate stop, so the exit is not reported as a
    /// crash.
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Child {
    /// Spawns `spec.command` with `spec.args` (no shell), `spec.cwd`, and
    /// `spec.env` merged over clawgate's environment.
    /// Recorded in `ledger` (when there is one) until it ends.
    pub fn spawn(
        provider: &str,
        service: &str,
        spec: &LocalService,
        tail: Arc<Mutex<Tail>>,
        redactor: Arc<Redactor>,
        ledger: Option<Arc<Ledger>>,
    ) -> Result<Child, String> {
        let mut cmd = tokio::process::Command::new(&spec.command);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C does not reach
            // it behind clawgate's back, and a stop reaches its children.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        for (k, v) in &spec.env {
            match &v.resolved {
                Some(val) => {
                    cmd.env(k, val.expose());
                }
                None => {
                    return Err(format!(
                        "models.providers.{provider}.localService.env.{k}: {} is not set",
                        v.missing.join(", ")
                    ))
                }
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", spec.command.display()))?;
        let pid = child.id().unwrap_or(0);
        if let Some(l) = &ledger {
            l.record(pid, provider, service, &spec.command.display().to_string());
        }
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_lines(
                out,
                provider.to_string(),
                tail.clone(),
                redactor.clone(),
            ));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(read_lines(
                err,
                provider.to_string(),
                tail.clone(),
                redactor,
            ));
        }
        let (tx, rx) = watch::channel(None);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stopping.clone();
        let name = provider.to_string();
        tokio::spawn(async move {
            // The task owns the child: if the runtime goes away first,
            // dropping it SIGKILLs the server (kill_on_drop).
            let how = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown ({e})"),
            };
            if let Some(l) = &ledger {
                l.forget(pid);
            }
            if !flag.load(std::sync::atomic::Ordering::Acquire) {
                let last = tail.lock().map(|t| t.last(10)).unwrap_or_default();
                tracing::warn!(provider = %name, pid, status = %how, "local server exited on its own; last output:\n  {}", last.join("\n  "));
            } else {
                tracing::info!(provider = %name, pid, status = %how, "local server stopped");
            }
            let _ = tx.send(Some(how));
        });
        tracing::info!(provider = %provider, pid, command = %spec.command.display(), "local server started");
        Ok(Child {
            pid,
            exited: rx,
            stopping,
        })
    }

    /// Takes back `rec`'s process, which a clawgate process that is gone
    /// started: not our child (its exit status and output are out of
    /// reach), so whether it still runs is read from `/proc`.
    pub fn reclaim(rec: &ledger::Record, ledger: Arc<Ledger>) -> Child {
        ledger.record(rec.pid, &rec.provider, &rec.service, &rec.command);
        let (tx, rx) = watch::channel(None);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stopping.clone();
        let (pid, start, name) = (rec.pid, rec.start, rec.provider.clone());
        tokio::spawn(async move {
            while ledger::is_same(pid, start) {
                tokio::time::sleep(RECLAIMED_POLL).await;
            }
            ledger.forget(pid);
            if !flag.load(std::sync::atomic::Ordering::Acquire) {
                tracing::warn!(provider = %name, pid, "local server (taken back from an earlier gateway) exited on its own");
            }
            let _ = tx.send(Some("exited".to_string()));
        });
        Child {
            pid,
            exited: rx,
            stopping,
        }
    }

    /// `Some(how it ended)` once the child exited.
    pub fn exited(&self) -> Option<String> {
        self.exited.borrow().clone()
    }

    /// SIGTERM to its process group, SIGKILL after [`STOP_GRACE`].
    pub async fn stop(&self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        if self.exited().is_some() {
            return;
        }
        let Ok(raw) = i32::try_from(self.pid) else {
            return;
        };
        if raw <= 1 {
            return;
        }
        let group = Pid::from_raw(raw);
        let _ = killpg(group, Signal::SIGTERM);
        let mut rx = self.exited.clone();
        if tokio::time::timeout(STOP_GRACE, rx.wait_for(Option::is_some))
            .await
            .is_err()
        {
            tracing::warn!(pid = self.pid, "local server ignored SIGTERM; killing it");
            let _ = killpg(group, Signal::SIGKILL);
            let _ = tokio::time::timeout(STOP_GRACE, rx.wait_for(Option::is_some)).await;
        }
        // Whatever it started in its group goes with it.
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// Reads a child's output line by line into its tail (each line cut at
/// [`LINE_MAX`], secrets masked), and at debug level into the log.
async fn read_lines(
    mut r: impl AsyncRead + Unpin,
    provider: String,
    tail: Arc<Mutex<Tail>>,
    redactor: Arc<Redactor>,
) {
    let mut buf = [0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    let flush = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if !text.trim().is_empty() {
            let text = redactor.redact(text).into_owned();
            tracing::debug!(provider = %provider, "local server: {text}");
            if let Ok(mut t) = tail.lock() {
                t.push(text);
            }
        }
        line.clear();
    };
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                flush(&mut line);
            } else if line.len() < LINE_MAX {
                line.push(b);
            }
        }
    }
    flush(&mut line);
}
