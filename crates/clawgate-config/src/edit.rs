//! Comment-preserving edits of a config file (`config set`, `models set`,
//! aliases, fallbacks) and redacted reads (`config get`, CFG-7).
//!
//! Edits go through `jsonc-parser`'s concrete syntax tree, so comments,
//! blank lines, unquoted keys and trailing commas the user wrote survive.
//! Every write re-validates the new text first, keeps the previous file as
//! `<file>.bak`, and replaces the file atomically.

use std::path::{Path, PathBuf};

use jsonc_parser::cst::{CstContainerNode, CstInputValue, CstNode, CstObject, CstRootNode};
use serde_json::Value;

use crate::diag::ConfigError;
use crate::path::{render, Segment};
use crate::secret::SecretValue;
use crate::source::Source;
use crate::tree::{self, json5_options};

/// An editable config text.
pub struct Document {
    root: CstRootNode,
}

impl Document {
    /// Parses text; a syntax error is reported like any load error.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let source = Source::new(path, text);
        tree::parse(&source).map_err(|d| ConfigError::Invalid(vec![d]))?;
        let root =
            CstRootNode::parse(text, &json5_options()).map_err(|e| ConfigError::BadValue {
                path: String::new(),
                reason: e.to_string(),
            })?;
        Ok(Self { root })
    }

    /// The current text.
    pub fn text(&self) -> String {
        self.root.to_string()
    }

    /// Sets the value at `path`, creating missing objects on the way.
    pub fn set(&mut self, path: &[Segment], value: &Value) -> Result<(), ConfigError> {
        self.set_input(path, to_input(value))
    }

    /// Like [`Document::set`], keeping the key order of `node`.
    pub fn set_node(&mut self, path: &[Segment], node: &tree::Node) -> Result<(), ConfigError> {
        self.set_input(path, node_input(node))
    }

    fn set_input(&mut self, path: &[Segment], input: CstInputValue) -> Result<(), ConfigError> {
        let (last, parents) = path.split_last().ok_or_else(|| ConfigError::BadPath {
            path: String::new(),
            reason: "empty path".into(),
        })?;
        let mut container = Container::Object(self.root.object_value_or_set());
        for (i, seg) in parents.iter().enumerate() {
            let here = render(&path[..=i]);
            container = match (container, seg) {
                (Container::Object(obj), Segment::Key(k)) => match obj.get(k) {
                    Some(prop) => match prop.value() {
                        Some(node) => Container::from_node(node, &here)?,
                        None => Container::Object(obj.object_value_or_set(k)),
                    },
                    None => {
                        // Create an object, or an array when the next step indexes.
                        match path.get(i + 1) {
                            Some(Segment::Index(_)) => {
                                return Err(ConfigError::PathNotFound(here));
                            }
                            _ => Container::Object(obj.object_value_or_set(k)),
                        }
                    }
                },
                (Container::Array(arr), Segment::Index(n)) => {
                    let node = arr
                        .elements()
                        .into_iter()
                        .nth(*n)
                        .ok_or_else(|| ConfigError::PathNotFound(here.clone()))?;
                    Container::from_node(node, &here)?
                }
                (Container::Object(_), Segment::Index(_)) => {
                    return Err(ConfigError::BadPath {
                        path: here,
                        reason: "indexes an object".into(),
                    })
                }
                (Container::Array(_), Segment::Key(_)) => {
                    return Err(ConfigError::BadPath {
                        path: here,
                        reason: "uses a key on an array".into(),
                    })
                }
            };
        }
        match (container, last) {
            (Container::Object(obj), Segment::Key(k)) => match obj.get(k) {
                Some(prop) => prop.set_value(input),
                None => {
                    obj.append(k, input);
                }
            },
            (Container::Array(arr), Segment::Index(n)) => {
                let elements = arr.elements();
                if *n < elements.len() {
                    if let Some(old) = elements.into_iter().nth(*n) {
                        arr.insert(*n, input);
                        old.remove();
                    }
                } else if *n == elements.len() {
                    arr.append(input);
                } else {
                    return Err(ConfigError::PathNotFound(render(path)));
                }
            }
            _ => {
                return Err(ConfigError::BadPath {
                    path: render(path),
                    reason: "does not match the shape of the file".into(),
                })
            }
        }
        Ok(())
    }

    /// Removes the value at `path`; `false` when it was not there.
    pub fn remove(&mut self, path: &[Segment]) -> bool {
        let Some(node) = self.find(path) else {
            return false;
        };
        // Remove the whole property (key and value) when the target is one.
        match node.parent() {
            Some(CstContainerNode::ObjectProp(prop)) => prop.remove(),
            _ => node.remove(),
        }
        true
    }

    fn find(&self, path: &[Segment]) -> Option<CstNode> {
        let mut node = self.root.value()?;
        for seg in path {
            node = match (seg, node) {
                (Segment::Key(k), CstNode::Container(CstContainerNode::Object(o))) => {
                    o.get(k)?.value()?
                }
                (Segment::Index(n), CstNode::Container(CstContainerNode::Array(a))) => {
                    a.elements().into_iter().nth(*n)?
                }
                _ => return None,
            };
        }
        Some(node)
    }
}

