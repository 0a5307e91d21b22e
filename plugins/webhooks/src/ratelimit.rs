//! A token bucket per receiver URL: `rate` requests per second on average, `burst` at once. Its state lives in
//! kv (the plugin may run in several instances, and a fresh instance after a restart must not forget it).

use serde::{Deserialize, Serialize};

/// The bucket of one URL.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Tokens left (fractional while refilling).
    pub tokens: f64,
    /// When `tokens` was last brought up to date (ms since the epoch).
    pub at_ms: u64,
}

impl Bucket {
    /// A full bucket.
    pub fn full(burst: u32, now_ms: u64) -> Self {
        Bucket { tokens: f64::from(burst.max(1)), at_ms: now_ms }
    }

    /// Take one token if there is one, after refilling for the time since the last call.
    pub fn try_take(&mut self, rate_per_s: f64, burst: u32, now_ms: u64) -> bool {
        let rate = if rate_per_s.is_finite() && rate_per_s > 0.0 { rate_per_s } else { 1.0 };
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst.max(1)));
        self.at_ms = self.at_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = Bucket::full(3, 0);
        assert!(b.try_take(1.0, 3, 0));
        assert!(b.try_take(1.0, 3, 0));
        assert!(b.try_take(1.0, 3, 0));
        assert!(!b.try_take(1.0, 3, 0));
        assert!(!b.try_take(1.0, 3, 500));
        assert!(b.try_take(1.0, 3, 1000));
        assert!(!b.try_take(1.0, 3, 1100));
        // Refill never exceeds the burst.
        assert!(b.try_take(1.0, 3, 100_000));
        assert!(b.try_take(1.0, 3, 100_000));
        assert!(b.try_take(1.0, 3, 100_000));
        assert!(!b.try_take(1.0, 3, 100_000));
        // A clock going backwards does not mint tokens; nonsense rates fall back to 1/s.
        assert!(!b.try_take(f64::NAN, 3, 50_000));
        assert!(b.try_take(-5.0, 3, 101_000));
    }
}
