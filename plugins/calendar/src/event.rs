//! Events as the plugin writes and reads them: the VEVENT `/meet` creates, what a card or the agenda shows of any
//! VEVENT (from a CalDAV server or a posted .ics file), and an attendee's answer (PARTSTAT) written into a
//! calendar object without touching anything else in it.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};

use crate::ical::{self, Component, Property};
use crate::when::describe_span;

/// The PRODID the plugin writes.
pub const PRODID: &str = "-//imfree//calendar plugin//EN";

/// Someone in an event: an imfree account written as `mailto:<account>@<address-domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Account id.
    pub account: String,
}

impl Person {
    /// `mailto:` address under `domain`.
    pub fn address(&self, domain: &str) -> String {
        format!("mailto:{}@{}", self.account, domain)
    }
}

/// What `/meet` creates.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// UID (unique; also the resource name).
    pub uid: &'a str,
    /// Creation time.
    pub stamp: Timestamp,
    /// Start and end.
    pub start: &'a Zoned,
    /// End.
    pub end: &'a Zoned,
    /// Title.
    pub title: &'a str,
    /// Who asked for it.
    pub organizer: Person,
    /// Who is invited (PARTSTAT=NEEDS-ACTION).
    pub attendees: Vec<Person>,
    /// Domain of the `mailto:` addresses.
    pub domain: &'a str,
}

fn utc(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// The VCALENDAR text of a new event. Times are written in UTC (no VTIMEZONE needed); cards show them in the
/// reader's zone.
pub fn build_event(e: &NewEvent<'_>) -> String {
    let mut cal = Component::new("VCALENDAR");
    cal.push(Property::new("VERSION", "2.0"));
    cal.push(Property::new("PRODID", PRODID));
    cal.push(Property::new("CALSCALE", "GREGORIAN"));
    let mut ev = Component::new("VEVENT");
    ev.push(Property::new("UID", e.uid));
    ev.push(Property::new("DTSTAMP", &utc(e.stamp)));
    ev.push(Property::new("DTSTART", &utc(e.start.timestamp())));
    ev.push(Property::new("DTEND", &utc(e.end.timestamp())));
    ev.push(Property::new("SUMMARY", &ical::escape_text(e.title)));
    ev.push(Property::new("ORGANIZER", &e.organizer.address(e.domain)).with_param("CN", &e.organizer.account));
    for a in &e.attendees {
        ev.push(
            Property::new("ATTENDEE", &a.address(e.domain))
                .with_param("CN", &a.account)
                .with_param("ROLE", "REQ-PARTICIPANT")
                .with_param("PARTSTAT", "NEEDS-ACTION")
                .with_param("RSVP", "TRUE"),
        );
    }
    cal.components.push(ev);
    ical::serialize(&[cal])
}

/// An attendee's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartStat {
    /// Not answered (or answer taken back).
    NeedsAction,
    /// Coming.
    Accepted,
    /// Not coming.
    Declined,
}

impl PartStat {
    /// The iCalendar value.
    pub fn as_ical(self) -> &'static str {
        match self {
            PartStat::NeedsAction => "NEEDS-ACTION",
            PartStat::Accepted => "ACCEPTED",
            PartStat::Declined => "DECLINED",
        }
    }
    fn from_ical(v: &str) -> Option<Self> {
        match v.to_ascii_uppercase().as_str() {
            "NEEDS-ACTION" => Some(PartStat::NeedsAction),
            "ACCEPTED" => Some(PartStat::Accepted),
            "DECLINED" => Some(PartStat::Declined),
            _ => None,
        }
    }
    /// Reactions that answer: 👍 ✅ accept, 👎 ❌ decline (skin tones and variation selectors ignored).
    pub fn from_emoji(emoji: &str) -> Option<Self> {
        let base: String = emoji
            .chars()
            .filter(|c| !matches!(*c as u32, 0xFE0E | 0xFE0F | 0x1F3FB..=0x1F3FF))
            .collect();
        match base.as_str() {
            "👍" | "✅" | "✔" => Some(PartStat::Accepted),
            "👎" | "❌" | "✖" => Some(PartStat::Declined),
            _ => None,
        }
    }
    /// `accepted`, `declined`, `pending`.
    pub fn word(self) -> &'static str {
        match self {
            PartStat::NeedsAction => "pending",
            PartStat::Accepted => "accepted",
            PartStat::Declined => "declined",
        }
    }
}

