//! Abuse limits: token-bucket rates, live-connection caps and login lockout back-off.
//!
//! Owns the arithmetic and bookkeeping only. It takes `now` as a parameter everywhere instead of reading the
//! clock, so callers (and tests) control time; it must not log, sleep or know what is being limited.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Tokens added per second (may be fractional, e.g. 0.1 for one every ten seconds).
    pub per_second: f64,
    /// Bucket capacity: how many events may happen back to back. Treated as at least 1, so a zero in a
    /// configuration file cannot silently lock everyone out.
    pub burst: u32,
}

impl Rate {
    fn capacity(&self) -> f64 {
        f64::from(self.burst.max(1))
    }

    /// Refill rate, with nonsense (negative, NaN) treated as "never refills".
    fn refill_per_second(&self) -> f64 {
        if self.per_second.is_finite() && self.per_second > 0.0 {
            self.per_second
        } else {
            0.0
        }
    }
}

/// A token bucket owned by one party (for example one connection's frame rate); not shared, so no lock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate`, as of `now`.
    pub fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate.capacity(),
            last: now,
        }
    }

    /// Takes one token if available; otherwise returns how long until one will be.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let per_second = self.rate.refill_per_second();
        if per_second == 0.0 {
            return Err(Duration::MAX);
        }
        Err(Duration::try_from_secs_f64((1.0 - self.tokens) / per_second).unwrap_or(Duration::MAX))
    }

    /// Whether the bucket would be full at `now`, i.e. forgetting it changes nothing.
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate.refill_per_second() >= self.rate.capacity()
    }

    fn refill(&mut self, now: Instant) {
        // A `now` earlier than the last call (callers sampling the clock on different threads) adds nothing
        // rather than panicking or moving `last` backwards.
        if now > self.last {
            let elapsed = now.duration_since(self.last).as_secs_f64();
            self.tokens =
                (self.tokens + elapsed * self.rate.refill_per_second()).min(self.rate.capacity());
            self.last = now;
        }
    }
}

/// Calls between sweeps of idle keys when the map is small; with a larger map the next sweep waits for as many
/// calls as there were keys left after the last one, so sweeping costs amortised O(1) per call and the map is at
/// most about twice the number of recently active keys.
const SWEEP_EVERY: usize = 1024;

/// Token buckets per key (account, IP address…), shared between tasks.
///
/// Keys whose bucket has refilled completely are forgotten during periodic sweeps, since a full bucket is the
/// same as no bucket. The map therefore holds only keys active within roughly `burst / per_second` seconds.
#[derive(Debug)]
pub struct KeyedRateLimiter<K> {
    rate: Rate,
    state: Mutex<KeyedState<K>>,
}

#[derive(Debug)]
struct KeyedState<K> {
    buckets: HashMap<K, TokenBucket>,
    calls_until_sweep: usize,
}

impl<K: Eq + Hash> KeyedState<K> {
    fn sweep(&mut self, now: Instant) {
        self.buckets.retain(|_, bucket| !bucket.is_full(now));
        self.calls_until_sweep = SWEEP_EVERY.max(self.buckets.len());
    }
}

impl<K: Eq + Hash + Clone> KeyedRateLimiter<K> {
    /// A limiter giving every key its own bucket at `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            state: Mutex::new(KeyedState {
                buckets: HashMap::new(),
                calls_until_sweep: SWEEP_EVERY,
            }),
        }
    }

    /// Takes one token from `key`'s bucket; on refusal returns how long until the next token.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut state = lock(&self.state);
        state.calls_until_sweep = state.calls_until_sweep.saturating_sub(1);
        if state.calls_until_sweep == 0 {
            state.sweep(now);
        }
        let rate = self.rate;
        if let Some(bucket) = state.buckets.get_mut(key) {
            return bucket.try_take(now);
        }
        let mut bucket = TokenBucket::new(rate, now);
        let result = bucket.try_take(now);
        state.buckets.insert(key.clone(), bucket);
        result
    }

    /// Number of keys currently tracked.
    pub fn len(&self) -> usize {
        lock(&self.state).buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every key whose bucket is full at `now`; sweeps also happen on their own inside [`Self::check`].
    pub fn sweep(&self, now: Instant) {
        lock(&self.state).sweep(now);
    }
}

/// Counts live connections per key (account, IP address…) and caps them.
#[derive(Debug)]
pub struct ConnectionLimiter<K> {
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone + Send + 'static> ConnectionLimiter<K> {
    /// An empty limiter; wrap it in an `Arc` to hand out guards.
    pub fn new() -> Self {
        Self {
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Registers one more connection for `key` if it has fewer than `max`; the slot is released when the
    /// returned guard is dropped.
    pub fn try_acquire(self: &Arc<Self>, key: K, max: usize) -> Option<ConnectionGuard<K>> {
        let mut counts = lock(&self.counts);
        let count = counts.get(&key).copied().unwrap_or(0);
        if count >= max {
            return None;
        }
        counts.insert(key.clone(), count + 1);
        drop(counts);
        Some(ConnectionGuard {
            limiter: Arc::clone(self),
            key: Some(key),
        })
    }

    /// Live connections for `key`.
    pub fn count(&self, key: &K) -> usize {
        lock(&self.counts).get(key).copied().unwrap_or(0)
    }

    /// Number of keys with at least one live connection.
    pub fn keys(&self) -> usize {
        lock(&self.counts).len()
    }

    fn release(&self, key: &K) {
        let mut counts = lock(&self.counts);
        if let Some(count) = counts.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(key);
            }
        }
    }
}

