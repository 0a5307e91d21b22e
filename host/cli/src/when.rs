//! Times on the command line: what `--since` and `--until` accept, and how times are shown.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

/// A point in time as Unix milliseconds, from RFC 3339 (`2026-11-27T14:00:00Z`), a date (`2026-11-27`, midnight
/// UTC), or an age counted back from `now_ms` (`90m`, `24h`, `7d`).
pub(crate) fn parse_time(text: &str, now_ms: i64) -> anyhow::Result<i64> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(ms(t));
    }
    if let Ok(d) = Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Ok(ms(PrimitiveDateTime::new(d, time::Time::MIDNIGHT).assume_utc()));
    }
    if let Some((n, unit)) = text.char_indices().last().map(|(i, c)| (&text[..i], c)) {
        let scale = match unit {
            's' => Some(1_000),
            'm' => Some(60_000),
            'h' => Some(3_600_000),
            'd' => Some(86_400_000),
            _ => None,
        };
        if let (Some(scale), Ok(n)) = (scale, n.parse::<i64>())
            && n >= 0
        {
            return Ok(now_ms.saturating_sub(n.saturating_mul(scale)));
        }
    }
    anyhow::bail!("{text:?} is not a time: use RFC 3339 (2026-11-27T14:00:00Z), a date (2026-11-27), or an age (90m, 24h, 7d)")
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix milliseconds as RFC 3339 in UTC, to the second.
pub(crate) fn format_time(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z")).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_accepted_form() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("2026-11-27", now).unwrap(), 1_795_737_600_000);
        assert_eq!(parse_time("2026-11-27T01:00:00Z", now).unwrap(), 1_795_737_600_000 + 3_600_000);
        assert_eq!(parse_time("2026-11-27T02:00:00+01:00", now).unwrap(), 1_795_737_600_000 + 3_600_000);
        assert_eq!(parse_time("90m", now).unwrap(), now - 90 * 60_000);
        assert_eq!(parse_time("7d", now).unwrap(), now - 7 * 86_400_000);
        for bad in ["", "yesterday", "2026-13-01", "-5d", "5w", "d"] {
            assert!(parse_time(bad, now).is_err(), "{bad:?} accepted");
        }
        assert_eq!(format_time(1_795_737_600_000 + 3_600_000), "2026-11-27T01:00:00Z");
    }
}
