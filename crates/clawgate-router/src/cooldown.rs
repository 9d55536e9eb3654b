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
    /// Cooldown windows so far (one step of the ladder each).
    pub failures: u32,
    /// Clock time this window began: a failure of an attempt that started
    /// before it was already in flight and does not climb the ladder.
    pub since: Duration,
    /// While set and in the future, one half-open probe holds the key.
    probe_until: Option<Duration>,
}

const LADDER: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(300),
];
/// A refused connection: the server is down, not slow, and may be started
/// any moment (a local server is re-probed before it is skipped anyway).
const UNREACHABLE_LADDER: [Duration; 3] = [
    Duration::from_secs(5),
    Duration::from_secs(15),
    Duration::from_secs(30),
];
const BILLING_BASE: Duration = Duration::from_secs(5 * 3600);
const BILLING_MAX: Duration = Duration::from_secs(24 * 3600);
const AUTH_PERMANENT: [Duration; 2] = [Duration::from_secs(600), Duration::from_secs(3600)];
/// How long a half-open probe holds a key before another request may
/// probe (a probe that never reports, e.g. a client that went away).
pub const PROBE_HOLD: Duration = Duration::from_secs(30);

/// How long a failure of this class keeps the key out.
pub fn duration_for(
    class: ErrorClass,
    failures: u32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let n = failures.max(1) as usize;
    let step = (n - 1).min(LADDER.len() - 1);
    let ladder = LADDER[step];
    match class {
        // Transient capacity: the whole-chain retry with backoff handles it.
        ErrorClass::Overloaded => None,
        // Not the provider's fault.
        ErrorClass::ContextOverflow | ErrorClass::Format | ErrorClass::Blocked => None,
        ErrorClass::Billing => {
            let factor = 1u32 << (n - 1).min(3);
            Some((BILLING_BASE * factor).min(BILLING_MAX))
        }
        ErrorClass::AuthPermanent => Some(AUTH_PERMANENT[(n - 1).min(1)]),
        ErrorClass::RateLimit => Some(retry_after.unwrap_or(ladder)),
        ErrorClass::Unreachable => Some(UNREACHABLE_LADDER[step]),
        _ => Some(retry_after.map_or(ladder, |r| r.max(ladder))),
    }
}

/// Whether a request may use a key now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// No cooldown.
    Open,
    /// The cooldown ended: this request is the one half-open probe.
    Probe,
    /// Cooling for this long.
    Cooling(Duration, ErrorClass),
    /// The cooldown ended and another request is probing.
    ProbeInFlight(ErrorClass),
}

#[derive(Debug, Default)]
pub struct CooldownBook {
    entries: HashMap<CooldownKey, Cooldown>,
    /// Keys with one server error and no success since: a single 5xx
    /// from a server that answers others is no reason to cool it down.
    strikes: HashMap<CooldownKey, u32>,
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
    /// Records a failure of an attempt that began at `started`; returns
    /// the cooldown started, if any. One step of the ladder per window:
    /// attempts in flight when the window opened, and failures inside an
    /// open window, do not climb it; a failed half-open probe does.
    pub fn failure(
        &mut self,
        key: CooldownKey,
        class: ErrorClass,
        retry_after: Option<Duration>,
        started: Duration,
        now: Duration,
    ) -> Option<Duration> {
        let existing = self.entries.get(&key).copied();
        if let Some(c) = existing {
            if started < c.since || now < c.until {
                // Same step; but inside the window a failure of another
                // kind that keeps the key out longer at this step
                // (billing, a long Retry-After) extends it.
                let other = class != c.class || retry_after.is_some();
                let longer = duration_for(class, c.failures, retry_after)
                    .map(|d| now + d)
                    .filter(|until| other && now < c.until && *until > c.until);
                if let (Some(until), Some(e)) = (longer, self.entries.get_mut(&key)) {
                    e.until = until;
                    e.class = class;
                    return Some(until - now);
                }
                return None;
            }
        }
        if class == ErrorClass::ServerError && existing.is_none() {
            let strikes = self.strikes.entry(key.clone()).or_insert(0);
            *strikes += 1;
            if *strikes < 2 {
                return None;
            }
        }
        let failures = existing.map_or(0, |c| c.failures) + 1;
        let d = duration_for(class, failures, retry_after)?;
        self.strikes.remove(&key);
        self.entries.insert(
            key,
            Cooldown {
                until: now + d,
                class,
                failures,
                since: now,
                probe_until: None,
            },
        );
        Some(d)
    }

