//! Session mode (GW-2, CTX-1..4): when a request names a session, the
//! gateway keeps the conversation. [`begin`] opens the session, applies its
//! persisted model selection (a user's choice is strict and persists) and
//! loads its history and credential pins; [`SessionTurn::route`] puts the
//! history in front of the client's new messages (the last compaction
//! summary into the system prompt), runs the context preflight, compacts
//! when the window runs short or the server overflows, and routes;
//! [`SessionTurn::commit`] stores the turn — the client's messages,
//! the answer (reasoning apart, tool calls, a fallback notice, incomplete
//! when it failed after output), one usage row with cost — in one
//! transaction, which the surfaces await before the reply completes.

use std::sync::Arc;
use std::time::Duration;

use clawgate_catalog::{Chain, Registry, SelectionSource};
use clawgate_config::Cost;
use clawgate_router::{ErrorClass, Routed, RunError, Runner, Served};
use clawgate_store::{
    Entry, EntryKind, ModelSource, NewEntry, Session, Store, StoreError, TurnCommit, UsageRow,
};
use clawgate_wire::{ChatRequest, Collected, Usage};

use crate::compact;
use crate::context::{entry_tokens, messages_tokens, Estimate, Verdict, Window};
use crate::transcript;
use crate::{Target, TurnError, TurnInput};

/// How the last compaction summary is introduced in the system prompt.
pub const SUMMARY_HEADING: &str = "Summary of the earlier conversation:";

/// A notice callback (a CLI prints it as it happens).
pub type OnNotice<'a> = Option<&'a (dyn Fn(&str) + Sync)>;

/// The compaction settings in force for an agent: its own
/// `compaction.*` over `agents.defaults.compaction.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionSettings {
    /// Compact on its own near the limit (`enabled`, `mode` not `off`);
    /// overflow recovery and `/compact` work either way.
    pub auto: bool,
    pub keep_recent_tokens: u64,
    /// `compaction.model`: exact, no fallback chain.
    pub model: Option<String>,
    /// Bound on each summarizer call.
    pub timeout: Duration,
}

impl CompactionSettings {
    pub fn of(registry: &Registry, agent: Option<&str>) -> Self {
        let agents = &registry.config.agents;
        let own = agent
            .and_then(|a| agents.entries.get(a))
            .and_then(|a| a.compaction.as_ref());
        let def = agents.defaults.compaction.as_ref();
        let pick = |f: &dyn Fn(&clawgate_config::Compaction) -> bool| {
            own.is_some_and(f) || (own.is_none() && def.is_some_and(f))
        };
        let disabled = pick(&|c| c.disabled());
        let keep = own
            .and_then(|c| c.keep_recent_tokens)
            .or_else(|| def.and_then(|c| c.keep_recent_tokens))
            .unwrap_or(compact::KEEP_RECENT_TOKENS);
        let model = own
            .and_then(|c| c.model.as_ref())
            .or_else(|| def.and_then(|c| c.model.as_ref()))
            .map(|m| m.value.clone());
        let secs = own
            .and_then(|c| c.timeout_seconds)
            .or_else(|| def.and_then(|c| c.timeout_seconds))
            .unwrap_or(180);
        Self {
            auto: !disabled,
            keep_recent_tokens: keep,
            model,
            timeout: Duration::from_secs(secs),
        }
    }
}

/// One lock per session key in this process: turns of one session run one
/// after the other (each sees the one before, and two compactions never
/// replace the same entries). The map holds only weak references and is
/// swept as it grows, so it stays within twice the sessions in flight
/// (plus a small floor).
#[derive(Default)]
pub struct SessionLocks {
    /// The weak locks by key, and the size at which to sweep next.
    map: std::sync::Mutex<(LockMap, usize)>,
}

type LockMap = std::collections::HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>;

/// Sweep no earlier than this many keys.
const LOCKS_FLOOR: usize = 1_024;

