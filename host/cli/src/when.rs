//! Times on the command line: what `--since` and `--until` accept (for `search` and `admin audit` alike), and how
//! times are shown.

use imfree_client::search::{DateEdge, parse_date};
use time::OffsetDateTime;
use time::macros::format_description;

/// A point in time as Unix milliseconds, from RFC 3339 (`2026-11-27T14:00:00Z`), a date (`2026-11-27`: the UTC day's
/// first millisecond for a start, its last for an end; see [`parse_date`]), or an age counted back from `now_ms`
/// (`90m`, `24h`, `7d`).
pub(crate) fn parse_time(text: &str, now_ms: i64, edge: DateEdge) -> anyhow::Result<i64> {
    let text = text.trim();
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
    parse_date(text, edge).map_err(|_| {
        anyhow::anyhow!("{text:?} is not a time: use RFC 3339 (2026-11-27T14:00:00Z), a date (YYYY-MM-DD, a whole UTC day), or an age (90m, 24h, 7d)")
    })
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
        let day = 1_795_737_600_000;
        assert_eq!(parse_time("2026-11-27", now, DateEdge::Start).unwrap(), day);
        assert_eq!(parse_time("2026-11-27", now, DateEdge::End).unwrap(), day + 86_400_000 - 1, "a date ends with its day");
        assert_eq!(parse_time("2026-11-27T01:00:00Z", now, DateEdge::End).unwrap(), day + 3_600_000);
        assert_eq!(parse_time("2026-11-27T02:00:00+01:00", now, DateEdge::Start).unwrap(), day + 3_600_000);
        assert_eq!(parse_time("90m", now, DateEdge::Start).unwrap(), now - 90 * 60_000);
        assert_eq!(parse_time("7d", now, DateEdge::End).unwrap(), now - 7 * 86_400_000);
        for bad in ["", "yesterday", "2026-13-01", "-5d", "5w", "d"] {
            assert!(parse_time(bad, now, DateEdge::Start).is_err(), "{bad:?} accepted");
        }
        assert_eq!(format_time(day + 3_600_000), "2026-11-27T01:00:00Z");
    }
}