    /// A success clears the key, its failure count and its strikes.
    pub fn success(&mut self, key: &CooldownKey) {
        // The common case: nothing is cooling, and hashing the key is
        // most of the cost of a removal (measured per request).
        if !self.entries.is_empty() {
            self.entries.remove(key);
        }
        if !self.strikes.is_empty() {
            self.strikes.remove(key);
        }
    }

    /// Remaining cooldown of a key, if it is cooling.
    pub fn remaining(&self, key: &CooldownKey, now: Duration) -> Option<(Duration, ErrorClass)> {
        let c = self.entries.get(key)?;
        (c.until > now).then(|| (c.until - now, c.class))
    }

    /// Whether a request may use `key` now. After a cooldown ends, the
    /// first caller is let through as the half-open probe; others see
    /// [`Admission::ProbeInFlight`] until it reports (or [`PROBE_HOLD`]).
    pub fn admit(&mut self, key: &CooldownKey, now: Duration) -> Admission {
        let Some(c) = self.entries.get_mut(key) else {
            return Admission::Open;
        };
        if c.until > now {
            return Admission::Cooling(c.until - now, c.class);
        }
        if c.probe_until.is_some_and(|p| p > now) {
            return Admission::ProbeInFlight(c.class);
        }
        c.probe_until = Some(now + PROBE_HOLD);
        Admission::Probe
    }

