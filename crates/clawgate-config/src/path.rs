//! Key paths: how diagnostics print them and how `config get/set` parse them.
//!
//! Printed form: `models.providers.lmstudio.models[0].contextWindow`; keys
//! that are not plain identifiers are bracketed and quoted:
//! `agents.defaults.models["anthropic/claude-opus-4-5"].alias`.

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

fn is_plain(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
}

/// `parent.key`, bracketing keys that are not plain.
pub fn child(parent: &str, key: &str) -> String {
    if is_plain(key) {
        if parent.is_empty() {
            key.to_string()
        } else {
            format!("{parent}.{key}")
        }
    } else {
        format!("{parent}[{key:?}]")
    }
}

/// `parent[i]`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Renders segments back to the printed form.
pub fn render(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        out = match s {
            Segment::Key(k) => child(&out, k),
            Segment::Index(i) => index(&out, *i),
        };
    }
    out
}

/// Parses `a.b["c/d"].e[0]` into segments.
pub fn parse(path: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = path.chars().collect();
    let mut i = 0;
    let mut expect_key = true;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                if expect_key {
                    return Err(format!("empty key at position {}", i + 1));
                }
                expect_key = true;
                i += 1;
            }
            '[' => {
                let close = chars[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .map(|p| p + i)
                    .ok_or_else(|| format!("unclosed \"[\" at position {}", i + 1))?;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                if let Some(q) = inner
                    .strip_prefix('"')
                    .and_then(|r| r.strip_suffix('"'))
                    .or_else(|| inner.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
                {
                    out.push(Segment::Key(q.to_string()));
                } else if let Ok(n) = inner.parse::<usize>() {
                    out.push(Segment::Index(n));
                } else {
                    return Err(format!(
                        "expected a number or a quoted key inside [], got {inner:?}"
                    ));
                }
                expect_key = false;
                i = close + 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                out.push(Segment::Key(chars[start..i].iter().collect()));
                expect_key = false;
            }
        }
    }
    if out.is_empty() {
        return Err("empty path".to_string());
    }
    if expect_key {
        return Err("path ends with \".\"".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses() {
        let p = child(
            &child(&child("agents", "defaults"), "models"),
            "anthropic/claude-opus-4-5",
        );
        let p = child(&p, "alias");
        assert_eq!(
            p,
            "agents.defaults.models[\"anthropic/claude-opus-4-5\"].alias"
        );
        let segs = parse(&p).unwrap();
        assert_eq!(segs.len(), 5);
        assert_eq!(render(&segs), p);
        assert_eq!(
            parse("models.providers.lmstudio.models[0].id").unwrap()[4],
            Segment::Index(0)
        );
        assert!(parse("a..b").is_err());
        assert!(parse("a[").is_err());
        assert!(parse("a.").is_err());
    }
}
