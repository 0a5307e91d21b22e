//! The bundled calendar plugin (embedded in the binary under test) through real processes: a relay running the
//! `calendar` bot against a real radicale on loopback, real clients in a group with the bot. `/meet` creates the
//! event (read back from radicale directly), the invitation card reaches the group, a member's reaction on it
//! changes their PARTSTAT on the server, and `/agenda` answers the one who asked.
//!
//! Reminders at the right time are shown under a manual clock in host/plugin-host/tests/it/calendar.rs.

use std::path::PathBuf;

use serde_json::Value;

use crate::common::*;
use crate::radicale::{DAV_PASSWORD, DAV_USER, Radicale, line_with};

const CALENDAR: &str = "/alice/calendar/";

fn from_calendar(messages: &[Value]) -> Vec<&Value> {
    messages.iter().filter(|m| m["from"] == "calendar").collect()
}

fn body(m: &Value) -> &str {
    m["body"].as_str().unwrap_or_default()
}

struct Setup {
    dir: tempfile::TempDir,
    relay: RelayProc,
    dav: Radicale,
}

impl Setup {
    fn start() -> Setup {
        let dav = Radicale::start();
        dav.make_calendar(CALENDAR);
        let dir = tempdir();
        let config = bot_config(
            dir.path(),
            &format!(
                r#"# No path: the calendar plugin bundled in the binary under test, with its own manifest.
[plugins.calendar]
grants = {{ kv = true, messaging = true, timers = true, files = true, http-outbound = ["{origin}"], http-allow-private = true }}
limits = {{ cpu-ms-per-call = 10000, wall-ms-per-call = 30000 }}

[plugins.calendar.settings]
calendar-url = "{origin}{CALENDAR}"
username = "{DAV_USER}"
password = "{DAV_PASSWORD}"
timezone = "Europe/Berlin"
"#,
                origin = dav.origin(),
            ),
        );
        let relay = RelayProc::start(&dir.path().join("relay"), Some(&config));
        wait_until("the calendar bot to start", || relay.log().contains("bot running"));
        Setup { dir, relay, dav }
    }

    fn user(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        register(&self.relay, &home, name, &format!("{name}-password-1"));
        home
    }

    /// alice and bob registered, and a group of alice's with bob and the calendar bot in it.
    fn group(&self) -> (PathBuf, PathBuf, String) {
        let (alice, bob) = (self.user("alice"), self.user("bob"));
        let g = ok(&alice, &["group", "create", "planning"]).trim().to_owned();
        ok(&alice, &["group", "add", &g, "bob"]);
        ok(&alice, &["group", "add", &g, "calendar"]);
        (alice, bob, g)
    }
}