/// What a reaction asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Set this answer.
    Set(PartStat),
    /// The reaction for this answer was taken back: back to NEEDS-ACTION, unless the attendee has since given
    /// another answer.
    Withdraw(PartStat),
}

/// Write `person`'s answer into every VEVENT of the calendar object `text` (the master and any overrides),
/// adding them as an attendee if they were not invited. Returns the new text and the resulting answer, or
/// `Ok(None)` when nothing changes.
pub fn apply_answer(text: &str, person: &Person, domain: &str, answer: Answer) -> Result<Option<(String, PartStat)>, String> {
    let mut all = ical::parse(text).map_err(|e| e.to_string())?;
    let address = person.address(domain);
    let mut changed = false;
    let mut result = None;
    let mut events = 0;
    for cal in all.iter_mut() {
        for ev in cal.components.iter_mut().filter(|c| c.name == "VEVENT") {
            events += 1;
            let existing = ev
                .properties
                .iter_mut()
                .find(|p| p.name == "ATTENDEE" && p.value.eq_ignore_ascii_case(&address));
            let current = existing
                .as_ref()
                .and_then(|p| p.param("PARTSTAT"))
                .and_then(PartStat::from_ical)
                .unwrap_or(PartStat::NeedsAction);
            let next = match answer {
                Answer::Set(p) => p,
                Answer::Withdraw(p) if p == current => PartStat::NeedsAction,
                Answer::Withdraw(_) => current,
            };
            result = Some(next);
            match existing {
                Some(p) if current != next || p.param("PARTSTAT").is_none() => {
                    p.set_param("PARTSTAT", next.as_ical());
                    changed = true;
                }
                Some(_) => {}
                None if next != PartStat::NeedsAction => {
                    ev.push(
                        Property::new("ATTENDEE", &address)
                            .with_param("CN", &person.account)
                            .with_param("PARTSTAT", next.as_ical()),
                    );
                    changed = true;
                }
                None => {}
            }
        }
    }
    if events == 0 {
        return Err("the calendar object holds no VEVENT".into());
    }
    Ok(match (changed, result) {
        (true, Some(p)) => Some((ical::serialize(&all), p)),
        _ => None,
    })
}

/// What a card or the agenda shows of a VEVENT.
#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    /// UID, if any.
    pub uid: Option<String>,
    /// Title (`(no title)` when missing).
    pub title: String,
    /// Start.
    pub start: Option<Zoned>,
    /// End (DTEND, or DTSTART + DURATION, or the start).
    pub end: Option<Zoned>,
    /// A date without a time.
    pub all_day: bool,
    /// Has RRULE or RDATE (the agenda shows the series' first occurrence, not each one).
    pub recurring: bool,
    /// LOCATION.
    pub location: Option<String>,
    /// Account or address of the organizer.
    pub organizer: Option<String>,
    /// Attendees with their answers.
    pub attendees: Vec<(String, PartStat)>,
}

impl EventView {
    /// The time span in `tz`, or `time unknown`.
    pub fn when(&self, tz: &TimeZone) -> String {
        match (&self.start, &self.end) {
            (Some(s), _) if self.all_day => s.with_time_zone(tz.clone()).strftime("%a %d %b %Y (all day)").to_string(),
            (Some(s), Some(e)) => describe_span(&s.with_time_zone(tz.clone()), &e.with_time_zone(tz.clone())),
            (Some(s), None) => describe_span(&s.with_time_zone(tz.clone()), &s.with_time_zone(tz.clone())),
            _ => "time unknown".into(),
        }
    }
    /// `alice (accepted), bob (pending)`, or `nobody invited`.
    pub fn attendee_list(&self) -> String {
        if self.attendees.is_empty() {
            return "nobody invited".into();
        }
        self.attendees.iter().map(|(n, p)| format!("{n} ({})", p.word())).collect::<Vec<_>>().join(", ")
    }
}

