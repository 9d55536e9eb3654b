//! Context preflight (CTX-2): the window a turn is measured against, the
//! warn and block lines, and the turn's prompt estimate — calibrated on
//! the server's own count of the previous prompt when there is one.

use clawgate_catalog::{ContextSource, Registry, Resolved};
use clawgate_store::{Entry, EntryKind};
use clawgate_wire::{estimate_text, Message, Part};

/// The window a turn is budgeted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub tokens: u64,
    /// Where the number comes from (`config:contextTokens`, `catalog`, …).
    pub source: &'static str,
    /// The model it belongs to.
    pub reference: String,
}

impl Window {
    /// The effective window of `model` for `agent`: the model's
    /// `contextTokens`, else its `contextWindow` (or the catalog's); what
    /// the server really serves (LOC-3) when it is smaller or nothing was
    /// configured; capped by the agent's own legacy `contextTokens` when
    /// that is smaller.
    pub fn of(
        registry: &Registry,
        runner: &clawgate_router::Runner,
        agent: Option<&str>,
        model: &Resolved,
    ) -> Self {
        let (mut tokens, src) = model.model.effective_context();
        let mut source = src.as_str();
        let served = runner.served_context(&model.model.provider, &model.model.id);
        if let Some(real) = served.filter(|r| *r < tokens || src == ContextSource::Assumed) {
            tokens = real;
            source = "server";
        }
        let agents = &registry.config.agents;
        let cap = agent
            .and_then(|a| agents.entries.get(a))
            .and_then(|a| a.context_tokens)
            .or(agents.defaults.context_tokens);
        if let Some(cap) = cap.filter(|c| *c < tokens) {
            tokens = cap;
            source = "config:agents.contextTokens";
        }
        Self {
            tokens,
            source,
            reference: model.reference().to_string(),
        }
    }

    /// Warn when fewer tokens than this remain: 20 % of the window, at
    /// least 8 000.
    pub fn warn_below(&self) -> u64 {
        (self.tokens / 5).max(8_000)
    }

    /// Block when fewer tokens than this remain: 10 % of the window, at
    /// least 4 000 (unless compaction frees room).
    pub fn block_below(&self) -> u64 {
        (self.tokens / 10).max(4_000)
    }

    /// Compact on its own when fewer tokens than this remain (or at the
    /// block line): the warn line, capped at half the window so that a
    /// small local model is not compacted from its first tokens (the
    /// floors alone would put the line above the window).
    pub fn compact_below(&self) -> u64 {
        self.warn_below().min(self.tokens / 2)
    }

    /// Whether automatic compaction should run for this estimate.
    pub fn wants_compaction(&self, estimate: &Estimate) -> bool {
        let remaining = self.tokens.saturating_sub(estimate.tokens);
        remaining < self.compact_below() || remaining < self.block_below()
    }

    pub fn verdict(&self, estimate: &Estimate) -> Verdict {
        let remaining = self.tokens.saturating_sub(estimate.tokens);
        if remaining < self.block_below() {
            Verdict::Block { remaining }
        } else if remaining < self.warn_below() {
            Verdict::Warn { remaining }
        } else {
            Verdict::Fits
        }
    }
}

/// A prompt size in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub tokens: u64,
    /// The server's count of an earlier prompt this one starts from, when
    /// there is one; otherwise the whole figure is the byte heuristic.
    pub calibrated_on: Option<u64>,
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.calibrated_on {
            Some(n) => write!(
                f,
                "about {} tokens (the server counted {n} for the last prompt, the rest is estimated)",
                self.tokens
            ),
            None => write!(f, "about {} tokens (estimated)", self.tokens),
        }
    }
}

/// What the preflight found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fits,
    /// Under the warn line: compact if allowed, otherwise tell the user.
    Warn {
        remaining: u64,
    },
    /// Under the block line: compact, or refuse the turn.
    Block {
        remaining: u64,
    },
}

/// One stored entry's share of a prompt (the byte heuristic plus its
/// framing).
pub fn entry_tokens(e: &Entry) -> u64 {
    match e.kind {
        EntryKind::Notice => 0,
        EntryKind::Image => 765,
        EntryKind::ToolCall => {
            estimate_text(&e.text) + e.tool_name.as_deref().map_or(0, estimate_text) + 8
        }
        _ => estimate_text(&e.text) + 4,
    }
}

/// The messages' share of a prompt.
pub fn messages_tokens(messages: &[Message]) -> u64 {
    let mut n = 0;
    for m in messages {
        n += 4;
        for p in &m.parts {
            n += match p {
                Part::Text(t) | Part::Reasoning(t) => estimate_text(t),
                Part::Image { .. } => 765,
                Part::ToolCall {
                    name, arguments, ..
                } => estimate_text(name) + estimate_text(arguments) + 4,
                Part::ToolResult { content, .. } => estimate_text(content) + 4,
            };
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(tokens: u64) -> Window {
        Window {
            tokens,
            source: "config:contextWindow",
            reference: "p/m".into(),
        }
    }

    fn est(tokens: u64) -> Estimate {
        Estimate {
            tokens,
            calibrated_on: None,
        }
    }

    #[test]
    fn ctx_2_thresholds_are_20_and_10_percent_with_their_floors() {
        // A large window: the percentages.
        let big = w(200_000);
        assert_eq!((big.warn_below(), big.block_below()), (40_000, 20_000));
        assert_eq!(big.verdict(&est(160_000)), Verdict::Fits);
        assert_eq!(
            big.verdict(&est(160_001)),
            Verdict::Warn { remaining: 39_999 }
        );
        assert_eq!(
            big.verdict(&est(180_000)),
            Verdict::Warn { remaining: 20_000 }
        );
        assert_eq!(
            big.verdict(&est(180_001)),
            Verdict::Block { remaining: 19_999 }
        );
        // A small local window: the floors.
        let small = w(32_768);
        assert_eq!((small.warn_below(), small.block_below()), (8_000, 4_000));
        assert_eq!(small.verdict(&est(24_768)), Verdict::Fits);
        assert_eq!(
            small.verdict(&est(24_769)),
            Verdict::Warn { remaining: 7_999 }
        );
        assert_eq!(
            small.verdict(&est(28_769)),
            Verdict::Block { remaining: 3_999 }
        );
        // Over the window entirely.
        assert_eq!(small.verdict(&est(40_000)), Verdict::Block { remaining: 0 });
    }

    #[test]
    fn ctx_3_automatic_compaction_is_not_from_the_first_tokens_of_a_small_window() {
        // 200k: at the warn line.
        assert!(!w(200_000).wants_compaction(&est(160_000)));
        assert!(w(200_000).wants_compaction(&est(160_001)));
        // 10k: the 8 000 floor would compact at 2 001 tokens; half the
        // window is the line instead, until the block line.
        let ten = w(10_000);
        assert_eq!(ten.compact_below(), 5_000);
        assert!(!ten.wants_compaction(&est(5_000)));
        assert!(ten.wants_compaction(&est(6_001)), "at the block line");
        assert_eq!(ten.verdict(&est(2_500)), Verdict::Warn { remaining: 7_500 });
    }

    #[test]
    fn an_estimate_says_what_it_is() {
        assert_eq!(est(10).to_string(), "about 10 tokens (estimated)");
        let c = Estimate {
            tokens: 900,
            calibrated_on: Some(850),
        };
        assert!(c.to_string().contains("the server counted 850"));
    }
}
