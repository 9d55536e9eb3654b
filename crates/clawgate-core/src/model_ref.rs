//! Model references: `provider/model`, split on the first `/` (REF-1).

use std::fmt;

/// A parsed `provider/model` reference.
///
/// The split is on the FIRST `/`, so `openrouter/moonshotai/kimi-k2` is
/// provider `openrouter`, model `moonshotai/kimi-k2`. Comparison between refs
/// is case-insensitive (see [`ModelRef::matches`]); the original spelling is
/// kept for display.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    provider: String,
    model: String,
}

/// Why a string is not a `provider/model` reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("{0:?} is not a provider/model reference (no \"/\")")]
    NoSlash(String),
    #[error("{0:?} has an empty provider before \"/\"")]
    EmptyProvider(String),
    #[error("{0:?} has an empty model id after \"/\"")]
    EmptyModel(String),
}

impl ModelRef {
    /// Builds a ref from its two parts without validation of content.
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
        }
    }

    /// Parses `provider/model`, splitting on the first `/`.
    pub fn parse(s: &str) -> Result<Self, RefError> {
        let trimmed = s.trim();
        let Some((provider, model)) = trimmed.split_once('/') else {
            return Err(RefError::NoSlash(s.to_string()));
        };
        if provider.is_empty() {
            return Err(RefError::EmptyProvider(s.to_string()));
        }
        if model.is_empty() {
            return Err(RefError::EmptyModel(s.to_string()));
        }
        Ok(Self::new(provider, model))
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Case-insensitive equality of both parts (REF-1).
    pub fn matches(&self, other: &ModelRef) -> bool {
        self.provider.eq_ignore_ascii_case(&other.provider)
            && self.model.eq_ignore_ascii_case(&other.model)
    }

    /// The lowercase form used as a comparison key.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.provider.to_ascii_lowercase(),
            self.model.to_ascii_lowercase()
        )
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_first_slash() {
        let r = ModelRef::parse("openrouter/moonshotai/kimi-k2").unwrap();
        assert_eq!(r.provider(), "openrouter");
        assert_eq!(r.model(), "moonshotai/kimi-k2");
        assert_eq!(r.to_string(), "openrouter/moonshotai/kimi-k2");
    }

    #[test]
    fn compares_case_insensitively() {
        let a = ModelRef::parse("LMStudio/MiniMax-M2.1-GS32").unwrap();
        let b = ModelRef::parse("lmstudio/minimax-m2.1-gs32").unwrap();
        assert!(a.matches(&b));
        assert_eq!(a.key(), b.key());
        assert_ne!(a, b, "display spelling is preserved");
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            ModelRef::parse("sonnet"),
            Err(RefError::NoSlash("sonnet".into()))
        );
        assert_eq!(
            ModelRef::parse("/x"),
            Err(RefError::EmptyProvider("/x".into()))
        );
        assert_eq!(
            ModelRef::parse("x/"),
            Err(RefError::EmptyModel("x/".into()))
        );
    }
}