#[test]
fn meet_invites_the_group_and_a_reaction_answers_on_the_caldav_server() {
    let s = Setup::start();
    let (alice, bob, g) = s.group();

    ok(&alice, &["send", &g, "/meet tomorrow 10:00 for 45m Quarterly review with @bob"]);
    let got = recv_until(&alice, "the command's answer", |m| from_calendar(m).iter().any(|a| body(a).starts_with("Created")));
    let answer = from_calendar(&got).into_iter().find(|a| body(a).starts_with("Created")).unwrap().clone();
    assert!(body(&answer).contains("10:00–10:45 (Europe/Berlin)"), "{answer}");
    assert!(answer.get("group").is_none(), "the answer goes to alice alone: {answer}");

    // On the server, read by the test itself.
    let objects = s.dav.objects(CALENDAR);
    assert_eq!(objects.len(), 1, "{objects:?}");
    let ics = &objects[0].2;
    assert!(line_with(ics, "SUMMARY:", &["Quarterly review"]).is_some(), "{ics}");
    assert!(line_with(ics, "ORGANIZER", &["mailto:alice@imfree.invalid"]).is_some(), "{ics}");
    assert!(line_with(ics, "ATTENDEE", &["mailto:bob@imfree.invalid", "PARTSTAT=NEEDS-ACTION"]).is_some(), "{ics}");

    // The invitation card reaches bob in the group; his 👍 on it is his answer.
    let is_card = |m: &Value| m["from"] == "calendar" && m["mime"] == "application/vnd.imfree.card+json";
    let at_bob = recv_until(&bob, "the invitation card", |m| m.iter().any(is_card));
    let card = at_bob.iter().find(|m| is_card(m)).unwrap();
    let card_body: Value = serde_json::from_str(body(card)).unwrap();
    assert_eq!(card_body["title"], "📅 Quarterly review");
    assert_eq!(card["group"].as_str().map(|id| format!("group:{id}")), Some(g.clone()), "{card}");
    let card_id = card["id"].as_str().unwrap().to_owned();
    ok(&bob, &["react", &card_id, "👍"]);
    let got = recv_until(&alice, "the answer in the group", |m| from_calendar(m).iter().any(|a| body(a).contains("bob accepted")));
    let reply = from_calendar(&got).into_iter().find(|a| body(a).contains("bob accepted")).unwrap().clone();
    assert_eq!(body(&reply), "bob accepted “Quarterly review”. Attendees: bob (accepted)");
    let ics = &s.dav.objects(CALENDAR)[0].2;
    assert!(line_with(ics, "ATTENDEE", &["mailto:bob@imfree.invalid", "PARTSTAT=ACCEPTED"]).is_some(), "{ics}");

    // Taken back: pending again on the server.
    ok(&bob, &["react", &card_id, "👍", "--remove"]);
    recv_until(&alice, "the withdrawal", |m| from_calendar(m).iter().any(|a| body(a).contains("bob has not answered yet")));
    let ics = &s.dav.objects(CALENDAR)[0].2;
    assert!(line_with(ics, "ATTENDEE", &["mailto:bob@imfree.invalid", "PARTSTAT=NEEDS-ACTION"]).is_some(), "{ics}");

    // The agenda, answered to bob alone.
    ok(&bob, &["send", &g, "/agenda week"]);
    let got = recv_until(&bob, "the agenda", |m| from_calendar(m).iter().any(|a| body(a).contains("Agenda")));
    let agenda = from_calendar(&got).into_iter().find(|a| body(a).contains("Agenda")).unwrap().clone();
    assert!(body(&agenda).contains("10:00–10:45 (Europe/Berlin) — Quarterly review"), "{agenda}");
    assert!(agenda.get("group").is_none(), "{agenda}");

    // The server's log names neither the CalDAV password nor what the meeting is about.
    let log = s.relay.log();
    assert!(log.contains("calendar"), "the bot logged something");
    assert!(!log.contains(DAV_PASSWORD) && !log.contains("Quarterly review"), "{log}");
}

#[test]
fn an_ics_file_posted_in_the_group_becomes_a_card_whose_button_adds_the_event() {
    let s = Setup::start();
    let (alice, bob, g) = s.group();

    // RFC 5545's meeting example, sent end to end encrypted as a file: the bot's client decrypts it for the plugin.
    let file = s.dir.path().join("planning.ics");
    std::fs::write(&file, include_str!("../../../../plugins/calendar/tests/rfc5545/3-mime-meeting.ics")).unwrap();
    ok(&alice, &["file", "send", &g, file.to_str().unwrap()]);
    let is_card = |m: &Value| m["from"] == "calendar" && m["mime"] == "application/vnd.imfree.card+json";
    let at_bob = recv_until(&bob, "the event card", |m| m.iter().any(is_card));
    let card = at_bob.iter().find(|m| is_card(m)).unwrap();
    let card_body: Value = serde_json::from_str(body(card)).unwrap();
    assert_eq!(card_body["title"], "📅 Calendaring Interoperability Planning Meeting");
    assert_eq!(card_body["buttons"][0]["id"], "add");
    assert_eq!(card_body["buttons"][0]["label"], "Add to calendar");
    let fields = card_body["fields"].to_string();
    assert!(fields.contains("Mon 24 Mar 1997, 13:30–22:00 (Europe/Berlin)"), "{fields}");
    assert!(fields.contains("LDB Lobby"), "{fields}");
    assert!(s.dav.objects(CALENDAR).is_empty(), "nothing is added before the press");

    let card_id = card["id"].as_str().unwrap().to_owned();
    ok(&bob, &["press", &card_id, "add"]);
    let got = recv_until(&alice, "the confirmation", |m| from_calendar(m).iter().any(|a| body(a).contains("to the calendar")));
    assert!(from_calendar(&got).iter().any(|a| body(a) == "bob added “Calendaring Interoperability Planning Meeting” to the calendar."), "{got:?}");
    let objects = s.dav.objects(CALENDAR);
    assert_eq!(objects.len(), 1);
    // Named by its UID (radicale lists the `@` percent-encoded).
    assert!(objects[0].0.ends_with("/uid3%40example.com.ics"), "{}", objects[0].0);
    assert!(line_with(&objects[0].2, "SUMMARY:", &["Calendaring Interoperability Planning Meeting"]).is_some());
    assert!(line_with(&objects[0].2, "ATTACH", &["ftp://example.com/pub/conf/bkgrnd.ps"]).is_some(), "{}", objects[0].2);
    assert!(line_with(&objects[0].2, "METHOD", &[]).is_none(), "a calendar resource carries no METHOD");
}
