//! OpenClaw's `$include`: an object's `$include` (one path, or a list) is
//! replaced by the included files' contents, a list deep-merged in order,
//! sibling keys merged over them; paths are relative to the including
//! file; includes nest up to 10 levels. Every included node keeps its own
//! file in its spans, so a diagnostic names the included file, line and
//! column. Missing files and loops are errors at the `$include` itself.

use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Loc, Severity};
use crate::source::Source;
use crate::tree::{self, Entry, Kind, Node, Span};

/// How deep includes may nest (OpenClaw's limit).
pub const MAX_DEPTH: usize = 10;
/// Largest included file read.
const MAX_FILE: u64 = 8 * 1024 * 1024;
/// Most files one load may include (a wide fan-out is as bad as a deep one).
const MAX_FILES: usize = 256;

pub struct Expander {
    /// The config file first, then every included file.
    pub sources: Vec<Source>,
    pub diags: Vec<Diagnostic>,
    /// The canonical paths being expanded, outermost first (loop check).
    chain: Vec<PathBuf>,
    /// False: no file is read (sandboxed loads).
    pub io: bool,
}

impl Expander {
    pub fn new(main: Source) -> Self {
        let canonical = std::fs::canonicalize(main.path()).unwrap_or_else(|_| main.path().into());
        Self {
            sources: vec![main],
            diags: Vec::new(),
            chain: vec![canonical],
            io: true,
        }
    }

    /// The files read besides the config itself.
    pub fn included(&self) -> Vec<PathBuf> {
        self.sources[1..]
            .iter()
            .map(|s| s.path().to_path_buf())
            .collect()
    }

    fn error(&mut self, span: Span, message: String) {
        let src = &self.sources[usize::from(span.file).min(self.sources.len() - 1)];
        let (line, column) = src.line_col(span.start);
        let loc = Loc {
            line,
            column,
            path: "$include".to_string(),
            file: None,
        };
        self.diags
            .push(Diagnostic::at(Severity::Error, src.path(), &loc, message));
    }

    /// Expands every `$include` under `node`.
    pub fn expand(&mut self, node: Node) -> Node {
        let span = node.span;
        match node.kind {
            Kind::Array(items) => Node {
                span,
                kind: Kind::Array(items.into_iter().map(|n| self.expand(n)).collect()),
            },
            Kind::Object(entries) => self.expand_object(span, entries),
            kind => Node { span, kind },
        }
    }

    fn expand_object(&mut self, span: Span, entries: Vec<Entry>) -> Node {
        let mut include = None;
        let mut rest = Vec::with_capacity(entries.len());
        for e in entries {
            if e.key == "$include" && include.is_none() {
                include = Some(e);
            } else {
                rest.push(Entry {
                    value: self.expand(e.value),
                    ..e
                });
            }
        }
        let Some(inc) = include else {
            return Node {
                span,
                kind: Kind::Object(rest),
            };
        };
        let paths: Vec<(String, Span)> = match inc.value.kind {
            Kind::String(s) => vec![(s, inc.value.span)],
            Kind::Array(items) => {
                let mut out = Vec::new();
                for it in items {
                    match it.kind {
                        Kind::String(s) => out.push((s, it.span)),
                        _ => self.error(it.span, "an $include entry must be a file path".into()),
                    }
                }
                out
            }
            _ => {
                self.error(
                    inc.value.span,
                    "$include takes a file path or a list of paths".into(),
                );
                Vec::new()
            }
        };
        let mut base: Option<Node> = None;
        for (p, at) in paths {
            let Some(n) = self.load(&p, at) else {
                continue;
            };
            base = Some(match base {
                None => n,
                Some(b) => merge(b, n),
            });
        }
        let siblings = Node {
            span,
            kind: Kind::Object(rest),
        };
        match base {
            None => siblings,
            Some(b) if matches!(&siblings.kind, Kind::Object(r) if r.is_empty()) => b,
            Some(b) if matches!(b.kind, Kind::Object(_)) => merge(b, siblings),
            Some(_) => {
                self.error(
                    inc.key_span,
                    "an included file with sibling keys must hold an object".into(),
                );
                siblings
            }
        }
    }

