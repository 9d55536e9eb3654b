//! Cooldowns (FO-3): per provider credential, and per model for rate
//! limits and missing models. 30 s, 1 min, then 5 min on repeated
//! failures; billing disables for hours; `Retry-After` is honoured.

use std::collections::HashMap;
use std::time::Duration;

use crate::ErrorClass;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CooldownKey {
    /// One credential (auth profile) of a provider.
    Credential { provider: String, profile: String },
    /// One model of a provider (rate limits are often per model).
    Model { provider: String, model: String },
}

impl CooldownKey {
    pub fn describe(&self) -> String {
        match self {
            CooldownKey::Credential { provider, profile } => format!("{provider} ({profile})"),
            CooldownKey::Model { provider, model } => format!("{provider}/{model}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown {
    /// Clock time at which it ends.
    pub until: Duration,
    pub class: ErrorClass,
    /// Consecutive failures so far.
    pub failures: u32,
}

const LADDER: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(300),
];
const BILLING_BASE: Duration = Duration::from_secs(5 * 3600);
const BILLING_MAX: Duration = Duration::from_secs(24 * 3600);
const AUTH_PERMANENT: [Duration; 2] = [Duration::from_secs(600), Duration::from_secs(3600)];

/// How long a failure of this class keeps the key out.
pub fn duration_for(
    class: ErrorClass,
    failures: u32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let n = failures.max(1) as usize;
    let ladder = LADDER[(n - 1).min(LADDER.len() - 1)];
    match class {
        // Transient capacity: the whole-chain retry with backoff handles it.
        ErrorClass::Overloaded => None,
        // Not the provider's fault.
        ErrorClass::ContextOverflow | ErrorClass::Format => None,
        ErrorClass::Billing => {
            let factor = 1u32 << (n - 1).min(3);
            Some((BILLING_BASE * factor).min(BILLING_MAX))
        }
        ErrorClass::AuthPermanent => Some(AUTH_PERMANENT[(n - 1).min(1)]),
        ErrorClass::RateLimit => Some(retry_after.unwrap_or(ladder)),
        _ => Some(retry_after.map_or(ladder, |r| r.max(ladder))),
    }
}

#[derive(Debug, Default)]
pub struct CooldownBook {
    entries: HashMap<CooldownKey, Cooldown>,
}

/// A cooldown with a wall-clock expiry, for keeping state between runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCooldown {
    pub key: CooldownKey,
    /// Unix time in milliseconds.
    pub until_unix_ms: u64,
    pub class: ErrorClass,
    pub failures: u32,
}

impl CooldownBook {
    /// Records a failure; returns the cooldown started, if any.
    pub fn failure(
        &mut self,
        key: CooldownKey,
        class: ErrorClass,
        retry_after: Option<Duration>,
        now: Duration,
    ) -> Option<Duration> {
        let failures = self.entries.get(&key).map_or(0, |c| c.failures) + 1;
        let d = duration_for(class, failures, retry_after)?;
        self.entries.insert(
            key,
            Cooldown {
                until: now + d,
                class,
                failures,
            },
        );
        Some(d)
    }

    /// A success clears the key and its failure count.
    pub fn success(&mut self, key: &CooldownKey) {
        self.entries.remove(key);
    }

    /// Remaining cooldown of a key, if it is cooling.
    pub fn remaining(&self, key: &CooldownKey, now: Duration) -> Option<(Duration, ErrorClass)> {
        let c = self.entries.get(key)?;
        (c.until > now).then(|| (c.until - now, c.class))
    }

    /// Entries with wall-clock expiries (`now` is this clock's time at
    /// `now_unix_ms`). Failure counts of expired entries are kept, so a
    /// repeated failure still climbs the ladder.
    pub fn export(&self, now: Duration, now_unix_ms: u64) -> Vec<SavedCooldown> {
        self.entries
            .iter()
            .map(|(k, c)| SavedCooldown {
                key: k.clone(),
                until_unix_ms: (now_unix_ms as i128 + c.until.as_millis() as i128
                    - now.as_millis() as i128)
                    .max(0) as u64,
                class: c.class,
                failures: c.failures,
            })
            .collect()
    }

    /// Loads saved entries (newer local state wins).
    pub fn import(&mut self, saved: &[SavedCooldown], now: Duration, now_unix_ms: u64) {
        for s in saved {
            let left = s.until_unix_ms.saturating_sub(now_unix_ms);
            self.entries.entry(s.key.clone()).or_insert(Cooldown {
                until: now + Duration::from_millis(left),
                class: s.class,
                failures: s.failures,
            });
        }
    }

    /// Every key still cooling, soonest expiry first.
    pub fn active(&self, now: Duration) -> Vec<(CooldownKey, Duration, ErrorClass)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, c)| c.until > now)
            .map(|(k, c)| (k.clone(), c.until - now, c.class))
            .collect();
        v.sort_by_key(|(_, d, _)| *d);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CooldownKey {
        CooldownKey::Credential {
            provider: "anthropic".into(),
            profile: "anthropic:default".into(),
        }
    }

    #[test]
    fn fo_3_ladder_expiry_and_reset() {
        let mut b = CooldownBook::default();
        let t0 = Duration::ZERO;
        assert_eq!(
            b.failure(key(), ErrorClass::Timeout, None, t0),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            b.remaining(&key(), Duration::from_secs(29)).map(|r| r.0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            b.remaining(&key(), Duration::from_secs(30)),
            None,
            "expired"
        );
        let t1 = Duration::from_secs(31);
        assert_eq!(
            b.failure(key(), ErrorClass::ServerError, None, t1),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            b.failure(key(), ErrorClass::ServerError, None, t1),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            b.failure(key(), ErrorClass::ServerError, None, t1),
            Some(Duration::from_secs(300))
        );
        b.success(&key());
        assert_eq!(
            b.failure(key(), ErrorClass::Timeout, None, t1),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn export_import_round_trip() {
        let mut a = CooldownBook::default();
        a.failure(key(), ErrorClass::Timeout, None, Duration::from_secs(10));
        let saved = a.export(Duration::from_secs(10), 1_000_000);
        assert_eq!(saved[0].until_unix_ms, 1_030_000);
        let mut b = CooldownBook::default();
        // Another process, 5 s later, with its own clock at 0.
        b.import(&saved, Duration::ZERO, 1_005_000);
        assert_eq!(
            b.remaining(&key(), Duration::ZERO).map(|r| r.0),
            Some(Duration::from_secs(25))
        );
        assert_eq!(
            b.failure(key(), ErrorClass::Timeout, None, Duration::ZERO),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn fo_3_class_rules() {
        let h = |s: u64| Duration::from_secs(s * 3600);
        assert_eq!(duration_for(ErrorClass::Billing, 1, None), Some(h(5)));
        assert_eq!(duration_for(ErrorClass::Billing, 2, None), Some(h(10)));
        assert_eq!(duration_for(ErrorClass::Billing, 9, None), Some(h(24)));
        assert_eq!(duration_for(ErrorClass::Overloaded, 1, None), None);
        assert_eq!(duration_for(ErrorClass::ContextOverflow, 1, None), None);
        let ra = Some(Duration::from_secs(7));
        assert_eq!(
            duration_for(ErrorClass::RateLimit, 1, ra),
            ra,
            "Retry-After honoured"
        );
        assert_eq!(
            duration_for(ErrorClass::RateLimit, 1, None),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            duration_for(ErrorClass::AuthPermanent, 1, None),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            duration_for(ErrorClass::AuthPermanent, 2, None),
            Some(Duration::from_secs(3600))
        );
    }
}
