#![no_main]
//! What reaches the calendar plugin from outside: .ics files posted by anyone in a conversation, the CalDAV
//! server's answers (multistatus XML with calendar data, events to answer), and `/meet` phrases. None may panic;
//! whatever parses must serialise to text that parses to the same thing.
use calendar::event::{Answer, PartStat, Person, apply_answer, view_events};
use calendar::{caldav, ical, when};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(parsed) = ical::parse(&text) {
        let written = ical::serialize(&parsed);
        let again = ical::parse(&written).expect("a serialisation parses");
        assert_eq!(parsed, again, "round trip");
        for cal in &parsed {
            for view in view_events(cal, &jiff::tz::TimeZone::UTC, "imfree.invalid") {
                let _ = view.when(&jiff::tz::TimeZone::UTC);
                let _ = view.attendee_list();
            }
        }
        let bob = Person { account: "bob".into() };
        if let Ok(Some((changed, _))) = apply_answer(&text, &bob, "imfree.invalid", Answer::Set(PartStat::Accepted)) {
            ical::parse(&changed).expect("an answered event parses");
        }
    }
    for cal in caldav::calendar_data(&text, 8) {
        let _ = ical::parse(&cal);
    }
    let now = jiff::Timestamp::from_second(1_796_198_400).unwrap().to_zoned(jiff::tz::TimeZone::UTC);
    let limits = when::MeetingLimits { default_minutes: 30, max_minutes: 1440, max_attendees: 50 };
    if let Ok(m) = when::parse_meeting(&text, &now, limits) {
        assert!(m.start > now && m.end > m.start && !m.title.is_empty());
    }
    let _ = caldav::resource_name(&text);
});