/// The name to show for a `mailto:` address: the account when it is one of ours, else CN, else the address.
fn display(p: &Property, domain: &str) -> String {
    let addr = p.value.strip_prefix("mailto:").or_else(|| p.value.strip_prefix("MAILTO:")).unwrap_or(&p.value);
    if let Some((local, d)) = addr.rsplit_once('@')
        && d.eq_ignore_ascii_case(domain)
    {
        return local.to_owned();
    }
    p.param("CN").map(str::to_owned).unwrap_or_else(|| addr.to_owned())
}

/// A DATE or DATE-TIME property as an instant. TZID names the zone (an IANA name; an unknown one is read in
/// `fallback`), a trailing `Z` is UTC, a floating time is read in `fallback`.
pub fn read_time(p: &Property, fallback: &TimeZone) -> Option<(Zoned, bool)> {
    let v = p.value.trim();
    let tz = match p.param("TZID") {
        Some(id) => TimeZone::get(id.trim_start_matches('/')).unwrap_or_else(|_| fallback.clone()),
        None => fallback.clone(),
    };
    let digits = |s: &str| s.len() >= 8 && s.bytes().take(8).all(|b| b.is_ascii_digit());
    if !digits(v) {
        return None;
    }
    let date = jiff::civil::Date::new(v[..4].parse().ok()?, v[4..6].parse().ok()?, v[6..8].parse().ok()?).ok()?;
    if v.len() == 8 {
        return Some((date.to_zoned(tz).ok()?, true));
    }
    let t = v.get(8..)?.strip_prefix('T')?;
    let (t, is_utc) = match t.strip_suffix(['Z', 'z']) {
        Some(t) => (t, true),
        None => (t, false),
    };
    if t.len() != 6 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let time = jiff::civil::Time::new(t[..2].parse().ok()?, t[2..4].parse().ok()?, t[4..6].parse::<i8>().ok()?.min(59), 0).ok()?;
    let dt = date.to_datetime(time);
    let zoned = if is_utc { dt.to_zoned(TimeZone::UTC).ok()? } else { dt.to_zoned(tz).ok()? };
    Some((zoned, false))
}

/// An iCalendar DURATION (`PT1H30M`, `P1D`, `-PT15M`, `P1W`) in seconds.
pub fn read_duration(v: &str) -> Option<i64> {
    let v = v.trim();
    let (sign, v) = match v.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, v.strip_prefix('+').unwrap_or(v)),
    };
    let v = v.strip_prefix('P')?;
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut in_time = false;
    let mut any = false;
    for c in v.chars() {
        match c {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' if number.len() < 9 => number.push(c),
            'W' | 'D' | 'H' | 'M' | 'S' => {
                let n: i64 = number.parse().ok()?;
                number.clear();
                let per = match (c, in_time) {
                    ('W', false) => 7 * 86_400,
                    ('D', false) => 86_400,
                    ('H', true) => 3600,
                    ('M', true) => 60,
                    ('S', true) => 1,
                    _ => return None,
                };
                total = total.checked_add(n.checked_mul(per)?)?;
                any = true;
            }
            _ => return None,
        }
    }
    (any && number.is_empty()).then_some(sign * total)
}

/// The VEVENTs of a calendar as views (times in their own zones; floating ones read in `tz`).
pub fn view_events(cal: &Component, tz: &TimeZone, domain: &str) -> Vec<EventView> {
    cal.components_named("VEVENT").map(|ev| view_event(ev, tz, domain)).collect()
}

fn view_event(ev: &Component, tz: &TimeZone, domain: &str) -> EventView {
    let start = ev.property("DTSTART").and_then(|p| read_time(p, tz));
    let all_day = start.as_ref().is_some_and(|(_, d)| *d);
    let start = start.map(|(z, _)| z);
    let end = ev
        .property("DTEND")
        .and_then(|p| read_time(p, tz))
        .map(|(z, _)| z)
        .or_else(|| {
            let secs = read_duration(ev.value("DURATION")?)?;
            start.as_ref()?.checked_add(SignedDuration::from_secs(secs)).ok()
        });
    EventView {
        uid: ev.value("UID").map(str::to_owned),
        title: ev
            .value("SUMMARY")
            .map(ical::unescape_text)
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "(no title)".into()),
        start,
        end,
        all_day,
        recurring: ev.property("RRULE").is_some() || ev.property("RDATE").is_some(),
        location: ev.value("LOCATION").map(ical::unescape_text).filter(|s| !s.trim().is_empty()),
        organizer: ev.property("ORGANIZER").map(|p| display(p, domain)),
        attendees: ev
            .properties_named("ATTENDEE")
            .map(|p| {
                let stat = p.param("PARTSTAT").and_then(PartStat::from_ical).unwrap_or(PartStat::NeedsAction);
                (display(p, domain), stat)
            })
            .collect(),
    }
}

