//! Between the wire's messages and the store's entries: what a turn adds
//! to a transcript (the client's new messages, then the answer: reasoning
//! kept apart, text, tool calls with their ids), and the stored history
//! turned back into messages for the next call (the last compaction
//! summary apart, for the system prompt; notices left out; a tool call
//! always followed by its result, in stored order).

use clawgate_store::{Entry, EntryKind, NewEntry};
use clawgate_wire::{Collected, Message, Part, Role};

/// Entries for the messages a client sent in this turn.
pub fn entries_from_messages(messages: &[Message]) -> Vec<NewEntry> {
    let mut out = Vec::new();
    for m in messages {
        for p in &m.parts {
            out.push(match (m.role, p) {
                (Role::User, Part::Text(t)) => NewEntry::new(EntryKind::User, t.as_str()),
                (Role::Assistant, Part::Text(t)) => NewEntry::new(EntryKind::Assistant, t.as_str()),
                (_, Part::Image { url }) => NewEntry::new(EntryKind::Image, url.as_str()),
                (_, Part::Reasoning(r)) => NewEntry::new(EntryKind::Reasoning, r.as_str()),
                (
                    _,
                    Part::ToolCall {
                        id,
                        name,
                        arguments,
                    },
                ) => NewEntry {
                    tool_id: Some(id.clone()),
                    tool_name: Some(name.clone()),
                    ..NewEntry::new(EntryKind::ToolCall, arguments.as_str())
                },
                (
                    _,
                    Part::ToolResult {
                        id,
                        content,
                        is_error,
                    },
                ) => NewEntry {
                    tool_id: Some(id.clone()),
                    is_error: *is_error,
                    ..NewEntry::new(EntryKind::ToolResult, content.as_str())
                },
            });
        }
    }
    out
}

/// Entries for an answer: reasoning, text, then tool calls. `incomplete`
/// marks an answer that failed after output had started (FO-5).
pub fn entries_from_answer(answer: &Collected, incomplete: bool) -> Vec<NewEntry> {
    let mut out = Vec::new();
    if !answer.reasoning.is_empty() {
        out.push(NewEntry::new(
            EntryKind::Reasoning,
            answer.reasoning.as_str(),
        ));
    }
    if !answer.text.is_empty() || (answer.tool_calls.is_empty() && incomplete) {
        out.push(NewEntry::new(EntryKind::Assistant, answer.text.as_str()));
    }
    for t in &answer.tool_calls {
        out.push(NewEntry {
            tool_id: Some(t.id.clone()),
            tool_name: Some(t.name.clone()),
            ..NewEntry::new(EntryKind::ToolCall, t.arguments.as_str())
        });
    }
    if incomplete {
        for e in &mut out {
            e.incomplete = true;
        }
    }
    out
}

/// What a message says, for comparing a client's resent history with the
/// stored one: its role and text, tool calls and results (reasoning is not
/// always sent back, and stored parts may be grouped differently).
fn said(m: &Message) -> Vec<(Role, String)> {
    m.parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) if !t.is_empty() => Some((m.role, t.clone())),
            Part::ToolCall { id, arguments, .. } => Some((m.role, format!("{id}:{arguments}"))),
            Part::ToolResult { id, content, .. } => Some((m.role, format!("{id}:{content}"))),
            Part::Image { url } => Some((m.role, url.clone())),
            _ => None,
        })
        .collect()
}

/// How many of `sent`'s leading messages repeat the stored `history`
/// (0 when they do not, or when nothing new would be left).
pub fn repeated_prefix(history: &[Message], sent: &[Message]) -> usize {
    let stored: Vec<(Role, String)> = history.iter().flat_map(said).collect();
    if stored.is_empty() {
        return 0;
    }
    let mut seen: Vec<(Role, String)> = Vec::new();
    for (i, m) in sent.iter().enumerate() {
        if seen.len() >= stored.len() {
            return if seen == stored && i < sent.len() {
                i
            } else {
                0
            };
        }
        seen.extend(said(m));
        if seen.len() > stored.len() || stored[..seen.len()] != seen[..] {
            return 0;
        }
    }
    0
}

/// The stored history as the next call sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    /// The last compaction summary, for the system prompt.
    pub summary: Option<String>,
    pub messages: Vec<Message>,
}

