//! `clawgate chat`: an interactive chat in the terminal on a kept session
//! (CTX-6, GW-4). Line editing and history (rustyline); the answer
//! streamed as it comes, reasoning dimmed and apart (or hidden); context,
//! compaction and fallback notices shown; a spinner until the first token;
//! Ctrl-C cancels the turn (what arrived is kept, marked incomplete) and
//! the session goes on; chat commands (`/model`, `/status`, `/compact`, …)
//! are answered by the same session code the gateway uses.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use clawgate_catalog::Registry;
use clawgate_router::clock::TokioClock;
use clawgate_router::Runner;
use clawgate_session::Target;
use clawgate_store::Store;
use clawgate_wire::{ChatRequest, Client, Collected, Event, Message};
use rustyline::error::ReadlineError;

use super::{exit, CliError, CliResult, Ctx};

#[derive(Args)]
pub struct ChatArgs {
    /// Start with this model (a ref, alias or unique id): a strict choice
    /// the session keeps; `/model` changes it.
    #[arg(long)]
    model: Option<String>,
    /// Route as this agent (`agents.entries.<id>`: its chain, policy and
    /// data policy).
    #[arg(long)]
    agent: Option<String>,
    /// The session to continue or start (default: a new `chat-<time>`).
    #[arg(long, value_name = "KEY")]
    session: Option<String>,
    /// A system prompt sent with every turn.
    #[arg(long)]
    system: Option<String>,
    /// Do not show the model's reasoning.
    #[arg(long)]
    hide_reasoning: bool,
}

const HELP: &str = "Commands: /model [list|<ref|alias|#>|default|status], /status, /compact [instructions], /new, /reset, /usage, /help, /exit. Ctrl-C cancels an answer; Ctrl-D quits.";

/// Terminal styling, off when stdout is not a terminal or `NO_COLOR` is set.
#[derive(Clone, Copy)]
struct Style {
    color: bool,
}

impl Style {
    fn dim(self) -> &'static str {
        if self.color {
            "\x1b[2m"
        } else {
            ""
        }
    }
    fn warn(self) -> &'static str {
        if self.color {
            "\x1b[33m"
        } else {
            ""
        }
    }
    fn reset(self) -> &'static str {
        if self.color {
            "\x1b[0m"
        } else {
            ""
        }
    }
}