/// A calendar holding one VEVENT of `cal` (the `index`th) with the VTIMEZONEs it may refer to, for adding that
/// event alone to a calendar collection (CalDAV allows one event — one UID — per resource).
pub fn single_event(cal: &Component, index: usize) -> Option<Component> {
    let ev = cal.components_named("VEVENT").nth(index)?.clone();
    let mut out = Component::new("VCALENDAR");
    out.properties = cal.properties.iter().filter(|p| p.name != "METHOD").cloned().collect();
    if out.property("VERSION").is_none() {
        out.push(Property::new("VERSION", "2.0"));
    }
    if out.property("PRODID").is_none() {
        out.push(Property::new("PRODID", PRODID));
    }
    out.components = cal.components_named("VTIMEZONE").cloned().collect();
    out.components.push(ev);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::when::time_zone;

    fn zoned(s: &str) -> Zoned {
        s.parse().unwrap()
    }

    fn sample() -> String {
        let start = zoned("2026-12-04T14:30[Europe/Berlin]");
        let end = zoned("2026-12-04T15:15[Europe/Berlin]");
        build_event(&NewEvent {
            uid: "abc@imfree",
            stamp: "2026-12-02T08:00:00Z".parse().unwrap(),
            start: &start,
            end: &end,
            title: "Retro, with cake; really",
            organizer: Person { account: "alice".into() },
            attendees: vec![Person { account: "bob".into() }, Person { account: "carol".into() }],
            domain: "example.org",
        })
    }

    #[test]
    fn a_new_event_has_what_rfc_5545_requires() {
        let text = sample();
        let cal = ical::parse_calendar(&text).unwrap();
        assert_eq!(cal.value("VERSION"), Some("2.0"));
        let ev = cal.components_named("VEVENT").next().unwrap();
        assert_eq!(ev.value("UID"), Some("abc@imfree"));
        assert_eq!(ev.value("DTSTAMP"), Some("20261202T080000Z"));
        assert_eq!(ev.value("DTSTART"), Some("20261204T133000Z"));
        assert_eq!(ev.value("DTEND"), Some("20261204T141500Z"));
        assert_eq!(ev.value("SUMMARY"), Some("Retro\\, with cake\\; really"));
        assert_eq!(ev.property("ORGANIZER").unwrap().value, "mailto:alice@example.org");
        let attendees: Vec<_> = ev.properties_named("ATTENDEE").collect();
        assert_eq!(attendees.len(), 2);
        assert_eq!(attendees[1].param("PARTSTAT"), Some("NEEDS-ACTION"));
        let view = &view_events(&cal, &TimeZone::UTC, "example.org")[0];
        assert_eq!(view.title, "Retro, with cake; really");
        assert_eq!(view.when(&time_zone("Europe/Berlin").unwrap()), "Fri 04 Dec 2026, 14:30–15:15 (Europe/Berlin)");
        assert_eq!(view.attendee_list(), "bob (pending), carol (pending)");
    }

    #[test]
    fn answers_change_only_the_partstat() {
        let text = sample();
        let bob = Person { account: "bob".into() };
        let (after, stat) = apply_answer(&text, &bob, "example.org", Answer::Set(PartStat::Accepted)).unwrap().unwrap();
        assert_eq!(stat, PartStat::Accepted);
        let before = ical::parse_calendar(&text).unwrap();
        let now = ical::parse_calendar(&after).unwrap();
        let b = &before.components[0].properties;
        let a = &now.components[0].properties;
        assert_eq!(a.len(), b.len());
        let diffs: Vec<_> = a.iter().zip(b).filter(|(x, y)| x != y).collect();
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].0.param("PARTSTAT"), Some("ACCEPTED"));
        // The same answer again changes nothing; taking back another answer changes nothing; taking this one back
        // returns to NEEDS-ACTION.
        assert_eq!(apply_answer(&after, &bob, "example.org", Answer::Set(PartStat::Accepted)).unwrap(), None);
        assert_eq!(apply_answer(&after, &bob, "example.org", Answer::Withdraw(PartStat::Declined)).unwrap(), None);
        let (back, stat) = apply_answer(&after, &bob, "example.org", Answer::Withdraw(PartStat::Accepted)).unwrap().unwrap();
        assert_eq!(stat, PartStat::NeedsAction);
        assert_eq!(ical::parse_calendar(&back).unwrap(), before);
        // Someone not invited who answers is added.
        let dave = Person { account: "dave".into() };
        let (added, _) = apply_answer(&text, &dave, "example.org", Answer::Set(PartStat::Declined)).unwrap().unwrap();
        let view = &view_events(&ical::parse_calendar(&added).unwrap(), &TimeZone::UTC, "example.org")[0];
        assert_eq!(view.attendee_list(), "bob (pending), carol (pending), dave (declined)");
        assert!(apply_answer("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", &dave, "x", Answer::Set(PartStat::Accepted)).is_err());
    }

    #[test]
    fn emoji_answers() {
        assert_eq!(PartStat::from_emoji("👍"), Some(PartStat::Accepted));
        assert_eq!(PartStat::from_emoji("👍🏽"), Some(PartStat::Accepted));
        assert_eq!(PartStat::from_emoji("✅"), Some(PartStat::Accepted));
        assert_eq!(PartStat::from_emoji("👎"), Some(PartStat::Declined));
        assert_eq!(PartStat::from_emoji("❌"), Some(PartStat::Declined));
        assert_eq!(PartStat::from_emoji("✔️"), Some(PartStat::Accepted));
        assert_eq!(PartStat::from_emoji("🎉"), None);
    }

    #[test]
    fn times_in_every_form() {
        let tz = time_zone("Europe/Berlin").unwrap();
        let p = |line: &str| ical::parse_line(line, 1).unwrap();
        let (z, day) = read_time(&p("DTSTART:20261204T133000Z"), &tz).unwrap();
        assert_eq!((z.timestamp().to_string(), day), ("2026-12-04T13:30:00Z".into(), false));
        let (z, _) = read_time(&p("DTSTART;TZID=America/New_York:19980312T083000"), &tz).unwrap();
        assert_eq!(z.timestamp().to_string(), "1998-03-12T13:30:00Z");
        let (z, _) = read_time(&p("DTSTART:20261204T133000"), &tz).unwrap();
        assert_eq!(z.timestamp().to_string(), "2026-12-04T12:30:00Z");
        let (_, day) = read_time(&p("DTSTART;VALUE=DATE:20261224"), &tz).unwrap();
        assert!(day);
        assert!(read_time(&p("DTSTART:2026"), &tz).is_none());
        assert!(read_time(&p("DTSTART:20261340T000000"), &tz).is_none());
        assert_eq!(read_duration("PT1H30M"), Some(5400));
        assert_eq!(read_duration("P1W"), Some(604_800));
        assert_eq!(read_duration("-PT15M"), Some(-900));
        assert_eq!(read_duration("P1DT2H"), Some(93_600));
        assert_eq!(read_duration("PT"), None);
        assert_eq!(read_duration("P1H"), None);
    }

    #[test]
    fn rfc_example_events_are_viewed() {
        let cal = ical::parse_calendar(include_str!("../tests/rfc5545/2-group-meeting.ics")).unwrap();
        let v = &view_events(&cal, &TimeZone::UTC, "imfree.invalid")[0];
        assert_eq!(v.title, "XYZ Project Review");
        assert_eq!(v.location.as_deref(), Some("1CP Conference Room 4350"));
        assert_eq!(v.organizer.as_deref(), Some("mrbig@example.com"));
        assert_eq!(v.when(&time_zone("America/New_York").unwrap()), "Thu 12 Mar 1998, 08:30–09:30 (America/New_York)");
        let one = single_event(&cal, 0).unwrap();
        assert_eq!(one.components.len(), 2);
        assert!(single_event(&cal, 1).is_none());
    }
}
