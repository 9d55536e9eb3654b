//! `clawgate infer`: one model call, no session (GW-4, WIRE). Text goes to
//! stdout as it streams; reasoning only with `--show-reasoning`, to stderr.

use std::io::Write;
use std::time::Instant;

use clap::Args;
use clawgate_catalog::SelectionSource;
use clawgate_wire::{ChatRequest, Client, Collected, Event, Message, WireError};
use serde_json::json;

use super::output::json;
use super::target::{endpoint, extra_body};
use super::{exit, CliError, CliResult, Ctx};

#[derive(Args)]
pub struct InferArgs {
    /// A provider/model ref, an alias or a unique model id (default: the
    /// configured default model).
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    prompt: String,
    #[arg(long)]
    system: Option<String>,
    /// Stream the answer as it is generated.
    #[arg(long)]
    stream: bool,
    /// Print reasoning (to stderr).
    #[arg(long)]
    show_reasoning: bool,
    /// Output cap; never above the model's maxTokens.
    #[arg(long)]
    max_tokens: Option<u64>,
    #[arg(long)]
    json: bool,
}

fn error_json(e: &WireError) -> serde_json::Value {
    json!({
        "kind": format!("{:?}", e.kind),
        "status": e.status,
        "type": e.error_type,
        "code": e.code,
        "message": e.message,
        "retryAfterMs": e.retry_after.map(|d| d.as_millis() as u64),
        "outputStarted": e.output_started,
    })
}

pub fn run(ctx: &Ctx, args: InferArgs) -> CliResult {
    if args.prompt.trim().is_empty() {
        return Err(CliError::msg(exit::USAGE, "--prompt must not be empty"));
    }
    let snap = ctx.snapshot()?;
    let reg = &snap.registry;
    let not_found = |e: &dyn std::fmt::Display| CliError::msg(exit::NOT_FOUND, e.to_string());
    // An explicit --model is a user selection: strict, and checked against
    // modelPolicy.allow (REF-4, FO-1).
    let requested = args.model.as_deref().map(|m| (m, SelectionSource::User));
    let chain = reg.chain(None, requested).map_err(|e| not_found(&e))?;
    let Some(candidate) = chain.candidates.first() else {
        return Err(CliError::msg(exit::NOT_FOUND, "no model to call"));
    };
    let resolved = &candidate.resolved;
    if args.model.is_some() {
        reg.check_policy(None, &resolved.reference())
            .map_err(|e| CliError::msg(exit::FAILURE, e.to_string()))?;
    }
    let model = &resolved.model;
    let provider = reg.provider(&model.provider).ok_or_else(|| {
        CliError::msg(
            exit::NOT_FOUND,
            format!("unknown provider {}", model.provider),
        )
    })?;
    let ep = endpoint(provider, model).map_err(|e| CliError::msg(exit::FAILURE, e.to_string()))?;
    let req = ChatRequest {
        model: model.id.clone(),
        system: args.system.clone(),
        messages: vec![Message::user(args.prompt.clone())],
        max_tokens: Some(
            args.max_tokens
                .unwrap_or(model.max_tokens)
                .min(model.max_tokens),
        ),
        stream: args.stream,
        extra_body: extra_body(reg, model),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::FAILURE, e))?;
    let started = Instant::now();
    let live = args.stream && !args.json;
    let show = args.show_reasoning;
    let result: Result<Collected, WireError> = rt.block_on(async {
        let client = Client::new()?;
        let mut s = client.send(&ep, &req).await?;
        let mut c = Collected::default();
        let mut out = std::io::stdout().lock();
        while let Some(ev) = s.next().await {
            let ev = ev?;
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
        Ok(c)
    });
    let latency_ms = started.elapsed().as_millis() as u64;
    let r = resolved.reference().to_string();
    match result {
        Ok(c) => {
            let empty = c.text.trim().is_empty() && c.tool_calls.is_empty();
            if args.json {
                json(&json!({
                    "ok": !empty,
                    "ref": r,
                    "provider": provider.id,
                    "model": model.id,
                    "api": ep.api.as_str(),
                    "endpoint": provider.endpoint.as_str(),
                    "text": c.text,
                    "reasoning": c.reasoning,
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
                    super::output::emit(&c.text)?;
                }
                super::output::emit("\n")?;
                eprintln!("[{r} via {} in {latency_ms} ms]", ep.api);
            }
            if empty {
                return Err(CliError::msg(
                    exit::FAILURE,
                    format!("{r} returned no text"),
                ));
            }
            Ok(())
        }
        Err(e) => {
            if args.json {
                json(
                    &json!({"ok": false, "ref": r, "provider": provider.id, "model": model.id, "error": error_json(&e), "latencyMs": latency_ms}),
                )?;
            }
            Err(CliError::msg(exit::FAILURE, format!("{r}: {e}")))
        }
    }
}
