//! The `/meet` phrase: `<when> <title> [with @users]`, read in the user's time zone.
//!
//! `<when>` is one of
//! - `in 2h`, `in 90m`, `in 1h30m`, `in 2 hours` (from now);
//! - `[today|tomorrow|mon…sun|YYYY-MM-DD] [at] HH:MM` (also `9am`, `3:30pm`, `noon`); a weekday is the next one
//!   (today if that time is still ahead); a time alone is today, or tomorrow once it has passed;
//!
//! optionally followed by `for 45m` (the length; otherwise the default). Pure: the caller gives "now".

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Zoned};

/// A meeting read from a `/meet` phrase.
#[derive(Debug, Clone, PartialEq)]
pub struct MeetingRequest {
    /// Start, in the user's time zone.
    pub start: Zoned,
    /// End (after `start`).
    pub end: Zoned,
    /// The title (not empty).
    pub title: String,
    /// Account ids after `with` (without `@`), deduplicated, in order.
    pub attendees: Vec<String>,
}

/// Limits for [`parse_meeting`].
#[derive(Debug, Clone, Copy)]
pub struct MeetingLimits {
    /// Length when no `for` is given.
    pub default_minutes: i64,
    /// Longest `for`.
    pub max_minutes: i64,
    /// Most names after `with`.
    pub max_attendees: usize,
}

/// Parse `/meet` arguments at `now` (whose time zone is the user's).
pub fn parse_meeting(args: &str, now: &Zoned, limits: MeetingLimits) -> Result<MeetingRequest, String> {
    let tokens: Vec<&str> = args.split_whitespace().collect();
    let mut i = 0;
    let start = if tokens.first().is_some_and(|t| t.eq_ignore_ascii_case("in")) {
        let (minutes, used) = duration_at(&tokens[1..])
            .ok_or("after `in` give a duration such as `2h`, `45m` or `1h30m`")?;
        i = 1 + used;
        if minutes <= 0 || minutes > 366 * 24 * 60 {
            return Err("`in` takes a duration between 1 minute and a year".into());
        }
        now.checked_add(SignedDuration::from_mins(minutes)).map_err(|e| e.to_string())?
    } else {
        let today = now.date();
        let mut date = None;
        let mut weekday = None;
        if let Some(t) = tokens.first() {
            let lower = t.to_ascii_lowercase();
            if lower == "today" {
                date = Some(today);
            } else if lower == "tomorrow" {
                date = Some(today.tomorrow().map_err(|e| e.to_string())?);
            } else if let Some(w) = parse_weekday(&lower) {
                weekday = Some(w);
            } else if let Some(d) = parse_iso_date(t) {
                date = Some(d?);
            }
            if date.is_some() || weekday.is_some() {
                i = 1;
            }
        }
        if tokens.get(i).is_some_and(|t| t.eq_ignore_ascii_case("at")) {
            i += 1;
        }
        let time = tokens
            .get(i)
            .and_then(|t| parse_time(t))
            .ok_or("give a time such as `10:00`, `9am` or `3:30pm` (e.g. `/meet tomorrow 10:00 Standup`)")?;
        i += 1;
        let at = |d: Date| d.to_datetime(time).to_zoned(now.time_zone().clone()).map_err(|e| e.to_string());
        match (date, weekday) {
            (Some(d), _) => at(d)?,
            (None, Some(w)) => {
                let ahead = (w.to_monday_zero_offset() - today.weekday().to_monday_zero_offset()).rem_euclid(7);
                let mut candidate = at(add_days(today, ahead as i64)?)?;
                if candidate <= *now {
                    candidate = at(add_days(today, ahead as i64 + 7)?)?;
                }
                candidate
            }
            (None, None) => {
                let candidate = at(today)?;
                if candidate <= *now { at(add_days(today, 1)?)? } else { candidate }
            }
        }
    };
    if start <= *now {
        return Err(format!("{} is in the past", start.strftime("%Y-%m-%d %H:%M")));
    }
    let mut minutes = limits.default_minutes;
    if tokens.get(i).is_some_and(|t| t.eq_ignore_ascii_case("for")) {
        let (m, used) = duration_at(&tokens[i + 1..]).ok_or("after `for` give a length such as `45m` or `1h30m`")?;
        minutes = m;
        i += 1 + used;
    }
    if minutes <= 0 || minutes > limits.max_minutes {
        return Err(format!("a meeting lasts between 1 and {} minutes", limits.max_minutes));
    }
    let end = start.checked_add(SignedDuration::from_mins(minutes)).map_err(|e| e.to_string())?;

    let rest = &tokens[i..];
    let with = rest.iter().rposition(|t| t.eq_ignore_ascii_case("with"));
    let (title_tokens, names) = match with {
        Some(w) if rest[w + 1..].iter().any(|t| t.starts_with('@')) => (&rest[..w], &rest[w + 1..]),
        _ => (rest, &rest[rest.len()..]),
    };
    let title = title_tokens.join(" ");
    if title.is_empty() {
        return Err("give the meeting a title, e.g. `/meet tomorrow 10:00 Standup with @bob`".into());
    }
    let mut attendees: Vec<String> = Vec::new();
    for name in names {
        let name = name.trim_matches(|c: char| c == ',' || c == ';');
        if name.is_empty() || name.eq_ignore_ascii_case("and") {
            continue;
        }
        let user = name.strip_prefix('@').ok_or_else(|| format!("`{name}`: name the people to invite as @user"))?;
        if !valid_account(user) {
            return Err(format!("`@{user}` is not an account name"));
        }
        if !attendees.iter().any(|a| a == user) {
            attendees.push(user.to_owned());
        }
    }
    if attendees.len() > limits.max_attendees {
        return Err(format!("at most {} people can be invited at once", limits.max_attendees));
    }
    Ok(MeetingRequest {
        start,
        end,
        title,
        attendees,
    })
}