/// A spinner on stderr until the first token (only on a terminal).
struct Spinner {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Spinner {
    fn start(label: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = std::io::stderr().is_terminal().then(|| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
                let started = Instant::now();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    eprint!(
                        "\r{} {label} {} s\x1b[K",
                        frames[i % frames.len()],
                        started.elapsed().as_secs()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        Self { stop, task }
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            self.stop.store(true, Ordering::Relaxed);
            t.abort();
            eprint!("\r\x1b[K");
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for Ctrl-C (SIGINT) during a turn.
struct Interrupt {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    fn install() -> Self {
        // Installed once, before the first turn: from then on Ctrl-C during
        // an answer cancels it instead of ending the process.
        Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok(),
        }
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

struct Chat<'a> {
    registry: &'a Registry,
    runner: Runner,
    store: Arc<dyn Store>,
    key: String,
    agent: Option<String>,
    /// `--model`, used for the first turn (the session keeps it after).
    model: Option<String>,
    system: Option<String>,
    hide_reasoning: bool,
    style: Style,
    interrupt: Interrupt,
    locks: clawgate_session::session::SessionLocks,
}

fn now_ms() -> i64 {
    super::state::now_unix_ms() as i64
}

impl Chat<'_> {
    /// One turn: routed (or answered, for a command), streamed, stored.
    async fn turn(&mut self, line: &str) -> Result<(), String> {
        let st = self.style;
        let mut target = Target::from_cli(self.agent.as_deref(), self.model.take().as_deref());
        let request = ChatRequest {
            system: self.system.clone(),
            messages: vec![Message::user(line)],
            stream: true,
            ..Default::default()
        };
        let mut turn = clawgate_session::session::begin(
            self.store.clone(),
            &self.locks,
            &self.key,
            &mut target,
            request,
            now_ms(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let label = match (&turn.session.model, turn.session.model_source) {
            (Some(m), clawgate_store::ModelSource::User) => format!("waiting for {m}"),
            _ => "waiting for the model".to_string(),
        };
        let mut spinner = Spinner::start(label);
        let notice = move |n: &str| {
            eprint!("\r\x1b[K");
            eprintln!("{}↪ {n}{}", st.warn(), st.reset());
        };
        let started = Instant::now();
        let routing = async {
            match turn.command() {
                Some(cmd) => {
                    turn.run_command(cmd, &self.runner, self.registry, &target, now_ms())
                        .await
                }
                None => {
                    turn.route(
                        &self.runner,
                        self.registry,
                        &target,
                        Some(&notice),
                        now_ms(),
                    )
                    .await
                }
            }
        };
        let routed = tokio::select! {
            r = routing => r,
            _ = self.interrupt.wait() => {
                spinner.stop();
                eprintln!("{}(cancelled before the answer began; nothing was stored){}", st.dim(), st.reset());
                return Ok(());
            }
        };
        super::state::save_cooldowns(&self.runner.export_cooldowns(super::state::now_unix_ms()));
        let mut routed = match routed {
            Ok(r) => r,
            Err(e) => {
                spinner.stop();
                return Err(e.to_string());
            }
        };
        let mut c = Collected::default();
        let mut failure = None;
        let mut cancelled = false;
        let mut in_reasoning = false;
        let mut out = std::io::stdout();
        loop {
            let ev = tokio::select! {
                ev = routed.stream.next() => ev,
                _ = self.interrupt.wait() => { cancelled = true; break; }
            };
            spinner.stop();
            let ev = match ev {
                None => break,
                Some(Ok(ev)) => ev,
                Some(Err(f)) => {
                    failure = Some(f);
                    break;
                }
            };
            match &ev {
                Event::ReasoningDelta(r) if !self.hide_reasoning => {
                    if !in_reasoning {
                        let _ = write!(out, "{}", st.dim());
                        in_reasoning = true;
                    }
                    let _ = write!(out, "{r}");
                }
                Event::TextDelta(t) => {
                    if in_reasoning {
                        let _ = write!(out, "{}\n\n", st.reset());
                        in_reasoning = false;
                    }
                    let _ = write!(out, "{t}");
                }
                Event::ToolCallStart { name, .. } => {
                    let _ = write!(out, "{}[tool call: {name}]{}", st.dim(), st.reset());
                }
                _ => {}
            }
            let _ = out.flush();
            c.apply(&ev);
        }
        spinner.stop();
        if in_reasoning {
            let _ = write!(out, "{}", st.reset());
        }
        let _ = writeln!(out);
        let _ = out.flush();
        let incomplete = cancelled || failure.is_some();
        turn.commit(
            &routed.served,
            &c,
            incomplete,
            routed.fallback_notice(),
            None,
            now_ms(),
        )
        .await
        .map_err(|e| format!("the turn could not be stored: {e}"))?;
        if cancelled {
            eprintln!(
                "{}(cancelled: what arrived is kept, marked incomplete){}",
                st.dim(),
                st.reset()
            );
        }
        if let Some(f) = failure {
            return Err(f.to_string());
        }
        if routed.local {
            return Ok(());
        }
        if let Some(n) = routed.fallback_notice() {
            notice(&n);
        }
        let usage = c.usage.map_or("no usage reported".to_string(), |u| {
            format!("{} in / {} out tokens", u.input, u.output)
        });
        eprintln!(
            "{}[{} · {usage} · {:.1} s]{}",
            st.dim(),
            routed.served.reference,
            started.elapsed().as_secs_f64(),
            st.reset()
        );
        Ok(())
    }
}

pub fn run(ctx: &Ctx, args: ChatArgs) -> CliResult {
    if let Some(k) = &args.session {
        if k.trim().is_empty() || k.len() > 256 {
            return Err(CliError::msg(
                exit::USAGE,
                "--session needs a key of 1 to 256 bytes",
            ));
        }
    }
    let snap = ctx.snapshot()?;
    let path = super::state::sessions_file()
        .ok_or_else(|| CliError::msg(exit::FAILURE, "chat needs HOME or CLAWGATE_STATE_DIR"))?;
    let store: Arc<dyn Store> = Arc::new(
        clawgate_store::SqliteStore::open(&path)
            .map_err(|e| CliError::msg(exit::FAILURE, e.to_string()))?,
    );
    // One worker thread that runs between turns too: a local server's
    // output is drained and its idle timer fires while the prompt waits.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::FAILURE, e))?;
    let client = Client::new().map_err(|e| CliError::new(exit::FAILURE, e))?;
    let local = Arc::new(super::state::supervisor(client.clone()));
    rt.block_on(local.reclaim(&snap.registry));
    let runner = Runner::new(client, Arc::new(TokioClock::default())).with_gate(local.clone());
    runner.import_cooldowns(&super::state::load_cooldowns(), super::state::now_unix_ms());
    let key = args
        .session
        .clone()
        .unwrap_or_else(|| format!("chat-{}", now_ms()));
    let style = Style {
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let interrupt = rt.block_on(async { Interrupt::install() });
    let mut chat = Chat {
        registry: &snap.registry,
        runner,
        store,
        key,
        agent: args.agent.clone(),
        model: args.model.clone(),
        system: args.system.clone(),
        hide_reasoning: args.hide_reasoning,
        style,
        interrupt,
        locks: Default::default(),
    };
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| CliError::msg(exit::FAILURE, format!("the line editor: {e}")))?;
    let history = super::state::chat_history_file();
    if let Some(h) = &history {
        // The line history holds what the user typed: private, like the
        // transcripts.
        if let Some(dir) = h.parent() {
            let _ = clawgate_store::private::private_dir(dir);
        }
        if let Ok(Some(n)) = clawgate_store::private::private_file(h) {
            eprintln!("note: {n}");
        }
        let _ = editor.load_history(h);
    }
    eprintln!(
        "clawgate chat · session {} · {}",
        chat.key,
        chat.model
            .as_deref()
            .map_or("the session's model".to_string(), |m| m.to_string())
    );
    eprintln!("{HELP}");
    loop {
        match editor.readline("› ") {
            Ok(line) => {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line);
                match line {
                    "/exit" | "/quit" => break,
                    "/help" => {
                        eprintln!("{HELP}");
                        continue;
                    }
                    _ => {}
                }
                if let Err(e) = rt.block_on(chat.turn(line)) {
                    eprintln!("{}error: {e}{}", style.warn(), style.reset());
                }
            }
            // Ctrl-C at the prompt clears the line.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(CliError::msg(exit::FAILURE, format!("reading input: {e}"))),
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(h);
    }
    rt.block_on(local.shutdown());
    eprintln!(
        "session {} kept: clawgate chat --session {}",
        chat.key, chat.key
    );
    Ok(())
}
