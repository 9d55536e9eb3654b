//! Session mode (GW-2, CTX-1): when a request names a session, the
//! gateway keeps the conversation. [`begin`] opens the session, applies its
//! persisted model selection (a user's choice is strict and persists),
//! puts the stored history in front of the client's new messages (the last
//! compaction summary into the system prompt) and loads its credential
//! pins; [`SessionTurn::commit`] stores the turn — the client's messages,
//! the answer (reasoning apart, tool calls, a fallback notice, incomplete
//! when it failed after output), one usage row with cost — in one
//! transaction, which the surfaces await before the reply completes.

use std::sync::Arc;

use clawgate_catalog::{Registry, SelectionSource};
use clawgate_config::Cost;
use clawgate_router::Served;
use clawgate_store::{
    EntryKind, ModelSource, NewEntry, Session, Store, StoreError, TurnCommit, UsageRow,
};
use clawgate_wire::{ChatRequest, Collected, Usage};

use crate::transcript;
use crate::{Target, TurnError};

/// How the last compaction summary is introduced in the system prompt.
pub const SUMMARY_HEADING: &str = "Summary of the earlier conversation:";

/// A turn in session mode, between routing and its commit.
pub struct SessionTurn {
    store: Arc<dyn Store>,
    pub session: Session,
    /// The client's new messages as entries.
    sent: Vec<NewEntry>,
    /// The whole prompt's estimate, for a server that reports no usage.
    prompt_estimate: u64,
    /// Credential pins to route with.
    pub pinned: Vec<(String, String)>,
}

/// Opens `key`'s session and prepares `request` and `target` for it.
pub async fn begin(
    store: Arc<dyn Store>,
    key: &str,
    target: &mut Target,
    request: &mut ChatRequest,
    now_ms: i64,
) -> Result<SessionTurn, TurnError> {
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
    let repeated = transcript::repeated_prefix(&history.messages, &request.messages);
    request.messages.drain(..repeated);
    let sent = transcript::entries_from_messages(&request.messages);
    let mut messages = history.messages;
    messages.append(&mut request.messages);
    request.messages = messages;
    if let Some(summary) = history.summary {
        let block = format!("{SUMMARY_HEADING}\n{summary}");
        request.system = Some(match request.system.take() {
            Some(s) if !s.trim().is_empty() => format!("{s}\n\n{block}"),
            _ => block,
        });
    }
    let pinned = loaded.pins;
    Ok(SessionTurn {
        store,
        session,
        sent,
        prompt_estimate: request.estimate_tokens(),
        pinned,
    })
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

impl SessionTurn {
    /// Stores the turn: what the client sent, the answer, the notice, one
    /// usage row (reported, or estimated and marked so) and the credential
    /// pin, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit(
        self,
        registry: &Registry,
        served: &Served,
        answer: &Collected,
        incomplete: bool,
        notice: Option<String>,
        response: Option<(String, String)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut entries = self.sent;
        if let Some(n) = notice {
            entries.push(NewEntry::new(EntryKind::Notice, n));
        }
        entries.extend(transcript::entries_from_answer(answer, incomplete));
        let (usage, estimated) = match answer.usage {
            Some(u) => (u, false),
            None => {
                let produced = ChatRequest {
                    messages: vec![clawgate_wire::Message::assistant(format!(
                        "{}{}",
                        answer.reasoning, answer.text
                    ))],
                    ..Default::default()
                };
                (
                    Usage {
                        input: self.prompt_estimate,
                        output: produced.estimate_tokens().max(1),
                        ..Default::default()
                    },
                    true,
                )
            }
        };
        let cost = registry
            .resolve(&served.reference)
            .map(|r| cost_usd(&r.model.cost, &usage))
            .unwrap_or(0.0);
        let row = UsageRow {
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
        };
        self.store
            .commit(TurnCommit {
                session: self.session.id,
                entries,
                usage: vec![row],
                sticky: Some((served.provider.clone(), served.profile.clone())),
                response,
                at_ms: now_ms,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