enum Container {
    Object(CstObject),
    Array(jsonc_parser::cst::CstArray),
}

impl Container {
    fn from_node(node: CstNode, path: &str) -> Result<Self, ConfigError> {
        match node {
            CstNode::Container(CstContainerNode::Object(o)) => Ok(Container::Object(o)),
            CstNode::Container(CstContainerNode::Array(a)) => Ok(Container::Array(a)),
            _ => Err(ConfigError::BadPath {
                path: path.to_string(),
                reason: "is not an object or array".into(),
            }),
        }
    }
}

fn to_input(v: &Value) -> CstInputValue {
    match v {
        Value::Null => CstInputValue::Null,
        Value::Bool(b) => CstInputValue::Bool(*b),
        Value::Number(n) => CstInputValue::Number(n.to_string()),
        Value::String(s) => CstInputValue::String(s.clone()),
        Value::Array(a) => CstInputValue::Array(a.iter().map(to_input).collect()),
        Value::Object(o) => {
            CstInputValue::Object(o.iter().map(|(k, v)| (k.clone(), to_input(v))).collect())
        }
    }
}

/// Reads the value at `path` from a parsed file, with secrets redacted.
pub fn get_redacted(text: &str, file: &Path, path: &[Segment]) -> Result<Value, ConfigError> {
    get_redacted_node(text, file, path).map(|n| n.to_json())
}

/// [`get_redacted`] in source order (the node serialises as JSON).
pub fn get_redacted_node(
    text: &str,
    file: &Path,
    path: &[Segment],
) -> Result<tree::Node, ConfigError> {
    let source = Source::new(file, text);
    let root = tree::parse(&source).map_err(|d| ConfigError::Invalid(vec![d]))?;
    // The effective value: `$include`d files merged in, as the loader does.
    let mut includes = crate::include::Expander::new(source);
    let root = root.map(|r| includes.expand(r));
    if !includes.diags.is_empty() {
        return Err(ConfigError::Invalid(includes.diags));
    }
    let mut node = root.unwrap_or(tree::Node {
        span: Default::default(),
        kind: tree::Kind::Object(Vec::new()),
    });
    let mut keys: Vec<String> = Vec::new();
    for seg in path {
        node = match (seg, node.kind) {
            (Segment::Key(k), tree::Kind::Object(entries)) => {
                keys.push(k.clone());
                entries
                    .into_iter()
                    .rev()
                    .find(|e| &e.key == k)
                    .map(|e| e.value)
                    .ok_or_else(|| ConfigError::PathNotFound(render(path)))?
            }
            (Segment::Index(i), tree::Kind::Array(mut a)) if *i < a.len() => a.swap_remove(*i),
            _ => return Err(ConfigError::PathNotFound(render(path))),
        };
    }
    redact_node(&mut node, &keys);
    Ok(node)
}

fn redact_node(node: &mut tree::Node, keys: &[String]) {
    match &mut node.kind {
        tree::Kind::String(s) if is_secret_path(keys) => {
            *s = SecretValue::resolve(s, &|_| None).redacted();
        }
        tree::Kind::Object(entries) => {
            for e in entries.iter_mut() {
                let mut child = keys.to_vec();
                child.push(e.key.clone());
                redact_node(&mut e.value, &child);
            }
        }
        tree::Kind::Array(items) => {
            for v in items.iter_mut() {
                redact_node(v, keys);
            }
        }
        _ => {}
    }
}