/// Account names as the relay allows them: lower-case letters, digits, `.`, `-`, `_`.
pub fn valid_account(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

fn add_days(date: Date, days: i64) -> Result<Date, String> {
    date.checked_add(Span::new().days(days)).map_err(|e| e.to_string())
}

fn parse_weekday(t: &str) -> Option<Weekday> {
    const NAMES: [(&str, Weekday); 7] = [
        ("monday", Weekday::Monday),
        ("tuesday", Weekday::Tuesday),
        ("wednesday", Weekday::Wednesday),
        ("thursday", Weekday::Thursday),
        ("friday", Weekday::Friday),
        ("saturday", Weekday::Saturday),
        ("sunday", Weekday::Sunday),
    ];
    if t.len() < 3 {
        return None;
    }
    NAMES.iter().find(|(n, _)| n.starts_with(t)).map(|(_, w)| *w)
}

/// `YYYY-MM-DD`: `None` if it does not look like one, `Some(Err)` if it does but is no date.
fn parse_iso_date(t: &str) -> Option<Result<Date, String>> {
    let b = t.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |s: &str| s.parse::<i16>().ok();
    let (y, m, d) = (num(&t[..4])?, num(&t[5..7])?, num(&t[8..])?);
    Some(Date::new(y, m as i8, d as i8).map_err(|_| format!("{t} is not a date")))
}

/// `14:30`, `9:05`, `9am`, `3pm`, `3:30pm`, `noon`, `midnight`.
pub fn parse_time(t: &str) -> Option<Time> {
    let lower = t.to_ascii_lowercase();
    match lower.as_str() {
        "noon" => return Time::new(12, 0, 0, 0).ok(),
        "midnight" => return Time::new(0, 0, 0, 0).ok(),
        _ => {}
    }
    let (clock, meridiem) = if let Some(c) = lower.strip_suffix("am") {
        (c, Some(false))
    } else if let Some(c) = lower.strip_suffix("pm") {
        (c, Some(true))
    } else {
        (lower.as_str(), None)
    };
    let (h, m) = match clock.split_once(':') {
        Some((h, m)) if m.len() == 2 => (h, m),
        Some(_) => return None,
        None if meridiem.is_some() => (clock, "00"),
        None => return None,
    };
    if h.is_empty() || h.len() > 2 || !h.bytes().all(|c| c.is_ascii_digit()) || !m.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut hour: i8 = h.parse().ok()?;
    let minute: i8 = m.parse().ok()?;
    if let Some(pm) = meridiem {
        if !(1..=12).contains(&hour) {
            return None;
        }
        hour = match (hour, pm) {
            (12, false) => 0,
            (12, true) => 12,
            (h, true) => h + 12,
            (h, false) => h,
        };
    }
    Time::new(hour, minute, 0, 0).ok()
}

/// A duration at the start of `tokens`: `2h`, `45m`, `1h30m`, `90min`, `2 hours`, `1d`. Returns minutes and the
/// tokens used.
pub fn duration_at(tokens: &[&str]) -> Option<(i64, usize)> {
    let first = tokens.first()?.to_ascii_lowercase();
    if let Some(m) = parse_compact_duration(&first) {
        return Some((m, 1));
    }
    // "2 hours", "30 minutes"
    let n: i64 = first.parse().ok()?;
    let unit = tokens.get(1)?.to_ascii_lowercase();
    let per = unit_minutes(unit.trim_end_matches([',', '.']))?;
    Some((n.checked_mul(per)?, 2))
}

fn unit_minutes(unit: &str) -> Option<i64> {
    match unit {
        "m" | "min" | "mins" | "minute" | "minutes" => Some(1),
        "h" | "hr" | "hrs" | "hour" | "hours" => Some(60),
        "d" | "day" | "days" => Some(24 * 60),
        _ => None,
    }
}

fn parse_compact_duration(t: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = t;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let per = unit_minutes(&rest[..letters])?;
        rest = &rest[letters..];
        total = total.checked_add(n.checked_mul(per)?)?;
        any = true;
    }
    any.then_some(total)
}

