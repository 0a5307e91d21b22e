//! The bundled calendar plugin (plugins/calendar) in the real host against a real CalDAV server (radicale on
//! loopback), under a manual clock: events created by `/meet` and read back from radicale directly, answered by
//! reactions (PARTSTAT changed on the server), reminders that fire exactly when due — also after the plugin was
//! loaded again (a restart) — `/agenda`, and an .ics file shown as a card whose button adds the event.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use imfree_plugin_host::host::HostServices;
use imfree_plugin_host::*;

use crate::radicale::{DAV_PASSWORD, DAV_USER, Radicale, dav_request, line_with};
use crate::support::{RecordingSink, admin, guest};

/// 2026-12-02T08:00:00Z (a Wednesday; 09:00 in Berlin).
const NOW_MS: u64 = 1_796_198_400_000;
/// `/meet tomorrow 10:00` in Berlin starts at 2026-12-03T09:00:00Z; its reminder (10 minutes) is due at 08:50Z.
const START_MS: u64 = NOW_MS + 25 * 3_600_000;
const REMINDER_MS: u64 = START_MS - 10 * 60_000;
const CALENDAR: &str = "/alice/calendar/";

/// A file store holding the .ics files a test posted (message id -> name, bytes).
#[derive(Default)]
struct PostedFiles(Mutex<Vec<(String, String, Vec<u8>)>>);

#[async_trait]
impl FileStore for PostedFiles {
    async fn info(&self, _bot: &PluginIdentity, message_id: &str) -> Result<FileInfo, SinkError> {
        let files = self.0.lock().unwrap();
        let (id, name, data) = files
            .iter()
            .find(|(id, _, _)| id == message_id)
            .ok_or_else(|| SinkError::Invalid("no such file".into()))?;
        Ok(FileInfo {
            message_id: id.clone(),
            conversation: "c1".into(),
            sender: "bob".into(),
            name: name.clone(),
            content_type: "text/calendar".into(),
            size: data.len() as u64,
            voice: false,
            duration_ms: None,
            password_protected: false,
        })
    }
    async fn read(&self, _bot: &PluginIdentity, message_id: &str) -> Result<Vec<u8>, SinkError> {
        let files = self.0.lock().unwrap();
        files
            .iter()
            .find(|(id, _, _)| id == message_id)
            .map(|(_, _, d)| d.clone())
            .ok_or_else(|| SinkError::Invalid("no such file".into()))
    }
}

struct CalendarHost {
    host: PluginHost,
    sink: Arc<RecordingSink>,
    clock: Arc<ManualClock>,
    files: Arc<PostedFiles>,
    dav: Radicale,
}

fn manifest() -> PluginManifest {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/calendar/plugin.toml");
    PluginManifest::parse(&std::fs::read_to_string(&path).expect("plugins/calendar/plugin.toml")).expect("manifest")
}

fn config(dav: &Radicale) -> PluginConfig {
    config_for(&dav.origin())
}

/// The plugin's configuration with the CalDAV server at `origin`.
fn config_for(origin: &str) -> PluginConfig {
    config_with(origin, "")
}

/// The same with extra admin lines (e.g. limits).
fn config_with(origin: &str, extra: &str) -> PluginConfig {
    admin(&format!(
        r#"grants = {{ kv = true, messaging = true, timers = true, files = true, http-outbound = ["{origin}"], http-allow-private = true }}
settings = {{ calendar-url = "{origin}{CALENDAR}", username = "{DAV_USER}", password = "{DAV_PASSWORD}", timezone = "Europe/Berlin", reminder-minutes = 10 }}
{extra}"#,
    ))
}

async fn start() -> CalendarHost {
    let dav = Radicale::start();
    dav.make_calendar(CALENDAR);
    let sink = Arc::new(RecordingSink::default());
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let files = Arc::new(PostedFiles::default());
    let services = HostServices {
        messages: sink.clone(),
        kv: Arc::new(MemoryKv::new()),
        clock: clock.clone(),
        incidents: Arc::new(RecordingIncidents::new()),
        accounts: Arc::new(NoAccounts),
        conversations: Arc::new(NoConversations),
        files: files.clone(),
        mail: Arc::new(NoMail),
    };
    let options = HostOptions {
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")),
        min_timer_interval_ms: 10,
        ..HostOptions::default()
    };
    let host = PluginHost::new(options, services).expect("engine");
    host.load_bytes(manifest(), config(&dav), guest("calendar")).await.expect("calendar loads");
    CalendarHost {
        host,
        sink,
        clock,
        files,
        dav,
    }
}

