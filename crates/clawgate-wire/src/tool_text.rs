//! Tool calls written as text (WIRE-6). Some local models print their tool
//! call instead of using the protocol's tool-call fields:
//!
//! - `[get_weather]{"city":"Paris"}[END_TOOL_REQUEST]`
//! - `[TOOL_REQUEST]{"name":"get_weather","arguments":{…}}[END_TOOL_REQUEST]` (LM Studio)
//! - `<tool_call>{"name":"get_weather","arguments":{…}}</tool_call>` (Hermes/Qwen)
//!
//! Such text becomes a real tool call only when the name exactly matches a
//! tool offered in that turn; anything else stays text (and is reported so
//! it can be logged). Text that cannot start a tool block is released at
//! once; only a possible block is held back.

use serde_json::Value;

/// What the salvager produced from a text delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Salvaged {
    Text(String),
    /// A promoted tool call: name and JSON arguments.
    Call {
        name: String,
        arguments: String,
    },
    /// Tool-looking text that was not promoted, and why.
    Rejected {
        text: String,
        reason: String,
    },
}

const END_BRACKET: &str = "[END_TOOL_REQUEST]";
const OPEN_XML: &str = "<tool_call>";
const END_XML: &str = "</tool_call>";
/// A held block longer than this is given up as text.
const MAX_BLOCK: usize = 256 * 1024;

pub struct ToolTextSalvager {
    tools: Vec<String>,
    pending: String,
}

impl ToolTextSalvager {
    /// `tools`: names offered in this turn. With none, nothing is held.
    pub fn new(tools: Vec<String>) -> Self {
        Self {
            tools,
            pending: String::new(),
        }
    }

    pub fn active(&self) -> bool {
        !self.tools.is_empty()
    }

    /// Openers a block may start with: `[name]`, `[TOOL_REQUEST]`, `<tool_call>`.
    fn openers(&self) -> Vec<String> {
        let mut o: Vec<String> = self.tools.iter().map(|t| format!("[{t}]")).collect();
        o.push("[TOOL_REQUEST]".to_string());
        o.push(OPEN_XML.to_string());
        o
    }

    pub fn push(&mut self, delta: &str, out: &mut Vec<Salvaged>) {
        if !self.active() {
            if !delta.is_empty() {
                out.push(Salvaged::Text(delta.to_string()));
            }
            return;
        }
        self.pending.push_str(delta);
        self.process(out, false);
    }

    pub fn finish(&mut self, out: &mut Vec<Salvaged>) {
        self.process(out, true);
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            out.push(Salvaged::Text(rest));
        }
    }

    fn process(&mut self, out: &mut Vec<Salvaged>, at_end: bool) {
        let openers = self.openers();
        loop {
            // Earliest complete opener.
            let found = openers
                .iter()
                .filter_map(|o| self.pending.find(o.as_str()).map(|i| (i, o.clone())))
                .min_by_key(|(i, _)| *i);
            let Some((at, opener)) = found else {
                // No opener: release all but a possible partial opener.
                let keep = if at_end {
                    0
                } else {
                    partial_suffix(&self.pending, &openers)
                };
                let split = self.pending.len() - keep;
                if split > 0 {
                    out.push(Salvaged::Text(self.pending[..split].to_string()));
                    self.pending.drain(..split);
                }
                return;
            };
            if at > 0 {
                out.push(Salvaged::Text(self.pending[..at].to_string()));
                self.pending.drain(..at);
            }
            let end_marker = if opener == OPEN_XML {
                END_XML
            } else {
                END_BRACKET
            };
            // The end marker after the opener: a tool name may contain it.
            let Some(end_at) = self.pending[opener.len()..]
                .find(end_marker)
                .map(|i| i + opener.len())
            else {
                if self.pending.len() > MAX_BLOCK || at_end {
                    let text = std::mem::take(&mut self.pending);
                    out.push(Salvaged::Rejected {
                        text,
                        reason: format!("no closing {end_marker}"),
                    });
                }
                return; // wait for the end marker
            };
            let block: String = self.pending[..end_at + end_marker.len()].to_string();
            let inner = &self.pending[opener.len()..end_at];
            let result = self.promote(&opener, inner.trim());
            self.pending.drain(..block.len());
            match result {
                Ok((name, arguments)) => out.push(Salvaged::Call { name, arguments }),
                Err(reason) => out.push(Salvaged::Rejected {
                    text: block,
                    reason,
                }),
            }
        }
    }

    fn promote(&self, opener: &str, inner: &str) -> Result<(String, String), String> {
        let json: Value =
            serde_json::from_str(inner).map_err(|e| format!("arguments are not JSON: {e}"))?;
        let (name, args) = if opener == "[TOOL_REQUEST]" || opener == OPEN_XML {
            let name = json
                .get("name")
                .and_then(Value::as_str)
                .ok_or("no \"name\" in the tool block")?
                .to_string();
            let args = json
                .get("arguments")
                .or_else(|| json.get("parameters"))
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            (name, args)
        } else {
            (opener[1..opener.len() - 1].to_string(), json)
        };
        if !self.tools.contains(&name) {
            return Err(format!("\"{name}\" is not a tool offered in this turn"));
        }
        let arguments = match args {
            Value::String(s) => s,
            other => other.to_string(),
        };
        Ok((name, arguments))
    }
}

