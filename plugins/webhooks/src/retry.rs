//! When to try a delivery again: exponential backoff with jitter, a receiver's `Retry-After` (seconds or an HTTP
//! date), and which answers are worth retrying at all.

/// What an attempt's result means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered; forget it.
    Delivered,
    /// 5xx, 429, a timeout or a connection failure: try again later (no earlier than the given delay, if the
    /// receiver named one).
    Retry {
        /// `Retry-After`, in milliseconds, when the receiver sent one.
        after_ms: Option<u64>,
    },
    /// Any other status (4xx but 429, and 1xx/3xx): the receiver will not take it; drop it.
    Drop,
}

/// Judge an HTTP status (and its `Retry-After`, if any).
pub fn judge(status: u16, retry_after: Option<&str>, now_s: u64) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        429 | 500..=599 => Verdict::Retry { after_ms: retry_after.and_then(|v| parse_retry_after(v, now_s)).map(|s| s.saturating_mul(1000)) },
        408 => Verdict::Retry { after_ms: None },
        _ => Verdict::Drop,
    }
}

/// The wait before attempt `attempt + 1`, after `attempt` failed ones (`attempt ≥ 1`):
/// `min(cap, base · 2^(attempt−1))` plus a jitter of up to a quarter of that (so receivers that failed together do
/// not all come back at the same instant), never more than `cap`; at least `retry_after_ms` when the receiver
/// asked for it (also capped). `jitter` is a random number in `[0, 1)`.
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, retry_after_ms: Option<u64>, jitter: f64) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(40)).min(cap_ms);
    let jitter = (exp as f64 * 0.25 * jitter.clamp(0.0, 1.0)) as u64;
    let wait = exp.saturating_add(jitter).min(cap_ms);
    match retry_after_ms {
        Some(r) => wait.max(r.min(cap_ms)),
        None => wait,
    }
}

/// `Retry-After` in seconds from `now_s`: a number of seconds, or an HTTP date (IMF-fixdate, e.g.
/// `Wed, 21 Oct 2015 07:28:00 GMT`; also the obsolete RFC 850 and asctime forms). A date in the past is 0.
pub fn parse_retry_after(value: &str, now_s: u64) -> Option<u64> {
    let value = value.trim();
    if let Ok(s) = value.parse::<u64>() {
        return Some(s);
    }
    parse_http_date(value).map(|t| t.saturating_sub(now_s))
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// An HTTP date (RFC 9110 section 5.6.7) as Unix seconds.
pub fn parse_http_date(value: &str) -> Option<u64> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [_, d, m, y, t, "GMT"] => (d.parse::<u64>().ok()?, *m, y.parse::<u64>().ok()?, *t),
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [_, dmy, t, "GMT"] => {
            let mut it = dmy.split('-');
            let (d, m, y) = (it.next()?, it.next()?, it.next()?);
            let y: u64 = y.parse().ok()?;
            (d.parse().ok()?, m, if y < 70 { 2000 + y } else if y < 100 { 1900 + y } else { y }, *t)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_, m, d, t, y] => (d.parse().ok()?, *m, y.parse().ok()?, *t),
        _ => return None,
    };
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || s > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm, for years ≥ 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// Unix seconds as an IMF-fixdate (`Tue, 14 Nov 2023 22:13:20 GMT`).
pub fn http_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // civil_from_days
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(judge(200, None, 0), Verdict::Delivered);
        assert_eq!(judge(204, None, 0), Verdict::Delivered);
        assert_eq!(judge(503, None, 0), Verdict::Retry { after_ms: None });
        assert_eq!(judge(429, Some("2"), 0), Verdict::Retry { after_ms: Some(2000) });
        assert_eq!(judge(500, Some("junk"), 0), Verdict::Retry { after_ms: None });
        assert_eq!(judge(400, Some("5"), 0), Verdict::Drop);
        assert_eq!(judge(404, None, 0), Verdict::Drop);
        assert_eq!(judge(410, None, 0), Verdict::Drop);
        assert_eq!(judge(301, None, 0), Verdict::Drop);
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        assert_eq!(backoff_ms(1, 1000, 60_000, None, 0.0), 1000);
        assert_eq!(backoff_ms(2, 1000, 60_000, None, 0.0), 2000);
        assert_eq!(backoff_ms(3, 1000, 60_000, None, 0.0), 4000);
        assert_eq!(backoff_ms(3, 1000, 60_000, None, 0.999), 4999);
        assert_eq!(backoff_ms(10, 1000, 60_000, None, 0.5), 60_000);
        assert_eq!(backoff_ms(200, 1000, 60_000, None, 0.5), 60_000);
        assert_eq!(backoff_ms(1, u64::MAX, u64::MAX, None, 1.0), u64::MAX);
        // Retry-After wins when longer, and is capped too.
        assert_eq!(backoff_ms(1, 1000, 60_000, Some(30_000), 0.0), 30_000);
        assert_eq!(backoff_ms(4, 1000, 60_000, Some(10), 0.0), 8000);
        assert_eq!(backoff_ms(1, 1000, 60_000, Some(3_600_000), 0.0), 60_000);
    }

    #[test]
    fn retry_after_forms() {
        let now = parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(now, 1_445_412_480);
        assert_eq!(parse_retry_after("120", now), Some(120));
        assert_eq!(parse_retry_after(" 0 ", now), Some(0));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(30));
        assert_eq!(parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now), Some(60));
        assert_eq!(parse_retry_after("Wed Oct 21 07:28:05 2015", now), Some(5));
        assert_eq!(parse_retry_after("Tue, 20 Oct 2015 07:28:00 GMT", now), Some(0));
        for bad in ["", "-1", "1.5", "soon", "Wed, 32 Oct 2015 07:28:00 GMT", "Wed, 21 Foo 2015 07:28:00 GMT", "Wed, 21 Oct 2015 25:00:00 GMT", "Wed, 21 Oct 2015 07:28 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn http_date_round_trip() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        for t in [0u64, 951_782_400, 1_445_412_480, 4_102_444_800] {
            assert_eq!(parse_http_date(&http_date(t)), Some(t));
        }
    }
}