/// A time zone by IANA name (`Europe/Berlin`, `UTC`).
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name.trim()).map_err(|_| format!("`{}` is not a time zone I know (e.g. Europe/Berlin, UTC)", name.trim()))
}

/// `Fri 04 Dec 2026, 14:30–15:15 (Europe/Berlin)`; the end's date is shown when it differs.
pub fn describe_span(start: &Zoned, end: &Zoned) -> String {
    let end_text = if start.date() == end.date() {
        end.strftime("%H:%M").to_string()
    } else {
        end.strftime("%a %d %b %Y, %H:%M").to_string()
    };
    format!(
        "{}–{} ({})",
        start.strftime("%a %d %b %Y, %H:%M"),
        end_text,
        start.time_zone().iana_name().unwrap_or("UTC")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: MeetingLimits = MeetingLimits {
        default_minutes: 30,
        max_minutes: 24 * 60,
        max_attendees: 10,
    };

    /// Wednesday 2 December 2026, 09:15 in Berlin.
    fn now() -> Zoned {
        jiff::civil::date(2026, 12, 2).at(9, 15, 0, 0).to_zoned(time_zone("Europe/Berlin").unwrap()).unwrap()
    }

    fn meet(args: &str) -> MeetingRequest {
        parse_meeting(args, &now(), LIMITS).unwrap_or_else(|e| panic!("{args}: {e}"))
    }

    fn local(m: &Zoned) -> String {
        m.strftime("%Y-%m-%d %H:%M").to_string()
    }

    #[test]
    fn phrases_from_the_issue() {
        let m = meet("tomorrow 10:00 Design review with @bob @carol");
        assert_eq!((local(&m.start), local(&m.end)), ("2026-12-03 10:00".into(), "2026-12-03 10:30".into()));
        assert_eq!(m.title, "Design review");
        assert_eq!(m.attendees, vec!["bob", "carol"]);
        let m = meet("fri 14:30 for 45m Retro");
        assert_eq!((local(&m.start), local(&m.end)), ("2026-12-04 14:30".into(), "2026-12-04 15:15".into()));
        assert_eq!(m.attendees, Vec::<String>::new());
        let m = meet("2026-12-10 09:00 Planning");
        assert_eq!((local(&m.start), m.title.as_str()), ("2026-12-10 09:00".into(), "Planning"));
        assert_eq!(local(&meet("in 2h Call").start), "2026-12-02 11:15");
    }

    #[test]
    fn absolute_and_relative() {
        assert!(parse_meeting("2026-12-01 09:00 Past", &now(), LIMITS).unwrap_err().contains("past"));
        let m = meet("2026-12-24 18:00 for 2h Dinner");
        assert_eq!(local(&m.end), "2026-12-24 20:00");
        let m = meet("in 2h Call");
        assert_eq!(local(&m.start), "2026-12-02 11:15");
        let m = meet("in 1h30m Call");
        assert_eq!(local(&m.start), "2026-12-02 10:45");
        let m = meet("in 2 hours Call with @dave, and @erin");
        assert_eq!(local(&m.start), "2026-12-02 11:15");
        assert_eq!(m.attendees, vec!["dave", "erin"]);
    }

    #[test]
    fn weekdays_and_bare_times() {
        // Wednesday 09:15: "wed 09:00" is next week, "wed 10:00" today, "9:00" tomorrow, "3pm" today.
        assert_eq!(local(&meet("wed 09:00 x").start), "2026-12-09 09:00");
        assert_eq!(local(&meet("wednesday at 10:00 x").start), "2026-12-02 10:00");
        assert_eq!(local(&meet("9:00 x").start), "2026-12-03 09:00");
        assert_eq!(local(&meet("3pm x").start), "2026-12-02 15:00");
        assert_eq!(local(&meet("mon 12am x").start), "2026-12-07 00:00");
        assert_eq!(local(&meet("today noon x").start), "2026-12-02 12:00");
    }

    #[test]
    fn time_zones_and_dst() {
        let m = meet("2026-12-24 18:00 x");
        assert_eq!(m.start.timestamp().to_string(), "2026-12-24T17:00:00Z");
        // 29 March 2026: Berlin springs forward at 02:00; 02:30 does not exist and moves forward.
        let march = jiff::civil::date(2026, 3, 28).at(12, 0, 0, 0).to_zoned(time_zone("Europe/Berlin").unwrap()).unwrap();
        let m = parse_meeting("tomorrow 02:30 x", &march, LIMITS).unwrap();
        assert_eq!(m.start.timestamp().to_string(), "2026-03-29T01:30:00Z");
        assert!(time_zone("Mars/Olympus").is_err());
        assert!(time_zone("America/New_York").is_ok());
    }

    #[test]
    fn bad_phrases_say_what_to_write() {
        for bad in [
            "",
            "tomorrow",
            "tomorrow 25:00 x",
            "tomorrow 10:60 x",
            "tomorrow 10:00",
            "2026-02-30 10:00 x",
            "in x Call",
            "in 0m Call",
            "tomorrow 10:00 for 0m x",
            "tomorrow 10:00 for 3d x",
            "tomorrow 10:00 x with @Bob!",
            "tomorrow 10:00 x with @a bob",
            "13pm x",
        ] {
            assert!(parse_meeting(bad, &now(), LIMITS).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..11).map(|n| format!("@u{n}")).collect();
        assert!(parse_meeting(&format!("in 1h x with {}", many.join(" ")), &now(), LIMITS).is_err());
    }

    #[test]
    fn with_without_names_is_part_of_the_title() {
        assert_eq!(meet("in 1h Coffee with milk").title, "Coffee with milk");
    }

    #[test]
    fn spans_are_described_in_the_zone() {
        let m = meet("fri 14:30 for 45m Retro");
        assert_eq!(describe_span(&m.start, &m.end), "Fri 04 Dec 2026, 14:30–15:15 (Europe/Berlin)");
    }
}