/// Length of the longest suffix of `s` that is a proper prefix of an opener.
fn partial_suffix(s: &str, openers: &[String]) -> usize {
    let mut best = 0;
    for o in openers {
        for len in (1..o.len()).rev() {
            // Tool names come from the client: any UTF-8 (fuzzing found a
            // name whose prefix cut a character in two).
            if len <= s.len()
                && o.is_char_boundary(len)
                && s.is_char_boundary(s.len() - len)
                && s.ends_with(&o[..len])
            {
                best = best.max(len);
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tools: &[&str], chunks: &[&str]) -> Vec<Salvaged> {
        let mut s = ToolTextSalvager::new(tools.iter().map(|t| t.to_string()).collect());
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        // Merge adjacent text for comparison.
        let mut merged: Vec<Salvaged> = Vec::new();
        for o in out {
            match (merged.last_mut(), o) {
                (Some(Salvaged::Text(a)), Salvaged::Text(b)) => a.push_str(&b),
                (_, o) => merged.push(o),
            }
        }
        merged
    }

    #[test]
    fn promotes_offered_tools_in_every_shape_and_split() {
        let text = "Let me check. [get_weather]{\"city\":\"Paris\"}[END_TOOL_REQUEST]";
        for i in 0..text.len() {
            let got = run(&["get_weather"], &[&text[..i], &text[i..]]);
            assert_eq!(
                got,
                vec![
                    Salvaged::Text("Let me check. ".into()),
                    Salvaged::Call {
                        name: "get_weather".into(),
                        arguments: "{\"city\":\"Paris\"}".into()
                    }
                ],
                "split at {i}"
            );
        }
        let got = run(
            &["get_weather"],
            &["[TOOL_REQUEST]{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}[END_TOOL_REQUEST]"],
        );
        assert!(
            matches!(&got[0], Salvaged::Call { arguments, .. } if arguments == "{\"city\":\"Oslo\"}")
        );
        let got = run(
            &["get_weather"],
            &["<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>"],
        );
        assert!(matches!(&got[0], Salvaged::Call { name, .. } if name == "get_weather"));
    }

    #[test]
    fn any_tool_name_is_safe() {
        // Found by fuzzing: a multi-byte character inside a tool name, and
        // a name that contains the end marker.
        let name = "<<Ļ<<x";
        for i in 0..=4 {
            let text = "x<lo [<<Ļ<<x]{}[END_TOOL_REQUEST] tail";
            let (a, b) = text.split_at(text.char_indices().nth(i).map(|c| c.0).unwrap_or(0));
            let got = run(&[name], &[a, b]);
            assert!(
                got.iter()
                    .any(|g| matches!(g, Salvaged::Call { name: n, .. } if n == name)),
                "{got:?}"
            );
        }
        let tricky = "[END_TOOL_REQUEST]";
        let got = run(&[tricky], &["[[END_TOOL_REQUEST]]{}[END_TOOL_REQUEST]"]);
        assert!(
            matches!(&got[0], Salvaged::Call { name, .. } if name == tricky),
            "{got:?}"
        );
    }

    #[test]
    fn unknown_names_and_bad_json_stay_text() {
        let got = run(
            &["get_weather"],
            &["<tool_call>{\"name\":\"rm_rf\",\"arguments\":{}}</tool_call> ok"],
        );
        assert!(matches!(&got[0], Salvaged::Rejected { reason, .. } if reason.contains("rm_rf")));
        assert_eq!(got[1], Salvaged::Text(" ok".into()));
        let got = run(&["get_weather"], &["[get_weather]{nope[END_TOOL_REQUEST]"]);
        assert!(matches!(&got[0], Salvaged::Rejected { .. }));
        // A tool not offered is not even an opener.
        let got = run(&["get_weather"], &["[search]{\"q\":1}[END_TOOL_REQUEST]"]);
        assert_eq!(
            got,
            vec![Salvaged::Text("[search]{\"q\":1}[END_TOOL_REQUEST]".into())]
        );
        // No tools offered: pass-through.
        let got = run(&[], &["[get_weather]{}[END_TOOL_REQUEST]"]);
        assert_eq!(
            got,
            vec![Salvaged::Text("[get_weather]{}[END_TOOL_REQUEST]".into())]
        );
        // Unclosed block at the end is released as text.
        let got = run(&["get_weather"], &["[get_weather]{\"city\":"]);
        assert!(
            matches!(&got[0], Salvaged::Rejected { text, .. } if text == "[get_weather]{\"city\":")
        );
    }

    #[test]
    fn plain_brackets_are_not_held() {
        let mut s = ToolTextSalvager::new(vec!["get_weather".into()]);
        let mut out = Vec::new();
        s.push("see [1] and [get", &mut out);
        assert_eq!(out, vec![Salvaged::Text("see [1] and ".into())]);
    }
}