impl CalendarHost {
    async fn command(&self, sender: &str, name: &str, args: &str) -> String {
        self.host
            .command(
                "calendar",
                Command {
                    name: name.into(),
                    args: args.into(),
                    conversation: "c1".into(),
                    sender: sender.into(),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("/{name} {args}: {e}"))
            .unwrap_or_default()
    }

    async fn react(&self, sender: &str, to: &str, emoji: &str, remove: bool) {
        let body = if remove {
            format!(r#"{{"to":"{to}","emoji":"{emoji}","remove":true}}"#)
        } else {
            format!(r#"{{"to":"{to}","emoji":"{emoji}"}}"#)
        };
        let failures = self
            .host
            .incoming_message(&Message {
                id: format!("r-{sender}-{emoji}-{remove}"),
                conversation: "c1".into(),
                sender: sender.into(),
                sent_at: NOW_MS,
                content_type: "application/vnd.imfree.reaction+json".into(),
                body,
                reply_to: None,
                mentions: vec![],
            })
            .await;
        assert!(failures.is_empty(), "{failures:?}");
    }

    /// The sink's message id of the `n`th thing sent that matches.
    fn id_of(&self, kind: &str, text_contains: &str) -> String {
        let sent = self.sink.sent();
        let i = sent
            .iter()
            .position(|s| s.kind == kind && s.text.contains(text_contains))
            .unwrap_or_else(|| panic!("no {kind} containing {text_contains:?} in {sent:?}"));
        format!("m{}", i + 1)
    }

    /// The one event in the calendar, as radicale has it.
    fn only_event(&self) -> String {
        let objects = self.dav.objects(CALENDAR);
        assert_eq!(objects.len(), 1, "{objects:?}");
        objects[0].2.clone()
    }

    fn reminders(&self) -> Vec<String> {
        self.sink.texts().into_iter().filter(|t| t.contains("starts in")).collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn meet_creates_the_event_and_reactions_answer_it_on_the_server() {
    let h = start().await;
    assert_eq!(h.command("alice", "meet", "tz Europe/Berlin").await, "Your time zone is now Europe/Berlin.");
    let answer = h.command("alice", "meet", "tomorrow 10:00 for 45m Design review with @bob @carol").await;
    assert_eq!(answer, "Created “Design review”, Thu 03 Dec 2026, 10:00–10:45 (Europe/Berlin).");

    // Read back from radicale itself.
    let ics = h.only_event();
    assert!(line_with(&ics, "SUMMARY:", &["Design review"]).is_some(), "{ics}");
    assert!(line_with(&ics, "DTSTART", &["20261203T090000Z"]).is_some(), "{ics}");
    assert!(line_with(&ics, "DTEND", &["20261203T094500Z"]).is_some(), "{ics}");
    assert!(line_with(&ics, "UID:", &["@imfree-calendar"]).is_some(), "{ics}");
    assert!(line_with(&ics, "DTSTAMP:", &["20261202T080000Z"]).is_some(), "{ics}");
    assert!(line_with(&ics, "ORGANIZER", &["mailto:alice@imfree.invalid"]).is_some(), "{ics}");
    for who in ["bob", "carol"] {
        let address = format!("mailto:{who}@imfree.invalid");
        assert!(line_with(&ics, "ATTENDEE", &[&address, "PARTSTAT=NEEDS-ACTION"]).is_some(), "{ics}");
    }

    // The invitation card.
    let card = h.id_of("card", "Design review");

    // bob accepts, carol declines: the server has it.
    h.react("bob", &card, "👍", false).await;
    h.react("carol", &card, "❌", false).await;
    let ics = h.only_event();
    assert!(line_with(&ics, "ATTENDEE", &["mailto:bob@", "PARTSTAT=ACCEPTED"]).is_some(), "{ics}");
    assert!(line_with(&ics, "ATTENDEE", &["mailto:carol@", "PARTSTAT=DECLINED"]).is_some(), "{ics}");
    let replies: Vec<String> = h.sink.sent().into_iter().filter(|s| s.kind == "reply").map(|s| s.text).collect();
    assert_eq!(
        replies,
        vec![
            format!("{card}: bob accepted “Design review”. Attendees: bob (accepted), carol (pending)"),
            format!("{card}: carol declined “Design review”. Attendees: bob (accepted), carol (declined)"),
        ]
    );

    // A reaction that is no answer, or on another message, changes nothing.
    h.react("bob", &card, "🎉", false).await;
    h.react("bob", "m999", "👎", false).await;
    // bob takes his 👍 back: NEEDS-ACTION again. Someone not invited who accepts is added.
    h.react("bob", &card, "👍", true).await;
    h.react("dave", &card, "✅", false).await;
    let ics = h.only_event();
    assert!(line_with(&ics, "ATTENDEE", &["mailto:bob@", "PARTSTAT=NEEDS-ACTION"]).is_some(), "{ics}");
    assert!(line_with(&ics, "ATTENDEE", &["mailto:dave@", "PARTSTAT=ACCEPTED"]).is_some(), "{ics}");
    assert_eq!(h.sink.sent().iter().filter(|s| s.kind == "reply").count(), 4);

    // The agenda lists it in the user's zone; another zone shows other hours.
    let today = h.command("alice", "agenda", "today").await;
    assert_eq!(today, "Nothing in the calendar today.");
    let week = h.command("alice", "agenda", "week").await;
    assert!(week.contains("Thu 03 Dec 2026, 10:00–10:45 (Europe/Berlin) — Design review"), "{week}");
    h.command("bob", "meet", "tz America/New_York").await;
    let week = h.command("bob", "agenda", "week").await;
    assert!(week.contains("Thu 03 Dec 2026, 04:00–04:45 (America/New_York) — Design review"), "{week}");

    // Bad input: a clear answer, nothing written.
    let bad = h.command("alice", "meet", "yesterday-ish Lunch").await;
    assert!(bad.starts_with("I could not read that: give a time"), "{bad}");
    assert!(h.command("alice", "meet", "tz Mars/Olympus").await.contains("not a time zone"));
    assert_eq!(h.dav.objects(CALENDAR).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn reminders_fire_when_due_and_survive_a_restart() {
    let h = start().await;
    h.command("alice", "meet", "tomorrow 10:00 Standup").await;
    h.command("alice", "meet", "tomorrow 11:00 Lunch").await;
    assert_eq!(h.dav.objects(CALENDAR).len(), 2);

    // One millisecond before the reminder: nothing.
    h.clock.advance(REMINDER_MS - 1 - NOW_MS);
    h.host.fire_due_timers().await;
    assert_eq!(h.reminders(), Vec::<String>::new());

    // A restart: timers are gone with the plugin; `init` arms them again from kv.
    assert!(h.host.unload("calendar"));
    h.host.load_bytes(manifest(), config(&h.dav), guest("calendar")).await.expect("loads again");
    h.host.fire_due_timers().await;
    assert_eq!(h.reminders(), Vec::<String>::new());

    // At the reminder time: exactly one, in the conversation, and only for the event that is due.
    h.clock.advance(1);
    h.host.fire_due_timers().await;
    assert_eq!(h.reminders(), vec!["⏰ “Standup” starts in 10 minutes (10:00 Europe/Berlin)."]);
    assert_eq!(h.sink.sent().last().map(|s| (s.kind, s.conversation.as_str())), Some(("post", "c1")));
    h.clock.advance(1000);
    h.host.fire_due_timers().await;
    assert_eq!(h.reminders().len(), 1);

    // The second one an hour later.
    h.clock.advance(3_600_000 - 1001);
    h.host.fire_due_timers().await;
    assert_eq!(h.reminders().len(), 1);
    h.clock.advance(1);
    h.host.fire_due_timers().await;
    assert_eq!(h.reminders().len(), 2);
    assert_eq!(h.reminders()[1], "⏰ “Lunch” starts in 10 minutes (11:00 Europe/Berlin).");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ics_file_becomes_a_card_that_adds_the_event() {
    let h = start().await;
    let ics = include_str!("../../../../plugins/calendar/tests/rfc5545/2-group-meeting.ics");
    h.files.0.lock().unwrap().push(("f1".into(), "review.ics".into(), ics.as_bytes().to_vec()));
    let failures = h
        .host
        .incoming_message(&Message {
            id: "f1".into(),
            conversation: "c1".into(),
            sender: "bob".into(),
            sent_at: NOW_MS,
            content_type: "application/vnd.imfree.file+json".into(),
            body: r#"{"id":"f1","name":"review.ics","size":1,"mime":"text/calendar"}"#.into(),
            reply_to: None,
            mentions: vec![],
        })
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(h.sink.texts(), vec!["📅 XYZ Project Review [add]"]);
    let card = h.id_of("card", "XYZ Project Review");

    let press = || Action {
        message_id: card.clone(),
        conversation: "c1".into(),
        button: "add".into(),
        user: "carol".into(),
    };
    h.host.action("calendar", press()).await.expect("action");
    let objects = h.dav.objects(CALENDAR);
    assert_eq!(objects.len(), 1);
    assert!(objects[0].0.ends_with("/guid-1.example.com.ics"), "{}", objects[0].0);
    assert!(line_with(&objects[0].2, "DTSTART", &["TZID=America/New_York", "19980312T083000"]).is_some());
    assert!(line_with(&objects[0].2, "TZID:America/New_York", &[]).is_some());
    assert_eq!(h.sink.texts()[1], format!("{card}: carol added “XYZ Project Review” to the calendar."));
    // Pressed again: already there, nothing overwritten.
    h.host.action("calendar", press()).await.expect("action");
    assert_eq!(h.sink.texts()[2], format!("{card}: “XYZ Project Review” is already in the calendar."));
    assert_eq!(h.dav.objects(CALENDAR).len(), 1);

    // A file that is no calendar gets a polite answer, not a trap.
    h.files.0.lock().unwrap().push(("f2".into(), "broken.ics".into(), b"BEGIN:VCALENDAR\r\nSUMMARY".to_vec()));
    let failures = h
        .host
        .incoming_message(&Message {
            id: "f2".into(),
            conversation: "c1".into(),
            sender: "bob".into(),
            sent_at: NOW_MS,
            content_type: "application/vnd.imfree.file+json".into(),
            body: "{}".into(),
            reply_to: None,
            mentions: vec![],
        })
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(h.sink.texts()[3].starts_with("f2: I could not read this calendar file"), "{:?}", h.sink.texts());
}

/// A loopback HTTP hop in front of radicale that passes every request on, except that after the first GET of an
/// event it changes that event on radicale (adds a LOCATION, as another calendar client would) before answering
/// with what it read: the plugin's `If-Match` PUT then meets a real 412 from radicale.
fn interposer(radicale_port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut edited = false;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut parts = request_line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
            let mut headers: Vec<(String, String)> = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            let length = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let passed: Vec<(&str, &str)> = headers
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "content-type" | "if-match" | "if-none-match" | "depth"))
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let answer = dav_request(radicale_port, &method, &path, &passed, &String::from_utf8_lossy(&body));
            if method == "GET" && !edited {
                edited = true;
                let changed = answer.body.replace("END:VEVENT", "LOCATION:Room 4\r\nEND:VEVENT");
                let put = dav_request(radicale_port, "PUT", &path, &[("Content-Type", "text/calendar")], &changed);
                assert!(put.status == 201 || put.status == 204, "the concurrent edit: {}", put.status);
            }
            let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\nContent-Length: {}\r\n", answer.status, answer.body.len());
            for (k, v) in &answer.headers {
                if matches!(k.as_str(), "etag" | "content-type") {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
            }
            out.push_str("\r\n");
            out.push_str(&answer.body);
            let _ = stream.write_all(out.as_bytes());
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_racing_another_edit_is_retried_on_412_and_keeps_both() {
    let h = start().await;
    h.command("alice", "meet", "tomorrow 10:00 Sync with @bob").await;
    let card = h.id_of("card", "Sync");
    // From now on the plugin reaches radicale through the interposer.
    let hop = interposer(h.dav.port);
    assert!(h.host.unload("calendar"));
    h.host
        .load_bytes(manifest(), config_for(&format!("http://127.0.0.1:{hop}")), guest("calendar"))
        .await
        .expect("loads again");
    h.react("bob", &card, "👍", false).await;
    let ics = h.only_event();
    assert!(line_with(&ics, "LOCATION:", &["Room 4"]).is_some(), "the other edit survives: {ics}");
    assert!(line_with(&ics, "ATTENDEE", &["mailto:bob@", "PARTSTAT=ACCEPTED"]).is_some(), "the answer is saved: {ics}");
    let replies: Vec<String> = h.sink.sent().into_iter().filter(|s| s.kind == "reply").map(|s| s.text).collect();
    assert_eq!(replies, vec![format!("{card}: bob accepted “Sync”. Attendees: bob (accepted)")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn more_pending_reminders_than_the_plugin_may_have_timers_all_fire() {
    let h = start().await;
    // Two live timers at most: one event each would leave the third unarmed.
    let tight = "limits = { cpu-ms-per-call = 10000, wall-ms-per-call = 20000, max-timers = 2 }";
    assert!(h.host.unload("calendar"));
    h.host.load_bytes(manifest(), config_with(&h.dav.origin(), tight), guest("calendar")).await.expect("loads");
    for (time, title) in [("10:00", "One"), ("10:05", "Two"), ("10:10", "Three")] {
        let answer = h.command("alice", "meet", &format!("tomorrow {time} {title}")).await;
        assert!(answer.starts_with("Created"), "{answer}");
    }
    assert_eq!(h.host.timers().count("calendar"), 1, "one timer for all reminders");
    for (step, expected) in [(0, 1), (5 * 60_000, 2), (5 * 60_000, 3)] {
        if step == 0 {
            h.clock.advance(REMINDER_MS - NOW_MS);
        } else {
            h.clock.advance(step);
        }
        h.host.fire_due_timers().await;
        assert_eq!(h.reminders().len(), expected, "{:?}", h.reminders());
    }
    assert_eq!(h.reminders()[2], "⏰ “Three” starts in 10 minutes (10:10 Europe/Berlin).");
}
