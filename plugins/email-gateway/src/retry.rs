//! When to try a deferred mail again: exponential backoff with jitter.

/// The wait before attempt `attempt + 1`, after `attempt` failed ones (`attempt ≥ 1`):
/// `min(cap, base · 2^(attempt−1))` plus a jitter of up to a quarter of that, never more than `cap`.
/// `jitter` is a number in `[0, 1)`.
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, jitter: f64) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(40)).min(cap_ms);
    let jitter = (exp as f64 * 0.25 * jitter.clamp(0.0, 1.0)) as u64;
    exp.saturating_add(jitter).min(cap_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        assert_eq!(backoff_ms(1, 1000, 60_000, 0.0), 1000);
        assert_eq!(backoff_ms(2, 1000, 60_000, 0.0), 2000);
        assert_eq!(backoff_ms(3, 1000, 60_000, 0.999), 4999);
        assert_eq!(backoff_ms(10, 1000, 60_000, 0.5), 60_000);
        assert_eq!(backoff_ms(500, u64::MAX, u64::MAX, 1.0), u64::MAX);
    }
}