fn node_input(n: &tree::Node) -> CstInputValue {
    match &n.kind {
        tree::Kind::Array(items) => CstInputValue::Array(items.iter().map(node_input).collect()),
        tree::Kind::Object(entries) => CstInputValue::Object(
            entries
                .iter()
                .map(|e| (e.key.clone(), node_input(&e.value)))
                .collect(),
        ),
        _ => to_input(&n.to_json()),
    }
}

/// True when a key path holds secrets (SEC-3).
fn is_secret_path(keys: &[String]) -> bool {
    let Some(last) = keys.last() else {
        return false;
    };
    let lower = last.to_ascii_lowercase();
    let parent = keys.len().checked_sub(2).and_then(|i| keys.get(i));
    lower == "apikey"
        || lower == "token"
        || lower == "password"
        || lower.contains("secret")
        || lower.ends_with("_key")
        || lower.ends_with("-key")
        || lower == "authorization"
        || matches!(
            parent.map(String::as_str),
            Some("headers") | Some("env") | Some("vars")
        )
}

/// Writes `text` to `path` atomically, keeping the previous content as
/// `<path>.bak`. Returns the backup path when there was a previous file.
pub fn write_with_backup(path: &Path, text: &str) -> Result<Option<PathBuf>, ConfigError> {
    let write_err = |error| ConfigError::Write {
        path: path.to_path_buf(),
        error,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let backup = if path.exists() {
        let mut b = path.as_os_str().to_owned();
        b.push(".bak");
        let b = PathBuf::from(b);
        std::fs::copy(path, &b).map_err(write_err)?;
        Some(b)
    } else {
        None
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // Created with the user's mode from the start (a 600 file holding
    // keys never exists as 644, even for a moment); a new file is 600.
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o600);
        open.mode(mode);
        // `mode` applies only when the file is created: a stale `.tmp`
        // from a crash is replaced rather than reused.
        let _ = std::fs::remove_file(&tmp);
    }
    {
        use std::io::Write;
        let mut f = open.open(&tmp).map_err(write_err)?;
        f.write_all(text.as_bytes()).map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
    }
    if let Ok(meta) = std::fs::metadata(path) {
        // Keep the user's permissions (umask may have narrowed them).
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).map_err(write_err)?;
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::parse;

    const TEXT: &str = r#"{
  // my local box
  models: {
    providers: {
      lmstudio: {
        baseUrl: "http://127.0.0.1:1234/v1", // LM Studio
        apiKey: "sk-real-secret",
        models: [{ id: "a" }],
      },
    },
  },
}
"#;

    #[test]
    fn set_keeps_comments_and_creates_objects() {
        let mut doc = Document::parse(Path::new("c.json5"), TEXT).unwrap();
        doc.set(
            &parse("agents.defaults.model.primary").unwrap(),
            &Value::from("lmstudio/a"),
        )
        .unwrap();
        doc.set(
            &parse("models.providers.lmstudio.models[0].contextWindow").unwrap(),
            &Value::from(4096),
        )
        .unwrap();
        let text = doc.text();
        assert!(text.contains("// my local box"), "{text}");
        assert!(text.contains("// LM Studio"), "{text}");
        let v = tree::parse_value(&text).unwrap();
        assert_eq!(v["agents"]["defaults"]["model"]["primary"], "lmstudio/a");
        assert_eq!(
            v["models"]["providers"]["lmstudio"]["models"][0]["contextWindow"],
            4096
        );
    }

    #[test]
    fn remove_deletes_property() {
        let mut doc = Document::parse(Path::new("c.json5"), TEXT).unwrap();
        assert!(doc.remove(&parse("models.providers.lmstudio.apiKey").unwrap()));
        assert!(!doc.remove(&parse("models.nope").unwrap()));
        let v = tree::parse_value(&doc.text()).unwrap();
        assert!(v["models"]["providers"]["lmstudio"].get("apiKey").is_none());
    }

    #[test]
    fn get_redacts_secrets() {
        let v = get_redacted(
            TEXT,
            Path::new("c"),
            &parse("models.providers.lmstudio").unwrap(),
        )
        .unwrap();
        assert_eq!(v["apiKey"], "***");
        assert_eq!(v["baseUrl"], "http://127.0.0.1:1234/v1");
        let err = get_redacted(TEXT, Path::new("c"), &parse("models.x").unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "Config path not found: models.x");
    }
}