    /// Reads, parses and expands one included file.
    fn load(&mut self, written: &str, at: Span) -> Option<Node> {
        if !self.io {
            self.error(at, "$include is not read in a sandboxed load".into());
            return None;
        }
        if self.chain.len() > MAX_DEPTH {
            self.error(at, format!("$include nests deeper than {MAX_DEPTH} levels"));
            return None;
        }
        if self.sources.len() > MAX_FILES {
            self.error(at, format!("more than {MAX_FILES} included files"));
            return None;
        }
        let including = self.sources[usize::from(at.file)].path().to_path_buf();
        let path = resolve(&including, written);
        let canonical = match std::fs::canonicalize(&path) {
            Ok(c) => c,
            Err(e) => {
                let why = if e.kind() == std::io::ErrorKind::NotFound {
                    "not found".to_string()
                } else {
                    e.to_string()
                };
                self.error(at, format!("included file {}: {why}", path.display()));
                return None;
            }
        };
        if let Some(pos) = self.chain.iter().position(|c| *c == canonical) {
            let mut names: Vec<String> = self.chain[pos..]
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            names.push(canonical.display().to_string());
            self.error(at, format!("circular $include: {}", names.join(" -> ")));
            return None;
        }
        let text = match std::fs::metadata(&canonical) {
            Ok(m) if m.len() > MAX_FILE => {
                self.error(
                    at,
                    format!("included file {} is larger than 8 MiB", path.display()),
                );
                return None;
            }
            _ => match crate::read::read_regular(&canonical, MAX_FILE) {
                Ok(t) => t,
                Err(e) => {
                    self.error(at, format!("included file {}: {e}", path.display()));
                    return None;
                }
            },
        };
        let index = u16::try_from(self.sources.len()).ok()?;
        let source = Source::new(&path, text);
        let parsed = tree::parse(&source);
        self.sources.push(source);
        let mut node = match parsed {
            Ok(Some(n)) => n,
            Ok(None) => Node {
                span: Span::default(),
                kind: Kind::Object(Vec::new()),
            },
            Err(d) => {
                self.diags.push(d);
                return None;
            }
        };
        set_file(&mut node, index);
        self.chain.push(canonical);
        let out = self.expand(node);
        self.chain.pop();
        Some(out)
    }
}

/// A path written in `including`: absolute, `~/…`, or relative to the
/// including file's folder.
fn resolve(including: &Path, written: &str) -> PathBuf {
    let p = crate::secretref::expand_home(Path::new(written));
    if p.is_absolute() {
        return p;
    }
    let joined = including.parent().map(|d| d.join(&p)).unwrap_or(p);
    // `./x` reads better without the `.` in messages.
    joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

fn set_file(node: &mut Node, file: u16) {
    node.span.file = file;
    match &mut node.kind {
        Kind::Array(items) => items.iter_mut().for_each(|n| set_file(n, file)),
        Kind::Object(entries) => {
            for e in entries {
                e.key_span.file = file;
                set_file(&mut e.value, file);
            }
        }
        _ => {}
    }
}

/// Deep merge: objects key by key (`over` wins), anything else replaced.
pub fn merge(base: Node, over: Node) -> Node {
    match (base.kind, over.kind) {
        (Kind::Object(mut b), Kind::Object(o)) => {
            for e in o {
                match b.iter().position(|x| x.key == e.key) {
                    Some(i) => {
                        let old = b.remove(i);
                        b.insert(
                            i,
                            Entry {
                                value: merge(old.value, e.value),
                                ..e
                            },
                        );
                    }
                    None => b.push(e),
                }
            }
            Node {
                span: base.span,
                kind: Kind::Object(b),
            }
        }
        (_, kind) => Node {
            span: over.span,
            kind,
        },
    }
}