impl<K: Eq + Hash + Clone + Send + 'static> Default for ConnectionLimiter<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// One live connection's slot in a [`ConnectionLimiter`]; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionGuard<K: Eq + Hash + Clone + Send + 'static> {
    limiter: Arc<ConnectionLimiter<K>>,
    key: Option<K>,
}

impl<K: Eq + Hash + Clone + Send + 'static> ConnectionGuard<K> {
    /// The key this slot is counted under.
    pub fn key(&self) -> Option<&K> {
        self.key.as_ref()
    }
}

impl<K: Eq + Hash + Clone + Send + 'static> Drop for ConnectionGuard<K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.limiter.release(&key);
        }
    }
}

/// Exponential back-off after consecutive failed logins.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutPolicy {
    /// Failures allowed before any delay applies (typos happen).
    pub free_attempts: u32,
    /// Delay after the first failure beyond the free ones, in milliseconds; doubles with each further failure.
    pub base_delay_ms: u64,
    /// Ceiling on the delay, in milliseconds, so a legitimate user is never locked out for good.
    pub max_delay_ms: u64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            free_attempts: 5,
            base_delay_ms: 1000,
            max_delay_ms: 900_000,
        }
    }
}

impl LockoutPolicy {
    /// How long the account must wait before the next attempt, or `None` while failures are within the free
    /// allowance: `base * 2^(failures - free - 1)`, capped at `max_delay_ms`.
    pub fn delay_after(&self, consecutive_failures: i64) -> Option<Duration> {
        let over = consecutive_failures.checked_sub(i64::from(self.free_attempts))?;
        if over <= 0 {
            return None;
        }
        let exponent = u32::try_from(over - 1).unwrap_or(u32::MAX);
        let factor = 1u64.checked_shl(exponent).unwrap_or(u64::MAX);
        let delay_ms = self
            .base_delay_ms
            .saturating_mul(factor)
            .min(self.max_delay_ms);
        Some(Duration::from_millis(delay_ms))
    }
}