    /// Ends a cooling key's window now and lets this caller through as
    /// its half-open probe (a local server that accepts connections
    /// again): a failure still climbs the ladder, a success clears it.
    pub fn reopen(&mut self, key: &CooldownKey, now: Duration) -> Admission {
        match self.entries.get_mut(key) {
            Some(c) if c.probe_until.is_some_and(|p| p > now) => Admission::ProbeInFlight(c.class),
            Some(c) => {
                c.until = c.until.min(now);
                c.probe_until = Some(now + PROBE_HOLD);
                Admission::Probe
            }
            None => Admission::Open,
        }
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

    /// Loads saved entries (newer local state wins). A loaded window
    /// counts as begun before anything this process starts.
    pub fn import(&mut self, saved: &[SavedCooldown], now: Duration, now_unix_ms: u64) {
        for s in saved {
            let left = s.until_unix_ms.saturating_sub(now_unix_ms);
            self.entries.entry(s.key.clone()).or_insert(Cooldown {
                until: now + Duration::from_millis(left),
                class: s.class,
                failures: s.failures,
                since: Duration::ZERO,
                probe_until: None,
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

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn fo_3_ladder_expiry_and_reset() {
        let mut b = CooldownBook::default();
        let t0 = Duration::ZERO;
        assert_eq!(
            b.failure(key(), ErrorClass::Timeout, None, t0, t0),
            Some(secs(30))
        );
        assert_eq!(b.remaining(&key(), secs(29)).map(|r| r.0), Some(secs(1)));
        assert_eq!(b.remaining(&key(), secs(30)), None, "expired");
        // Each failed half-open probe after a window climbs one step.
        assert_eq!(
            b.failure(key(), ErrorClass::ServerError, None, secs(31), secs(31)),
            Some(secs(60))
        );
        assert_eq!(
            b.failure(key(), ErrorClass::ServerError, None, secs(92), secs(92)),
            Some(secs(300))
        );
        assert_eq!(
            b.failure(key(), ErrorClass::ServerError, None, secs(400), secs(400)),
            Some(secs(300))
        );
        b.success(&key());
        assert_eq!(
            b.failure(key(), ErrorClass::Timeout, None, secs(401), secs(401)),
            Some(secs(30))
        );
    }

    #[test]
    fn a_burst_of_concurrent_failures_climbs_one_step_per_window() {
        let mut b = CooldownBook::default();
        // 50 requests started at t=0 fail one after another: one window.
        let mut started = Vec::new();
        for i in 0..50u64 {
            let now = Duration::from_millis(10 * i + 1);
            if let Some(d) = b.failure(key(), ErrorClass::Timeout, None, Duration::ZERO, now) {
                started.push(d);
            }
        }
        assert_eq!(started, vec![secs(30)], "one cooldown, first step");
        // A request in flight at t=0 that fails after the window ended
        // does not escalate either.
        assert_eq!(
            b.failure(key(), ErrorClass::Timeout, None, Duration::ZERO, secs(40)),
            None
        );
        assert_eq!(b.entries[&key()].failures, 1);
    }

    #[test]
    fn one_half_open_probe_when_a_cooldown_ends() {
        let mut b = CooldownBook::default();
        b.failure(key(), ErrorClass::Timeout, None, secs(0), secs(0));
        assert!(matches!(b.admit(&key(), secs(10)), Admission::Cooling(..)));
        assert_eq!(b.admit(&key(), secs(30)), Admission::Probe);
        assert_eq!(
            b.admit(&key(), secs(31)),
            Admission::ProbeInFlight(ErrorClass::Timeout),
            "a second request waits for the probe"
        );
        // The probe fails: the next step.
        assert_eq!(
            b.failure(key(), ErrorClass::Timeout, None, secs(30), secs(32)),
            Some(secs(60))
        );
        assert!(matches!(b.admit(&key(), secs(33)), Admission::Cooling(..)));
        // The next probe succeeds: fully back.
        assert_eq!(b.admit(&key(), secs(92)), Admission::Probe);
        b.success(&key());
        assert_eq!(b.admit(&key(), secs(92)), Admission::Open);
        assert_eq!(b.admit(&key(), secs(92)), Admission::Open);
        // A probe that never reports frees the key after PROBE_HOLD.
        b.failure(key(), ErrorClass::Timeout, None, secs(100), secs(100));
        assert_eq!(b.admit(&key(), secs(130)), Admission::Probe);
        assert_eq!(
            b.admit(&key(), secs(130) + PROBE_HOLD),
            Admission::Probe,
            "hold expired"
        );
    }

    #[test]
    fn a_longer_failure_inside_a_window_extends_it_without_climbing() {
        let mut b = CooldownBook::default();
        b.failure(key(), ErrorClass::Timeout, None, secs(0), secs(0));
        // A billing error from a try inside the window (the last candidate).
        assert_eq!(
            b.failure(key(), ErrorClass::Billing, None, secs(5), secs(5)),
            Some(secs(5 * 3600))
        );
        assert_eq!(
            b.remaining(&key(), secs(6)).map(|r| r.1),
            Some(ErrorClass::Billing)
        );
        assert_eq!(b.entries[&key()].failures, 1, "not a new step");
        // A shorter one changes nothing.
        assert_eq!(
            b.failure(key(), ErrorClass::Timeout, None, secs(7), secs(7)),
            None
        );
    }

    #[test]
    fn a_reopened_key_is_one_probe_and_still_climbs() {
        let mut b = CooldownBook::default();
        b.failure(key(), ErrorClass::Unreachable, None, secs(0), secs(0));
        assert_eq!(b.reopen(&key(), secs(1)), Admission::Probe);
        assert_eq!(
            b.reopen(&key(), secs(1)),
            Admission::ProbeInFlight(ErrorClass::Unreachable)
        );
        assert_eq!(
            b.failure(key(), ErrorClass::Unreachable, None, secs(1), secs(2)),
            Some(secs(15)),
            "the probe failed: the next step"
        );
    }

    #[test]
    fn a_single_server_error_does_not_cool_a_server_down() {
        let mut b = CooldownBook::default();
        assert_eq!(
            b.failure(key(), ErrorClass::ServerError, None, secs(0), secs(0)),
            None
        );
        assert_eq!(b.admit(&key(), secs(0)), Admission::Open);
        b.success(&key());
        assert_eq!(
            b.failure(key(), ErrorClass::ServerError, None, secs(1), secs(1)),
            None,
            "a success in between resets the strike"
        );
        assert_eq!(
            b.failure(key(), ErrorClass::ServerError, None, secs(2), secs(2)),
            Some(secs(30)),
            "two in a row: the server is failing"
        );
    }

    #[test]
    fn unreachable_cools_down_briefly() {
        assert_eq!(
            duration_for(ErrorClass::Unreachable, 1, None),
            Some(secs(5))
        );
        assert_eq!(
            duration_for(ErrorClass::Unreachable, 9, None),
            Some(secs(30))
        );
    }

    #[test]
    fn export_import_round_trip() {
        let mut a = CooldownBook::default();
        a.failure(key(), ErrorClass::Timeout, None, secs(10), secs(10));
        let saved = a.export(secs(10), 1_000_000);
        assert_eq!(saved[0].until_unix_ms, 1_030_000);
        let mut b = CooldownBook::default();
        // Another process, 5 s later, with its own clock at 0.
        b.import(&saved, Duration::ZERO, 1_005_000);
        assert_eq!(
            b.remaining(&key(), Duration::ZERO).map(|r| r.0),
            Some(secs(25))
        );
        assert_eq!(
            b.failure(key(), ErrorClass::Timeout, None, secs(26), secs(26)),
            Some(secs(60))
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
        assert_eq!(duration_for(ErrorClass::RateLimit, 1, None), Some(secs(30)));
        assert_eq!(
            duration_for(ErrorClass::AuthPermanent, 1, None),
            Some(secs(600))
        );
        assert_eq!(
            duration_for(ErrorClass::AuthPermanent, 2, None),
            Some(secs(3600))
        );
    }
}