/// Stored entries (as [`clawgate_store::Store::history`] returns them)
/// back into messages; consecutive parts of one role share a message.
pub fn history(entries: &[Entry]) -> History {
    let mut h = History::default();
    for e in entries {
        let (role, part) = match e.kind {
            // An empty summary marks a `/new`: no summary at all.
            EntryKind::Summary => {
                h.summary = (!e.text.is_empty()).then(|| e.text.clone());
                continue;
            }
            EntryKind::Notice => continue,
            EntryKind::User => (Role::User, Part::Text(e.text.clone())),
            EntryKind::Image => (
                Role::User,
                Part::Image {
                    url: e.text.clone(),
                },
            ),
            EntryKind::ToolResult => (
                Role::User,
                Part::ToolResult {
                    id: e.tool_id.clone().unwrap_or_default(),
                    content: e.text.clone(),
                    is_error: e.is_error,
                },
            ),
            EntryKind::Assistant => (Role::Assistant, Part::Text(e.text.clone())),
            EntryKind::Reasoning => (Role::Assistant, Part::Reasoning(e.text.clone())),
            EntryKind::ToolCall => (
                Role::Assistant,
                Part::ToolCall {
                    id: e.tool_id.clone().unwrap_or_default(),
                    name: e.tool_name.clone().unwrap_or_default(),
                    arguments: e.text.clone(),
                },
            ),
        };
        match h.messages.last_mut() {
            Some(last) if last.role == role => last.parts.push(part),
            _ => h.messages.push(Message {
                role,
                parts: vec![part],
            }),
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawgate_wire::ToolCall;

    /// Entries as the store would return them.
    fn stored(new: Vec<NewEntry>) -> Vec<Entry> {
        new.into_iter()
            .enumerate()
            .map(|(i, n)| Entry {
                id: i as i64 + 1,
                turn: 1,
                kind: n.kind,
                text: n.text,
                tool_id: n.tool_id,
                tool_name: n.tool_name,
                is_error: n.is_error,
                incomplete: n.incomplete,
                replaces_through: n.replaces_through,
                at_ms: 0,
            })
            .collect()
    }

    #[test]
    fn a_tool_turn_round_trips_through_the_store_in_order() {
        let sent = vec![Message {
            role: Role::User,
            parts: vec![
                Part::Text("what is in /src/main.rs?".into()),
                Part::Image {
                    url: "data:image/png;base64,AAAA".into(),
                },
            ],
        }];
        let answer = Collected {
            text: "Let me look.".into(),
            reasoning: "need to read the file".into(),
            tool_calls: vec![ToolCall {
                id: "call_7".into(),
                name: "read".into(),
                arguments: "{\"path\":\"/src/main.rs\"}".into(),
            }],
            ..Default::default()
        };
        let result = vec![Message {
            role: Role::User,
            parts: vec![Part::ToolResult {
                id: "call_7".into(),
                content: "fn main() {}".into(),
                is_error: false,
            }],
        }];
        let mut all = entries_from_messages(&sent);
        all.extend(entries_from_answer(&answer, false));
        all.extend(entries_from_messages(&result));
        let h = history(&stored(all));
        assert_eq!(h.summary, None);
        assert_eq!(
            h.messages,
            vec![
                sent[0].clone(),
                Message {
                    role: Role::Assistant,
                    parts: vec![
                        Part::Reasoning("need to read the file".into()),
                        Part::Text("Let me look.".into()),
                        Part::ToolCall {
                            id: "call_7".into(),
                            name: "read".into(),
                            arguments: "{\"path\":\"/src/main.rs\"}".into(),
                        },
                    ],
                },
                result[0].clone(),
            ]
        );
    }

    #[test]
    fn a_resent_history_is_recognised_and_only_the_new_turn_counts() {
        let history = vec![
            Message::user("hi"),
            Message {
                role: Role::Assistant,
                parts: vec![Part::Reasoning("hmm".into()), Part::Text("hello".into())],
            },
        ];
        // The client sends the history back (without the reasoning).
        let sent = vec![
            Message::user("hi"),
            Message::assistant("hello"),
            Message::user("how are you?"),
        ];
        assert_eq!(repeated_prefix(&history, &sent), 2);
        // Only the new turn.
        assert_eq!(repeated_prefix(&history, &sent[2..]), 0);
        // A different conversation is not trimmed.
        let other = vec![
            Message::user("hi"),
            Message::assistant("bye"),
            Message::user("x"),
        ];
        assert_eq!(repeated_prefix(&history, &other), 0);
        // Exactly the history and nothing new: kept as sent.
        assert_eq!(repeated_prefix(&history, &sent[..2]), 0);
        assert_eq!(repeated_prefix(&[], &sent), 0);
    }

    #[test]
    fn the_summary_goes_apart_and_notices_are_not_replayed() {
        let mut e = vec![
            NewEntry::new(EntryKind::Summary, "earlier: edited /etc/hosts, id 4411"),
            NewEntry::new(EntryKind::User, "again"),
            NewEntry::new(
                EntryKind::Notice,
                "answered by b/m (selected a/m: unreachable)",
            ),
        ];
        e.extend(entries_from_answer(
            &Collected {
                text: "partial".into(),
                ..Default::default()
            },
            true,
        ));
        let entries = stored(e);
        assert!(entries.last().is_some_and(|x| x.incomplete));
        let h = history(&entries);
        assert_eq!(
            h.summary.as_deref(),
            Some("earlier: edited /etc/hosts, id 4411")
        );
        assert_eq!(
            h.messages,
            vec![Message::user("again"), Message::assistant("partial")]
        );
    }
}