/// Locks `mutex`, ignoring poisoning: every critical section here leaves the map consistent even if a panic
/// interrupts it, and refusing all connections after one panic would be worse.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_burst_then_refill() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(
            Rate {
                per_second: 2.0,
                burst: 3,
            },
            t0,
        );
        for _ in 0..3 {
            assert_eq!(bucket.try_take(t0), Ok(()));
        }
        let wait = bucket.try_take(t0).expect_err("empty");
        assert_eq!(wait, ms(500));
        // Half a token after 250 ms: still refused, with the remaining wait.
        let wait = bucket.try_take(t0 + ms(250)).expect_err("half a token");
        assert_eq!(wait, ms(250));
        assert_eq!(bucket.try_take(t0 + ms(500)), Ok(()));
        assert!(bucket.try_take(t0 + ms(500)).is_err());
        // A long idle period refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        assert!(bucket.is_full(later));
        for _ in 0..3 {
            assert_eq!(bucket.try_take(later), Ok(()));
        }
        assert!(bucket.try_take(later).is_err());
    }

    #[test]
    fn bucket_tolerates_odd_rates_and_time() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut zero = TokenBucket::new(
            Rate {
                per_second: 0.0,
                burst: 0,
            },
            t0,
        );
        assert_eq!(zero.try_take(t0), Ok(())); // burst 0 behaves as 1
        assert_eq!(
            zero.try_take(t0 + Duration::from_secs(1000)),
            Err(Duration::MAX)
        );
        let mut nan = TokenBucket::new(
            Rate {
                per_second: f64::NAN,
                burst: 1,
            },
            t0,
        );
        assert_eq!(nan.try_take(t0), Ok(()));
        assert_eq!(nan.try_take(t0), Err(Duration::MAX));
        let mut slow = TokenBucket::new(
            Rate {
                per_second: 1e-300,
                burst: 1,
            },
            t0,
        );
        assert_eq!(slow.try_take(t0), Ok(()));
        assert_eq!(slow.try_take(t0), Err(Duration::MAX));
        // Time going backwards neither panics nor refills.
        let mut bucket = TokenBucket::new(
            Rate {
                per_second: 1.0,
                burst: 1,
            },
            t0,
        );
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert!(bucket.try_take(t0 - Duration::from_secs(5)).is_err());
        assert_eq!(bucket.try_take(t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn keyed_limiter_separates_keys() {
        let t0 = Instant::now();
        let limiter = KeyedRateLimiter::new(Rate {
            per_second: 1.0,
            burst: 2,
        });
        assert!(limiter.check(&"alice", t0).is_ok());
        assert!(limiter.check(&"alice", t0).is_ok());
        assert_eq!(limiter.check(&"alice", t0), Err(Duration::from_secs(1)));
        assert!(limiter.check(&"bob", t0).is_ok());
        assert_eq!(limiter.len(), 2);
        assert!(limiter.check(&"alice", t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn keyed_limiter_forgets_idle_keys() {
        let t0 = Instant::now();
        let limiter = KeyedRateLimiter::new(Rate {
            per_second: 1.0,
            burst: 5,
        });
        for i in 0..5000u32 {
            let _ = limiter.check(&i, t0);
        }
        // All 5000 keys are within their refill window, so all are still tracked.
        assert_eq!(limiter.len(), 5000);
        // After the buckets have refilled (1 s for one token), the next sweep drops them all.
        let later = t0 + Duration::from_secs(2);
        for _ in 0..5000 {
            let _ = limiter.check(&u32::MAX, later);
        }
        assert_eq!(limiter.len(), 1);
        // Many distinct keys spread over time never accumulate beyond the active window.
        for i in 0..100_000u32 {
            let _ = limiter.check(&i, later + ms(u64::from(i)));
        }
        assert!(limiter.len() < 5000, "{}", limiter.len());
        limiter.sweep(later + Duration::from_secs(200));
        assert!(limiter.is_empty());
    }

    #[test]
    fn keyed_limiter_keeps_limited_keys_across_sweeps() {
        let t0 = Instant::now();
        let limiter = KeyedRateLimiter::new(Rate {
            per_second: 0.001,
            burst: 1,
        });
        let attacker = u32::MAX;
        assert!(limiter.check(&attacker, t0).is_ok());
        for i in 0..3000u32 {
            let _ = limiter.check(&i, t0 + Duration::from_secs(1));
        }
        // The attacker's bucket was empty during every sweep, so it is still refused.
        assert!(
            limiter
                .check(&attacker, t0 + Duration::from_secs(2))
                .is_err()
        );
    }

    #[test]
    fn connection_limiter_counts_and_releases() {
        let limiter = Arc::new(ConnectionLimiter::new());
        let a1 = limiter.try_acquire("10.0.0.1", 2).expect("first");
        let a2 = limiter.try_acquire("10.0.0.1", 2).expect("second");
        assert!(limiter.try_acquire("10.0.0.1", 2).is_none());
        let b = limiter.try_acquire("10.0.0.2", 2).expect("other key");
        assert_eq!(limiter.count(&"10.0.0.1"), 2);
        assert_eq!(a1.key(), Some(&"10.0.0.1"));
        drop(a1);
        assert_eq!(limiter.count(&"10.0.0.1"), 1);
        let a3 = limiter.try_acquire("10.0.0.1", 2).expect("slot freed");
        drop((a2, a3, b));
        assert_eq!(limiter.count(&"10.0.0.1"), 0);
        assert_eq!(limiter.keys(), 0, "zero entries are removed");
        assert!(limiter.try_acquire("x", 0).is_none());
    }

    #[test]
    fn connection_guard_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let limiter = Arc::new(ConnectionLimiter::<String>::new());
        let guard = limiter.try_acquire("k".to_owned(), 1).expect("slot");
        assert_send(&guard);
    }

    #[test]
    fn lockout_backoff() {
        let policy = LockoutPolicy::default();
        for n in [-3, 0, 1, 5] {
            assert_eq!(policy.delay_after(n), None, "{n}");
        }
        assert_eq!(policy.delay_after(6), Some(ms(1000)));
        assert_eq!(policy.delay_after(7), Some(ms(2000)));
        assert_eq!(policy.delay_after(8), Some(ms(4000)));
        assert_eq!(policy.delay_after(15), Some(ms(512_000)));
        assert_eq!(policy.delay_after(16), Some(ms(900_000)));
        assert_eq!(policy.delay_after(100), Some(ms(900_000)));
        assert_eq!(policy.delay_after(i64::MAX), Some(ms(900_000)));
        assert_eq!(policy.delay_after(i64::MIN), None);
        let none_free = LockoutPolicy {
            free_attempts: 0,
            base_delay_ms: 10,
            max_delay_ms: 50,
        };
        assert_eq!(none_free.delay_after(1), Some(ms(10)));
        assert_eq!(none_free.delay_after(4), Some(ms(50)));
    }

    #[test]
    fn config_shapes() {
        let rate: Rate = serde_json::from_str(r#"{"per_second": 0.5, "burst": 10}"#).expect("rate");
        assert_eq!(
            rate,
            Rate {
                per_second: 0.5,
                burst: 10
            }
        );
        assert!(serde_json::from_str::<Rate>(r#"{"per_second": 1, "burst": 1, "x": 1}"#).is_err());
        let policy: LockoutPolicy =
            serde_json::from_str(r#"{"free_attempts": 3}"#).expect("policy");
        assert_eq!((policy.free_attempts, policy.base_delay_ms), (3, 1000));
    }
}
