//! Output helpers: aligned tables on a terminal, tab-separated text when
//! piped, pretty JSON for `--json`.

use std::io::{IsTerminal, Write};

use super::{exit, CliError};

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::new(exit::FAILURE, e)),
    }
}

pub fn json(value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::new(exit::FAILURE, e))?;
    emit(&format!("{text}\n"))
}

/// Text from outside (a session key, a message) as it may reach a
/// terminal: control characters shown escaped (`\u{1b}`), so none can
/// move the cursor, retitle the window or forge a line; newlines and tabs
/// kept only when `multiline`.
pub fn printable(s: &str, multiline: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && !(multiline && (c == '\n' || c == '\t'));
    if !s.chars().any(bad) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Renders rows: padded columns on a terminal, tab-separated otherwise.
/// Cells are made printable (no control character reaches the terminal).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c, false).into_owned()).collect())
        .collect();
    let rows = &rows;
    if !stdout_is_terminal() {
        let mut s = header.join("\t");
        s.push('\n');
        for r in rows {
            s.push_str(&r.join("\t"));
            s.push('\n');
        }
        return s;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = line(header.to_vec());
    for r in rows {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}
