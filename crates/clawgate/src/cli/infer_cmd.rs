//! `clawgate infer`: one model call, no session (GW-4). It goes through the
//! failover runner: an explicit `--model` is strict (no fallback), the
//! configured default uses its chain. Text goes to stdout as it streams;
//! reasoning only with `--show-reasoning`, to stderr.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use clawgate_router::clock::TokioClock;
use clawgate_router::{RunError, Runner};
use clawgate_session::{Target, TurnError, TurnInput};
use clawgate_wire::{ChatRequest, Client, Collected, Event, Message};
use serde_json::json;

use super::output::{emit, json};
use super::{exit, CliError, CliResult, Ctx};

#[derive(Args)]
pub struct InferArgs {
    /// A provider/model ref, an alias or a unique model id (default: the
    /// configured default model and its fallbacks).
    #[arg(long)]
    model: Option<String>,
    /// Route as this agent (`agents.entries.<id>`: its chain, policy and
    /// data policy).
    #[arg(long)]
    agent: Option<String>,
    /// The user message.
    #[arg(long)]
    prompt: String,
    /// A system prompt.
    #[arg(long)]
    system: Option<String>,
    /// Stream the answer as it is generated.
    #[arg(long)]
    stream: bool,
    /// Print reasoning (to stderr).
    #[arg(long)]
    show_reasoning: bool,
    /// Keep the conversation in this session (stored under the state
    /// directory): its history goes before the prompt, and the turn is
    /// stored when the answer is complete.
    #[arg(long, value_name = "KEY")]
    session: Option<String>,
    /// Output cap; never above the model's maxTokens.
    #[arg(long)]
    max_tokens: Option<u64>,
    /// Print text, reasoning, tool calls, usage, the model and host that
    /// answered, the attempts and latency as JSON.
    #[arg(long)]
    json: bool,
}

fn attempts_json(a: &[clawgate_router::Attempt]) -> serde_json::Value {
    serde_json::Value::Array(
        a.iter()
            .map(|a| {
                json!({
                    "model": a.reference,
                    "profile": a.profile,
                    "class": a.class.map(|c| c.as_str()),
                    "status": a.status,
                    "detail": a.detail,
                    "skipped": a.skipped,
                })
            })
            .collect(),
    )
}

/// What an answer without text or tool calls was: only reasoning, cut by
/// the output cap, or nothing at all.
fn empty_answer(reference: &str, c: &Collected) -> String {
    let stop = c
        .stop
        .as_ref()
        .map_or("none".to_string(), |s| s.as_str().to_string());
    let output = c.usage.map_or("no usage reported".to_string(), |u| {
        format!("{} output tokens", u.output)
    });
    let what = if !c.reasoning.trim().is_empty() {
        "only reasoning, no text"
    } else {
        "no text"
    };
    let hint = match c.stop {
        Some(clawgate_wire::StopReason::MaxTokens) => {
            " (the output cap was reached: raise --max-tokens or the model's maxTokens)"
        }
        _ => "",
    };
    format!("{reference} returned {what} (stop reason: {stop}, {output}){hint}")
}