impl SessionLocks {
    /// Waits for `key`'s turn.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut guard = match self.map.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let (map, sweep_at) = &mut *guard;
            match map.get(key).and_then(std::sync::Weak::upgrade) {
                Some(l) => l,
                None => {
                    if map.len() >= (*sweep_at).max(LOCKS_FLOOR) {
                        map.retain(|_, w| w.strong_count() > 0);
                        *sweep_at = map.len() * 2;
                    }
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_string(), Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }

    /// Keys in the map (live or not yet swept).
    pub fn len(&self) -> usize {
        self.map.lock().map(|g| g.0.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// How many stored entries the summary stands for.
    pub entries: usize,
    /// The model that wrote it.
    pub model: String,
}

/// A turn in session mode, between routing and its commit.
pub struct SessionTurn {
    store: Arc<dyn Store>,
    pub session: Session,
    /// The stored history: the last summary (if any) first, then every
    /// entry after what it replaced.
    history: Vec<Entry>,
    /// The history as messages, made once (taken by the first build).
    messages: Option<transcript::History>,
    /// The client's request with only its new messages.
    template: ChatRequest,
    /// The client's new messages as entries.
    sent: Vec<NewEntry>,
    /// The prompt estimate of the last build, for a server that reports
    /// no usage.
    prompt_estimate: u64,
    /// A summary was made during this turn (the stored calibration no
    /// longer describes the history).
    compacted: bool,
    /// Credential pins to route with.
    pub pinned: Vec<(String, String)>,
    /// Context notices of this turn (warnings, compactions): stored with
    /// it and shown by the surfaces.
    pub notices: Vec<String>,
    /// The gateway answered a chat command: nothing of the turn goes into
    /// the transcript (a kept Responses object still does, so a client
    /// can continue from it).
    local: bool,
    /// This session's turn lock, held until the turn is committed or
    /// dropped.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// Opens `key`'s session and prepares the turn: the persisted model
/// selection applied to `target`, the client's messages without what
/// repeats the stored history.
pub async fn begin(
    store: Arc<dyn Store>,
    locks: &SessionLocks,
    key: &str,
    target: &mut Target,
    mut request: ChatRequest,
    now_ms: i64,
) -> Result<SessionTurn, TurnError> {
    let turn_lock = locks.lock(key).await;
    let loaded = store
        .load_turn(key, target.agent.as_deref(), now_ms)
        .await?;
    let session = loaded.session;
    match &target.requested {
        Some((m, SelectionSource::User)) => {
            let same = session.model.as_deref() == Some(m.as_str())
                && session.model_source == ModelSource::User;
            if !same {
                store
                    .select_model(session.id, Some(m), ModelSource::User, now_ms)
                    .await?;
            }
        }
        None => {
            if let (Some(m), ModelSource::User) = (&session.model, session.model_source) {
                target.requested = Some((m.clone(), SelectionSource::User));
            }
        }
        Some((_, SelectionSource::Configured)) => {}
    }
    let history = transcript::history(&loaded.history);
    // A client that names a session but still sends the whole
    // conversation (an SDK that sets `user` for other reasons) would see it
    // twice: the part it repeats is dropped, only its new turn counts.
    // (One message cannot repeat anything and leave a new turn: the usual
    // case costs nothing.)
    if request.messages.len() > 1 {
        let repeated = transcript::repeated_prefix(&history.messages, &request.messages);
        request.messages.drain(..repeated);
    }
    let sent = transcript::entries_from_messages(&request.messages);
    Ok(SessionTurn {
        store,
        session,
        history: loaded.history,
        messages: Some(history),
        template: request,
        sent,
        prompt_estimate: 0,
        compacted: false,
        pinned: loaded.pins,
        notices: Vec::new(),
        local: false,
        _turn: turn_lock,
    })
}

/// Whether a routing failure is the server saying the prompt is too long.
fn overflowed(e: &TurnError) -> bool {
    matches!(e, TurnError::Run(r) if matches!(**r, RunError::Surfaced { class: ErrorClass::ContextOverflow, .. }))
}

/// What a call cost from the model's `cost` table (USD per million
/// tokens): uncached input, cache reads, cache writes and output each at
/// their own price. Local models cost 0.
pub fn cost_usd(cost: &Cost, u: &Usage) -> f64 {
    let uncached = u
        .input
        .saturating_sub(u.cache_read.saturating_add(u.cache_write));
    (uncached as f64 * cost.input
        + u.cache_read as f64 * cost.cache_read
        + u.cache_write as f64 * cost.cache_write
        + u.output as f64 * cost.output)
        / 1_000_000.0
}

/// One usage row: the reported counts, or estimates marked so (never 0).
fn usage_row(
    served: &Served,
    reported: Option<Usage>,
    prompt_estimate: u64,
    answer: &Collected,
) -> UsageRow {
    let (usage, estimated) = match reported {
        Some(u) => (u, false),
        None => {
            let produced = clawgate_wire::estimate_text(&answer.reasoning)
                + clawgate_wire::estimate_text(&answer.text)
                + answer
                    .tool_calls
                    .iter()
                    .map(|t| clawgate_wire::estimate_text(&t.arguments) + 4)
                    .sum::<u64>();
            (
                Usage {
                    input: prompt_estimate.max(1),
                    output: produced.max(1),
                    ..Default::default()
                },
                true,
            )
        }
    };
    let cost = cost_usd(&served.cost, &usage);
    UsageRow {
        provider: served.provider.clone(),
        model: served.model.clone(),
        host: served.host.clone(),
        api: served.api.clone(),
        input: usage.input,
        output: usage.output,
        cache_read: usage.cache_read,
        cache_write: usage.cache_write,
        reasoning: usage.reasoning,
        cost_usd: cost,
        estimated,
    }
}

impl SessionTurn {
    /// The store this session lives in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A chat command in the client's new message, if it is one (CTX-6).
    pub fn command(&self) -> Option<crate::commands::Command> {
        crate::commands::find(&self.template.messages)
    }

    /// Answers a chat command (CTX-6) instead of routing the turn.
    pub async fn run_command(
        &mut self,
        command: crate::commands::Command,
        runner: &Runner,
        registry: &Registry,
        target: &Target,
        now_ms: i64,
    ) -> Result<Routed, TurnError> {
        self.local = true;
        let text = crate::commands::run(command, self, runner, registry, target, now_ms).await?;
        Ok(crate::commands::reply(text))
    }

    /// Records a model selection (`/model`).
    pub async fn select(
        &mut self,
        model: Option<&str>,
        source: ModelSource,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.store
            .select_model(self.session.id, model, source, now_ms)
            .await?;
        self.session.model = model.map(str::to_string);
        self.session.model_source = source;
        Ok(())
    }

    /// `/new`, `/reset`: the history starts empty from here.
    pub async fn reset(&mut self, model_too: bool, now_ms: i64) -> Result<(), StoreError> {
        self.store.reset(self.session.id, model_too, now_ms).await?;
        self.history.clear();
        self.messages = None;
        self.session.context = None;
        self.pinned.clear();
        if model_too {
            self.session.model = None;
            self.session.model_source = ModelSource::Default;
        }
        Ok(())
    }

    /// The size of the stored context as the next model call would see it
    /// (history and summary; the command itself is not part of it).
    pub fn context_estimate(&self) -> Estimate {
        let request = self.compose(transcript::history(&self.history), false);
        self.measure(&request, false)
    }

    /// The request for the model: the client's, with the stored history in
    /// front of its new messages and the last summary in the system prompt.
    fn build(&mut self) -> ChatRequest {
        let history = self
            .messages
            .take()
            .unwrap_or_else(|| transcript::history(&self.history));
        self.compose(history, true)
    }

    /// The client's request around `history` (and its new messages when
    /// `with_new`).
    fn compose(&self, history: transcript::History, with_new: bool) -> ChatRequest {
        let mut messages = history.messages;
        if with_new {
            messages.extend(self.template.messages.iter().cloned());
        }
        let mut request = ChatRequest {
            messages: Vec::new(),
            ..self.template.clone()
        };
        request.messages = messages;
        if let Some(summary) = history.summary {
            let block = format!("{SUMMARY_HEADING}\n{summary}");
            request.system = Some(match request.system.take() {
                Some(s) if !s.trim().is_empty() => format!("{s}\n\n{block}"),
                _ => block,
            });
        }
        request
    }

    /// The prompt's size: the server's count of the last prompt plus an
    /// estimate of what was added since, or the estimate of it all.
    pub fn estimate(&self, request: &ChatRequest) -> Estimate {
        self.measure(request, true)
    }

    fn measure(&self, request: &ChatRequest, with_new: bool) -> Estimate {
        match self.session.context {
            Some((counted, through)) if !self.compacted => {
                let added: u64 = self
                    .history
                    .iter()
                    .filter(|e| e.id > through && e.kind != EntryKind::Summary)
                    .map(entry_tokens)
                    .sum();
                let new = if with_new {
                    messages_tokens(&self.template.messages)
                } else {
                    0
                };
                Estimate {
                    tokens: counted + added + new,
                    calibrated_on: Some(counted),
                }
            }
            _ => Estimate {
                tokens: request.estimate_tokens(),
                calibrated_on: None,
            },
        }
    }

    fn notice(&mut self, text: String, on_notice: OnNotice<'_>) {
        tracing::info!(session = %self.session.key, "{text}");
        if let Some(f) = on_notice {
            f(&text);
        }
        self.notices.push(text);
    }

    /// Runs the turn: the preflight against the primary model's window
    /// (CTX-2), compacting first when the room is short and compaction is
    /// on (CTX-3), refusing it when even then the block line is crossed;
    /// then routing, and on a context-overflow error from the server one
    /// compaction and one retry (CTX-4).
    pub async fn route(
        &mut self,
        runner: &Runner,
        registry: &Registry,
        target: &Target,
        on_notice: OnNotice<'_>,
        now_ms: i64,
    ) -> Result<Routed, TurnError> {
        let chain = crate::chain_for(registry, target)?;
        let agent = target.agent.as_deref();
        let settings = CompactionSettings::of(registry, agent);
        let mut request = self.build();
        let mut estimate = self.estimate(&request);
        if let Some(first) = chain.candidates.first() {
            let window = Window::of(registry, runner, agent, &first.resolved);
            let mut verdict = window.verdict(&estimate);
            let mut failed = None;
            if window.wants_compaction(&estimate)
                && settings.auto
                && window.tokens > window.block_below()
            {
                match self
                    .compact(
                        runner, registry, &chain, agent, &window, None, &settings, now_ms,
                    )
                    .await
                {
                    Ok(Some(c)) => {
                        request = self.build();
                        let after = self.estimate(&request);
                        self.notice(
                            format!(
                                "context: compacted {} earlier entries into a summary with {} ({} before, {} now, of {}'s {}-token window)",
                                c.entries, c.model, estimate, after, window.reference, window.tokens
                            ),
                            on_notice,
                        );
                        estimate = after;
                        verdict = window.verdict(&estimate);
                    }
                    Ok(None) => {}
                    Err(e) => failed = Some(e.to_string()),
                }
            }
            if let (Some(e), false) = (&failed, matches!(verdict, Verdict::Block { .. })) {
                self.notice(
                    format!("context: compaction failed, the turn goes on without it: {e}"),
                    on_notice,
                );
            }
            match verdict {
                Verdict::Fits => {}
                Verdict::Warn { remaining } => self.notice(
                    format!(
                        "context: {} of {}'s {}-token window ({}); {remaining} left, under the warning line of {}",
                        estimate, window.reference, window.tokens, window.source, window.warn_below()
                    ),
                    on_notice,
                ),
                Verdict::Block { .. } if window.tokens <= window.block_below() => {
                    return Err(TurnError::ContextFull(format!(
                        "prompt is too long: {}'s window ({} tokens, {}) is not larger than the {} tokens that must stay free, so no kept session fits it; use a model with a larger window (requests without a session are not checked)",
                        window.reference, window.tokens, window.source, window.block_below()
                    )));
                }
                Verdict::Block { remaining } => {
                    let why = match (&failed, settings.auto) {
                        (Some(e), _) => format!("compaction failed: {e}"),
                        (None, true) => "compaction could not free enough room".to_string(),
                        (None, false) => "automatic compaction is off".to_string(),
                    };
                    return Err(TurnError::ContextFull(format!(
                        "prompt is too long: {} for {}'s {}-token window ({}) leaves {remaining}, and at least {} must stay free; {why}. Send /compact, start over with /new, or choose a model with a larger window",
                        estimate, window.reference, window.tokens, window.source, window.block_below()
                    )));
                }
            }
        }
        self.prompt_estimate = estimate.tokens;
        let input = |request| TurnInput {
            request,
            session: None,
            on_notice,
            pinned: self.pinned.clone(),
        };
        let first = crate::run_chain(runner, registry, &chain, agent, input(request)).await;
        match first {
            Err(e) if overflowed(&e) && !self.compacted => {
                let window = chain
                    .candidates
                    .first()
                    .map(|c| Window::of(registry, runner, agent, &c.resolved));
                let Some(window) = window else {
                    return Err(e);
                };
                // The server knows better than the estimate: compact as if
                // the window were full, then retry once.
                let c = match self
                    .compact(
                        runner, registry, &chain, agent, &window, None, &settings, now_ms,
                    )
                    .await
                {
                    Ok(Some(c)) => c,
                    Ok(None) => return Err(e),
                    Err(ce) => {
                        tracing::warn!(session = %self.session.key, error = %ce, "compaction after a context overflow failed");
                        return Err(e);
                    }
                };
                self.notice(
                    format!(
                        "context: {} said the prompt is too long; compacted {} earlier entries into a summary with {} and retried",
                        window.reference, c.entries, c.model
                    ),
                    on_notice,
                );
                let request = self.build();
                self.prompt_estimate = self.estimate(&request).tokens;
                let pinned = self.pinned.clone();
                crate::run_chain(
                    runner,
                    registry,
                    &chain,
                    agent,
                    TurnInput {
                        request,
                        session: None,
                        on_notice,
                        pinned,
                    },
                )
                .await
            }
            other => other,
        }
    }

    /// `/compact [instructions]`: summarizes what can be summarized now.
    pub async fn compact_now(
        &mut self,
        runner: &Runner,
        registry: &Registry,
        target: &Target,
        instructions: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<Compacted>, TurnError> {
        let chain = crate::chain_for(registry, target)?;
        let agent = target.agent.as_deref();
        let settings = CompactionSettings::of(registry, agent);
        let Some(first) = chain.candidates.first() else {
            return Ok(None);
        };
        let window = Window::of(registry, runner, agent, &first.resolved);
        self.compact(
            runner,
            registry,
            &chain,
            agent,
            &window,
            instructions,
            &settings,
            now_ms,
        )
        .await
    }

    /// Summarizes the older part of the history into one summary entry,
    /// committed at once (the full history stays stored), and continues
    /// with the summary and the kept tail. `None` when nothing can be
    /// summarized.
    #[allow(clippy::too_many_arguments)]
    async fn compact(
        &mut self,
        runner: &Runner,
        registry: &Registry,
        chain: &Chain,
        agent: Option<&str>,
        window: &Window,
        instructions: Option<&str>,
        settings: &CompactionSettings,
        now_ms: i64,
    ) -> Result<Option<Compacted>, TurnError> {
        let (previous, rest) = match self.history.first() {
            Some(s) if s.kind == EntryKind::Summary => (
                (!s.text.is_empty()).then(|| s.text.clone()),
                &self.history[1..],
            ),
            _ => (None, &self.history[..]),
        };
        // Keep at most a quarter of the window verbatim, so that a small
        // local model is not full again right after (OpenClaw caps its
        // reserve against the window the same way).
        let keep = settings.keep_recent_tokens.min(window.tokens / 4);
        let Some(plan) = compact::plan(rest, keep) else {
            return Ok(None);
        };
        let old: Vec<Entry> = rest[..plan.cut].to_vec();
        let kept: Vec<Entry> = rest[plan.cut..].to_vec();
        // `compaction.model` is exact; otherwise the turn's own chain.
        let own_chain;
        let sum_chain = match &settings.model {
            Some(m) => {
                own_chain = registry
                    .chain(agent, Some((m.as_str(), SelectionSource::User)))
                    .map_err(|e| TurnError::Compaction(format!("compaction.model {m:?}: {e}")))?;
                &own_chain
            }
            None => chain,
        };
        let sum_window = sum_chain
            .candidates
            .first()
            .map(|c| Window::of(registry, runner, agent, &c.resolved))
            .unwrap_or_else(|| window.clone());
        // Each call reads at most half the summarizer's window; the answer
        // gets an eighth of it (256..4096 tokens).
        let max_tokens = (sum_window.tokens / 8).clamp(256, 4_096);
        let budget = (sum_window.tokens / 2).saturating_sub(max_tokens).max(512);
        let max_entry_bytes = (budget as usize).saturating_mul(2);
        let mut chunks: Vec<String> = Vec::new();
        let mut current = String::new();
        for e in &old {
            let line = compact::render(std::slice::from_ref(e), max_entry_bytes);
            if !current.is_empty()
                && clawgate_wire::estimate_text(&current) + clawgate_wire::estimate_text(&line)
                    > budget
            {
                chunks.push(std::mem::take(&mut current));
            }
            current.push_str(&line);
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        let mut summary = previous.clone();
        let mut rows = Vec::new();
        let mut served_by = String::new();
        for chunk in &chunks {
            let request = compact::request(summary.as_deref(), chunk, instructions, max_tokens);
            let prompt = request.estimate_tokens();
            let call = async {
                let mut routed = crate::run_chain(
                    runner,
                    registry,
                    sum_chain,
                    agent,
                    TurnInput {
                        request,
                        session: None,
                        on_notice: None,
                        pinned: self.pinned.clone(),
                    },
                )
                .await
                .map_err(|e| TurnError::Compaction(format!("the summarizer failed: {e}")))?;
                let mut c = Collected::default();
                while let Some(ev) = routed.stream.next().await {
                    match ev {
                        Ok(ev) => c.apply(&ev),
                        Err(f) => {
                            return Err(TurnError::Compaction(format!(
                                "the summarizer failed: {f}"
                            )))
                        }
                    }
                }
                Ok((routed, c))
            };
            let (routed, c) = tokio::time::timeout(settings.timeout, call)
                .await
                .map_err(|_| {
                    TurnError::Compaction(format!(
                        "the summarizer did not finish within {} s (compaction.timeoutSeconds)",
                        settings.timeout.as_secs()
                    ))
                })??;
            rows.push(usage_row(&routed.served, c.usage, prompt, &c));
            served_by = routed.served.reference.clone();
            if c.text.trim().is_empty() {
                return Err(TurnError::Compaction(format!(
                    "{} returned an empty summary",
                    routed.served.reference
                )));
            }
            summary = Some(c.text.trim().to_string());
        }
        let written = summary.unwrap_or_default();
        let missing = compact::missing(&old, previous.as_deref(), &written);
        // The guard's list takes at most a sixteenth of the window.
        let text = compact::guard(&written, &missing, (window.tokens as usize / 16) * 4);
        self.store
            .commit(TurnCommit {
                session: self.session.id,
                entries: vec![NewEntry {
                    replaces_through: Some(plan.replaces_through),
                    ..NewEntry::new(EntryKind::Summary, text.clone())
                }],
                usage: rows,
                sticky: None,
                response: None,
                context: None,
                at_ms: now_ms,
            })
            .await?;
        let summary_entry = Entry {
            id: 0,
            turn: self.session.turns,
            kind: EntryKind::Summary,
            text,
            tool_id: None,
            tool_name: None,
            is_error: false,
            incomplete: false,
            replaces_through: Some(plan.replaces_through),
            at_ms: now_ms,
        };
        let mut history = vec![summary_entry];
        history.extend(kept);
        self.history = history;
        self.messages = None;
        self.compacted = true;
        self.session.compactions += 1;
        Ok(Some(Compacted {
            entries: old.len(),
            model: served_by,
        }))
    }

    /// Stores the turn: what the client sent, the context notices, the
    /// fallback notice, the answer, one usage row (reported, or estimated
    /// and marked so), the server's prompt count for the next turn's
    /// estimate and the credential pin, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit(
        self,
        served: &Served,
        answer: &Collected,
        incomplete: bool,
        notice: Option<String>,
        response: Option<(String, String)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if self.local {
            let Some(response) = response else {
                return Ok(());
            };
            return self
                .store
                .commit(TurnCommit {
                    session: self.session.id,
                    entries: Vec::new(),
                    usage: Vec::new(),
                    sticky: None,
                    response: Some(response),
                    context: None,
                    at_ms: now_ms,
                })
                .await;
        }
        let mut entries = self.sent;
        let sent = entries.len();
        for n in self.notices.into_iter().chain(notice) {
            entries.push(NewEntry::new(EntryKind::Notice, n));
        }
        entries.extend(transcript::entries_from_answer(answer, incomplete));
        let row = usage_row(served, answer.usage, self.prompt_estimate, answer);
        let context = answer.usage.map(|u| (u.input, sent));
        self.store
            .commit(TurnCommit {
                session: self.session.id,
                entries,
                usage: vec![row],
                // A pin the session already holds is not written again.
                sticky: (!self
                    .pinned
                    .iter()
                    .any(|(p, prof)| *p == served.provider && *prof == served.profile))
                .then(|| (served.provider.clone(), served.profile.clone())),
                response,
                context,
                at_ms: now_ms,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn one_turn_per_session_at_a_time_and_the_lock_map_stays_bounded() {
        let locks = SessionLocks::default();
        let a = locks.lock("a").await;
        // Another session is not held up; the same one waits.
        let _b = locks.lock("b").await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock("a"));
        assert!(waiting.await.is_err());
        drop(a);
        let _a = locks.lock("a").await;
        // Thousands of sessions one after the other: swept as it grows.
        for i in 0..10_000 {
            drop(locks.lock(&format!("s{i}")).await);
        }
        assert!(locks.len() <= LOCKS_FLOOR + 2, "{}", locks.len());
    }

    #[test]
    fn ctx_5_cost_prices_each_kind_of_token() {
        let c = Cost {
            input: 3.0,
            output: 15.0,
            cache_read: 0.3,
            cache_write: 3.75,
        };
        let u = Usage {
            input: 10_000,
            output: 1_000,
            cache_read: 6_000,
            cache_write: 2_000,
            reasoning: 0,
        };
        // 2 000 uncached × 3 + 6 000 × 0.3 + 2 000 × 3.75 + 1 000 × 15, per million.
        let want = (6_000.0 + 1_800.0 + 7_500.0 + 15_000.0) / 1e6;
        assert!((cost_usd(&c, &u) - want).abs() < 1e-15);
        assert_eq!(cost_usd(&Cost::default(), &u), 0.0, "local models cost 0");
    }
}
