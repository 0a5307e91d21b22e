//! Failure accounting per plugin: consecutive failures, exponential backoff, quarantine. Pure state with unit
//! tests; the host feeds it the clock. The first failure retries at once on a fresh instance (a one-off trap
//! should cost one message, not a minute of them); from the second consecutive failure the plugin is skipped for
//! `backoff-initial-ms`, doubling up to `backoff-max-ms`; after `quarantine-after` it is quarantined.

use crate::config::FailureSettings;

/// Whether the plugin may be called now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call it.
    Allowed,
    /// Skip it until this time (ms); apply the failure policy.
    BackingOff {
        /// Retry time, ms since the Unix epoch.
        until_ms: u64,
    },
    /// Skip it until an administrator reloads or resets it; apply the failure policy.
    Quarantined,
}

/// What a failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Callable again from this time (ms).
    RetryAt(u64),
    /// Quarantined now.
    Quarantined,
}

/// Health of one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// All failures since load.
    pub total_failures: u64,
    /// All completed calls since load.
    pub total_calls: u64,
    retry_at_ms: u64,
    quarantined: bool,
}

impl Health {
    /// May it be called at `now_ms`?
    pub fn admit(&self, now_ms: u64) -> Admission {
        if self.quarantined {
            Admission::Quarantined
        } else if now_ms < self.retry_at_ms {
            Admission::BackingOff {
                until_ms: self.retry_at_ms,
            }
        } else {
            Admission::Allowed
        }
    }

    /// Whether it is quarantined.
    pub fn is_quarantined(&self) -> bool {
        self.quarantined
    }

    /// A call succeeded.
    pub fn record_success(&mut self) {
        self.total_calls += 1;
        self.consecutive_failures = 0;
        self.retry_at_ms = 0;
    }

    /// A call failed at `now_ms`.
    pub fn record_failure(&mut self, now_ms: u64, settings: &FailureSettings) -> AfterFailure {
        self.total_calls += 1;
        self.total_failures += 1;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if settings.quarantine_after > 0 && self.consecutive_failures >= settings.quarantine_after {
            self.quarantined = true;
            return AfterFailure::Quarantined;
        }
        let delay = if self.consecutive_failures <= 1 {
            0
        } else {
            let doublings = (self.consecutive_failures - 2).min(32);
            settings
                .backoff_initial_ms
                .saturating_mul(1u64 << doublings)
                .min(settings.backoff_max_ms)
        };
        self.retry_at_ms = now_ms.saturating_add(delay);
        AfterFailure::RetryAt(self.retry_at_ms)
    }

    /// Administrator reset: forget failures and lift quarantine.
    pub fn reset(&mut self) {
        *self = Health {
            total_calls: self.total_calls,
            total_failures: self.total_failures,
            ..Health::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> FailureSettings {
        FailureSettings {
            policy: None,
            backoff_initial_ms: 100,
            backoff_max_ms: 350,
            quarantine_after: 5,
        }
    }

    #[test]
    fn first_failure_retries_at_once_then_backs_off_exponentially() {
        let s = settings();
        let mut h = Health::default();
        assert_eq!(h.record_failure(1_000, &s), AfterFailure::RetryAt(1_000));
        assert_eq!(h.admit(1_000), Admission::Allowed);
        assert_eq!(h.record_failure(1_000, &s), AfterFailure::RetryAt(1_100));
        assert_eq!(h.admit(1_050), Admission::BackingOff { until_ms: 1_100 });
        assert_eq!(h.admit(1_100), Admission::Allowed);
        assert_eq!(h.record_failure(1_100, &s), AfterFailure::RetryAt(1_300));
        assert_eq!(
            h.record_failure(1_300, &s),
            AfterFailure::RetryAt(1_650),
            "capped at backoff-max-ms"
        );
    }

    #[test]
    fn quarantines_after_repeated_failures_until_reset() {
        let s = settings();
        let mut h = Health::default();
        for _ in 0..4 {
            assert!(matches!(h.record_failure(0, &s), AfterFailure::RetryAt(_)));
        }
        assert_eq!(h.record_failure(0, &s), AfterFailure::Quarantined);
        assert_eq!(h.admit(u64::MAX), Admission::Quarantined);
        h.reset();
        assert_eq!(h.admit(0), Admission::Allowed);
        assert_eq!(h.total_failures, 5);
    }

    #[test]
    fn success_clears_the_streak() {
        let s = settings();
        let mut h = Health::default();
        h.record_failure(0, &s);
        h.record_failure(0, &s);
        h.record_success();
        assert_eq!(h.admit(0), Admission::Allowed);
        assert_eq!(h.consecutive_failures, 0);
        assert_eq!(h.record_failure(0, &s), AfterFailure::RetryAt(0));
    }
}