pub fn run(ctx: &Ctx, args: InferArgs) -> CliResult {
    if args.prompt.trim().is_empty() {
        return Err(CliError::msg(exit::USAGE, "--prompt must not be empty"));
    }
    let snap = ctx.snapshot()?;
    let reg = &snap.registry;
    // An explicit --model is a user selection: strict, and checked against
    // modelPolicy.allow (REF-4, FO-1) — by the same turn step the gateway
    // uses.
    let mut target = Target::from_cli(args.agent.as_deref(), args.model.as_deref());
    if let Some(k) = &args.session {
        if k.trim().is_empty() || k.len() > 256 {
            return Err(CliError::msg(
                exit::USAGE,
                "--session needs a key of 1 to 256 bytes",
            ));
        }
    }
    let request = ChatRequest {
        system: args.system.clone(),
        messages: vec![Message::user(args.prompt.clone())],
        max_tokens: args.max_tokens,
        stream: args.stream,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::FAILURE, e))?;
    let started = Instant::now();
    let live = args.stream && !args.json;
    let show = args.show_reasoning;
    let notice = |n: &str| eprintln!("{n}");
    let client = Client::new().map_err(|e| CliError::new(exit::FAILURE, e))?;
    // A local server this run starts (localService) stops when it ends.
    let local = Arc::new(super::state::supervisor(client.clone()));
    let outcome = rt.block_on(async {
        local.reclaim(&snap.registry).await;
        let runner = Runner::new(client, Arc::new(TokioClock::default())).with_gate(local.clone());
        runner.import_cooldowns(&super::state::load_cooldowns(), super::state::now_unix_ms());
        let save = |r: &Runner| {
            super::state::save_cooldowns(&r.export_cooldowns(super::state::now_unix_ms()))
        };
        let now = super::state::now_unix_ms() as i64;
        let (routed, kept) = match &args.session {
            Some(key) => {
                let path = super::state::sessions_file().ok_or_else(|| {
                    CliError::msg(exit::FAILURE, "--session needs HOME or CLAWGATE_STATE_DIR")
                })?;
                let store: Arc<dyn clawgate_store::Store> = Arc::new(
                    clawgate_store::SqliteStore::open(&path)
                        .map_err(|e| CliError::msg(exit::FAILURE, e.to_string()))?,
                );
                let mut turn = clawgate_session::session::begin(
                    store,
                    &Default::default(),
                    key,
                    &mut target,
                    request,
                    now,
                )
                .await
                .map_err(|e| CliError::msg(exit::FAILURE, e.to_string()))?;
                let routed = match turn.command() {
                    Some(cmd) => turn.run_command(cmd, &runner, reg, &target, now).await,
                    None => turn.route(&runner, reg, &target, Some(&notice), now).await,
                };
                (routed, Some(turn))
            }
            None => {
                let input = TurnInput {
                    request,
                    session: None,
                    on_notice: Some(&notice),
                    pinned: Vec::new(),
                };
                (
                    clawgate_session::route(&runner, reg, &target, input).await,
                    None,
                )
            }
        };
        save(&runner);
        let mut routed = match routed {
            Ok(r) => r,
            Err(TurnError::Run(e)) => return Ok(Err(*e)),
            Err(TurnError::UnknownTarget { reason, .. }) => {
                return Err(CliError::msg(exit::NOT_FOUND, reason))
            }
            Err(e) => return Err(CliError::msg(exit::FAILURE, e.to_string())),
        };
        let mut c = Collected::default();
        let mut failure = None;
        let mut out = std::io::stdout().lock();
        while let Some(ev) = routed.stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(f) => {
                    failure = Some(f);
                    break;
                }
            };
            if live {
                match &ev {
                    Event::TextDelta(t) => {
                        let _ = out.write_all(t.as_bytes());
                        let _ = out.flush();
                    }
                    Event::ReasoningDelta(r) if show => eprint!("{r}"),
                    _ => {}
                }
            }
            c.apply(&ev);
        }
        if let Some(turn) = kept {
            let now = super::state::now_unix_ms() as i64;
            turn.commit(
                &routed.served,
                &c,
                failure.is_some(),
                routed.fallback_notice(),
                None,
                now,
            )
            .await
            .map_err(|e| CliError::msg(exit::FAILURE, e.to_string()))?;
        }
        Ok::<_, CliError>(Ok((
            routed.served.clone(),
            routed.fallback_notice(),
            routed.attempts,
            c,
            failure,
        )))
    });
    rt.block_on(local.shutdown());
    let outcome = outcome?;
    let latency_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok((served, notice, attempts, c, failure)) => {
            let empty = c.text.trim().is_empty() && c.tool_calls.is_empty();
            let ok = failure.is_none() && !empty;
            let empty_why = empty.then(|| empty_answer(&served.reference, &c));
            if args.json {
                json(&json!({
                    "ok": ok,
                    "ref": served.reference,
                    "provider": served.provider,
                    "model": served.model,
                    "host": served.host,
                    "api": served.api,
                    "fallback": notice,
                    "capNotice": served.cap_notice(),
                    "attempts": attempts_json(&attempts),
                    "text": c.text,
                    "reasoning": c.reasoning,
                    "incomplete": failure.is_some(),
                    "error": match (&failure, &empty_why) {
                        (Some(f), _) => json!({"class": f.class.as_str(), "status": f.error.status, "message": f.error.message}),
                        (None, Some(why)) => json!({"class": "empty_answer", "status": null, "message": why}),
                        (None, None) => serde_json::Value::Null,
                    },
                    "toolCalls": c.tool_calls.iter().map(|t| json!({"id": t.id, "name": t.name, "arguments": t.arguments})).collect::<Vec<_>>(),
                    "usage": c.usage.map(|u| json!({"input": u.input, "output": u.output, "cacheRead": u.cache_read, "cacheWrite": u.cache_write, "reasoning": u.reasoning})),
                    "stop": c.stop.as_ref().map(|s| s.as_str().to_string()),
                    "latencyMs": latency_ms,
                }))?;
            } else {
                if !live {
                    if show && !c.reasoning.is_empty() {
                        eprintln!("{}", c.reasoning);
                    }
                    emit(&c.text)?;
                }
                emit("\n")?;
                if let Some(n) = &notice {
                    eprintln!("↪ {n}");
                }
                if let Some(n) = served.cap_notice() {
                    eprintln!("note: {n}");
                }
                eprintln!(
                    "[{} via {} at {} in {latency_ms} ms]",
                    served.reference, served.api, served.host
                );
            }
            if let Some(f) = failure {
                return Err(CliError::msg(exit::FAILURE, f.to_string()));
            }
            if let Some(why) = empty_why {
                return Err(CliError::msg(exit::FAILURE, why));
            }
            Ok(())
        }
        Err(e) => {
            if args.json {
                let (class, status, message) = match &e {
                    RunError::Surfaced { class, error, .. } => {
                        (Some(class.as_str()), error.status, error.message.clone())
                    }
                    RunError::Exhausted(x) => (
                        x.attempts
                            .iter()
                            .rev()
                            .find_map(|a| a.class)
                            .map(|c| c.as_str()),
                        x.attempts.iter().rev().find_map(|a| a.status),
                        e.to_string(),
                    ),
                };
                json(&json!({
                    "ok": false,
                    "error": {"class": class, "status": status, "message": message},
                    "attempts": attempts_json(e.attempts()),
                    "latencyMs": latency_ms,
                }))?;
            }
            Err(CliError::msg(exit::FAILURE, e.to_string()))
        }
    }
}
