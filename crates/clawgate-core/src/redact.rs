//! The one redaction step for text that leaves the process (SEC-3):
//! every known secret value (provider keys, configured header values, the
//! gateway token) is replaced, and so is anything shaped like an API key
//! (`sk-…`), because an upstream may quote a key back in its error text.

use std::borrow::Cow;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Known secret values of one config snapshot.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a key that contains another is masked whole.
    secrets: Vec<String>,
}

/// Values shorter than this are not searched for (a 2-letter "key" would
/// mask ordinary words); key-shaped text is still masked.
const MIN_SECRET: usize = 6;

/// Prefixes of API keys as providers write them in error texts.
const KEY_PREFIXES: [&str; 2] = ["sk-", "sk_"];

impl Redactor {
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut secrets: Vec<String> = values
            .into_iter()
            .map(Into::into)
            .map(|s| s.trim().to_string())
            .filter(|s| s.len() >= MIN_SECRET)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every secret and key-shaped token masked.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), MASK));
            }
        }
        if KEY_PREFIXES.iter().any(|p| out.contains(p)) {
            out = Cow::Owned(mask_key_shapes(&out));
        }
        out
    }
}

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.')
}

/// `sk-…` tokens of at least 8 characters after the prefix become `sk-***`.
fn mask_key_shapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((i, prefix)) = KEY_PREFIXES
        .iter()
        .filter_map(|p| rest.find(p).map(|i| (i, *p)))
        .min_by_key(|(i, _)| *i)
    {
        // Only at a token start: "task-list" is not a key.
        let at_start = rest[..i].chars().next_back().is_none_or(|c| !key_char(c));
        let body_start = i + prefix.len();
        let body_len: usize = rest[body_start..]
            .chars()
            .take_while(|c| key_char(*c))
            .map(char::len_utf8)
            .sum();
        out.push_str(&rest[..body_start]);
        if at_start && body_len >= 8 {
            out.push_str(MASK);
        } else {
            out.push_str(&rest[body_start..body_start + body_len]);
        }
        rest = &rest[body_start + body_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_key_shapes_are_masked() {
        let r = Redactor::new(["sk-live-0123456789abcdef", "custom-header-secret", "ab"]);
        assert_eq!(
            r.redact("Incorrect API key provided: sk-live-0123456789abcdef."),
            "Incorrect API key provided: ***."
        );
        assert_eq!(r.redact("token custom-header-secret!"), "token ***!");
        assert_eq!(r.redact("about ab"), "about ab", "too short to search");
        assert_eq!(
            r.redact("key sk-proj-****************abcd is wrong"),
            "key sk-*** is wrong"
        );
        assert_eq!(
            r.redact("task-list sk-1 desk-top"),
            "task-list sk-1 desk-top"
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn non_ascii_text_survives() {
        let r = Redactor::new(["clé-secrète-1"]);
        assert_eq!(
            r.redact("é clé-secrète-1 ü sk_ünïcode"),
            "é *** ü sk_ünïcode"
        );
    }
}
