//! JSON5 text → a spanned value tree.
//!
//! `jsonc-parser` does the lexing and parsing (with every JSON5 extension
//! switched on and missing commas switched off, as JSON5 requires); this
//! module turns its AST into a small owned tree whose every node and key
//! keeps its byte span, so the decoder can report line:column for any value.

use jsonc_parser::ast;
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, CommentCollectionStrategy, ParseOptions};

use crate::diag::{Diagnostic, Loc, Severity};
use crate::source::Source;

/// Byte range in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    /// Which file of the load: 0 the config itself, then each `$include`d
    /// file in the order it was read.
    pub file: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

/// A JSON5 number: the text as written and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    pub raw: String,
    pub value: f64,
}

impl Number {
    /// The value as an exact non-negative integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        let v = self.value;
        (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_992.0)
            .then_some(v as u64)
    }
}

/// The JSON5 dialect: everything JSON5 allows, nothing it does not.
pub fn json5_options() -> ParseOptions {
    ParseOptions {
        allow_missing_commas: false,
        ..ParseOptions::default()
    }
}

/// Parses JSON5 text into a tree; a syntax error becomes a diagnostic with
/// the exact position.
pub fn parse(source: &Source) -> Result<Option<Node>, Diagnostic> {
    let collect = CollectOptions {
        comments: CommentCollectionStrategy::Off,
        tokens: false,
    };
    match jsonc_parser::parse_to_ast(source.text(), &collect, &json5_options()) {
        Ok(result) => Ok(result.value.as_ref().map(convert)),
        Err(e) => {
            let (line, column) = source.line_col(e.range().start);
            Err(Diagnostic::at(
                Severity::Error,
                source.path(),
                &Loc {
                    line,
                    column,
                    path: String::new(),
                    file: None,
                },
                format!("invalid JSON5: {}", e.kind()),
            ))
        }
    }
}

/// Parses a standalone JSON5 value (a CLI argument), with a plain message on
/// failure.
pub fn parse_value(text: &str) -> Result<serde_json::Value, String> {
    parse_node(text).map(|n| n.to_json())
}

/// A value typed on the command line, keys in the order they were written.
pub fn parse_node(text: &str) -> Result<Node, String> {
    let source = Source::new("<value>", text);
    match parse(&source) {
        Ok(Some(node)) => Ok(node),
        Ok(None) => Err("empty value".to_string()),
        Err(d) => Err(format!("column {}: {}", d.column, d.message)),
    }
}

fn span(r: jsonc_parser::common::Range) -> Span {
    Span {
        start: r.start,
        end: r.end,
        file: 0,
    }
}

fn convert(v: &ast::Value<'_>) -> Node {
    let (s, kind) = match v {
        ast::Value::NullKeyword(n) => (n.range(), Kind::Null),
        ast::Value::BooleanLit(b) => (b.range(), Kind::Bool(b.value)),
        ast::Value::StringLit(s) => (s.range(), Kind::String(s.value.to_string())),
        ast::Value::NumberLit(n) => (
            n.range(),
            Kind::Number(Number {
                raw: n.value.to_string(),
                value: number_value(n.value),
            }),
        ),
        ast::Value::Array(a) => (
            a.range(),
            Kind::Array(a.elements.iter().map(convert).collect()),
        ),
        ast::Value::Object(o) => (
            o.range(),
            Kind::Object(
                o.properties
                    .iter()
                    .map(|p| Entry {
                        key: p.name.as_str().to_string(),
                        key_span: span(p.name.range()),
                        value: convert(&p.value),
                    })
                    .collect(),
            ),
        ),
    };
    Node {
        span: span(s),
        kind,
    }
}

/// Value of a JSON5 number literal: hex, leading `+`, bare decimal points,
/// `Infinity` and `NaN` included.
fn number_value(raw: &str) -> f64 {
    let (sign, body) = match raw.as_bytes().first() {
        Some(b'-') => (-1.0, &raw[1..]),
        Some(b'+') => (1.0, &raw[1..]),
        _ => (1.0, raw),
    };
    let magnitude = if body == "Infinity" {
        f64::INFINITY
    } else if body == "NaN" {
        f64::NAN
    } else if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
            .map(|v| v as f64)
            .unwrap_or(f64::NAN)
    } else {
        let mut normalized = body.to_string();
        if normalized.starts_with('.') {
            normalized.insert(0, '0');
        }
        if normalized.ends_with('.') {
            normalized.push('0');
        }
        normalized = normalized.replace(".e", ".0e").replace(".E", ".0E");
        normalized.parse::<f64>().unwrap_or(f64::NAN)
    };
    sign * magnitude
}

impl Node {
    /// Short description used in "expected X, got Y" messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "null".to_string(),
            Kind::Bool(b) => b.to_string(),
            Kind::Number(n) => n.raw.clone(),
            Kind::String(s) => {
                let shown: String = s.chars().take(60).collect();
                let ellipsis = if s.chars().count() > 60 { "…" } else { "" };
                format!("{:?}", format!("{shown}{ellipsis}"))
            }
            Kind::Array(_) => "an array".to_string(),
            Kind::Object(_) => "an object".to_string(),
        }
    }

    /// Plain JSON form (numbers that are integers stay integers).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Value::from(u)
                } else if n.value.fract() == 0.0 && n.value.is_finite() && n.value.abs() < 9e15 {
                    Value::from(n.value as i64)
                } else {
                    serde_json::Number::from_f64(n.value)
                        .map(Value::Number)
                        .unwrap_or(Value::Null)
                }
            }
            Kind::String(s) => Value::String(s.clone()),
            Kind::Array(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Serialises with object keys in source order (`serde_json::Value`
/// sorts them), for `config get` output.
impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match &self.kind {
            Kind::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Kind::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for e in entries {
                    map.serialize_entry(&e.key, &e.value)?;
                }
                map.end()
            }
            _ => self.to_json().serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Node {
        parse(&Source::new("t.json5", text)).unwrap().unwrap()
    }

    #[test]
    fn reads_json5_extensions() {
        let n =
            tree("// c\n{ a: 0x10, b: +.5, c: 'x', d: [1,2,], e: Infinity, /* k */ \"f\": 5., }");
        let json = n.to_json();
        assert_eq!(json["a"], 16);
        assert_eq!(json["b"], 0.5);
        assert_eq!(json["c"], "x");
        assert_eq!(json["d"], serde_json::json!([1, 2]));
        assert_eq!(json["f"], 5);
        let Kind::Object(entries) = &n.kind else {
            panic!("object expected")
        };
        let Kind::Number(inf) = &entries[4].value.kind else {
            panic!("number expected")
        };
        assert!(inf.value.is_infinite());
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse(&Source::new("t.json5", "{\n  a: 1\n  b: 2\n}")).unwrap_err();
        assert_eq!(
            (err.line, err.column),
            (2, 7),
            "right after the value missing its comma"
        );
        assert_eq!(err.message, "invalid JSON5: Expected comma");
    }

    #[test]
    fn describes_values() {
        assert_eq!(tree("\"big\"").describe(), "\"big\"");
        assert_eq!(tree("-5").describe(), "-5");
        assert_eq!(tree("{}").describe(), "an object");
    }
}
