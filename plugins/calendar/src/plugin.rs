//! The glue to the host (wasm32 only): settings, kv, timers, CalDAV requests through the host's HTTP, cards and
//! files. Decisions are made by the pure modules. Logs carry conversation and message ids, UIDs and HTTP statuses
//! — never titles, credentials or file contents.

// The exports behind `export_plugin!` use `unsafe` for the canonical ABI; the code written here does not.
#![allow(unsafe_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imfree_plugin_sdk::messaging::CardBuilder;
use imfree_plugin_sdk::types::{Action, ButtonStyle, Command, Message, TimerFired, FILE_MIME, REACTION_MIME};
use imfree_plugin_sdk::{HostErrorExt, Plugin, config, conversations, export_plugin, files, http, kv, log, messaging, timers};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::{Deserialize, Serialize};

use crate::caldav;
use crate::event::{self, Answer, EventView, NewEvent, PartStat, Person};
use crate::ical;
use crate::reminders::{self, Reminder};
use crate::when::{self, MeetingLimits};


/// The bot's account (bot-scope plugins run as an account named like the plugin).
const BOT: &str = "calendar";
/// kv prefixes: invitation cards by message id, reminders by resource name, .ics cards by message id, users' time zones.
const INVITE_PREFIX: &str = "invite/";
const REMINDER_PREFIX: &str = "reminder/";
const ICS_PREFIX: &str = "ics/";
const TZ_PREFIX: &str = "tz/";
/// The one timer that wakes for the earliest reminder, and the kv key holding its id.
const REMINDER_TIMER: &str = "reminders";
const REMINDER_TIMER_KEY: &str = "reminder-timer";
/// The "Add to calendar" button.
const ADD_BUTTON: &str = "add";
/// Events one .ics file is shown as at most (each its own card).
const MAX_CARDS_PER_FILE: usize = 5;

struct Settings {
    calendar_url: String,
    username: String,
    password: String,
    timezone: String,
    reminder_minutes: i64,
    default_minutes: i64,
    max_minutes: i64,
    max_attendees: usize,
    address_domain: String,
    max_ics_bytes: u64,
    max_agenda_events: usize,
    update_attempts: u32,
}

fn settings() -> Settings {
    Settings {
        calendar_url: config::get_or("calendar-url", "").trim().to_owned(),
        username: config::get_or("username", ""),
        password: config::get_or("password", ""),
        timezone: config::get_or("timezone", "UTC"),
        reminder_minutes: config::parsed::<i64>("reminder-minutes").unwrap_or(10).clamp(0, 7 * 24 * 60),
        default_minutes: config::parsed::<i64>("default-duration-minutes").unwrap_or(30).clamp(1, 7 * 24 * 60),
        max_minutes: config::parsed::<i64>("max-duration-minutes").unwrap_or(24 * 60).clamp(1, 366 * 24 * 60),
        max_attendees: config::parsed::<usize>("max-attendees").unwrap_or(50).max(1),
        address_domain: config::get_or("address-domain", "imfree.invalid"),
        max_ics_bytes: config::parsed::<u64>("max-ics-bytes").unwrap_or(262_144),
        max_agenda_events: config::parsed::<usize>("max-agenda-events").unwrap_or(50).max(1),
        update_attempts: config::parsed::<u32>("update-attempts").unwrap_or(3).clamp(1, 10),
    }
}

/// An invitation card (kv `invite/<card message id>`). The event is found by its resource name in the configured
/// collection, so a changed `calendar-url` (a server that moved) is followed.
#[derive(Serialize, Deserialize)]
struct Invite {
    uid: String,
    resource: String,
    conversation: String,
}

/// An event shown from an .ics file, waiting for "Add to calendar" (kv `ics/<card message id>`).
#[derive(Serialize, Deserialize)]
struct PendingIcs {
    calendar: String,
    conversation: String,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn now_in(tz: &TimeZone) -> Zoned {
    Timestamp::from_millisecond(now_ms()).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned(tz.clone())
}

fn default_zone(s: &Settings) -> TimeZone {
    when::time_zone(&s.timezone).unwrap_or_else(|e| {
        log::warn(&format!("setting timezone: {e}; using UTC"));
        TimeZone::UTC
    })
}

fn user_zone(s: &Settings, user: &str) -> TimeZone {
    match kv::get_string(&format!("{TZ_PREFIX}{user}")) {
        Ok(Some(name)) => when::time_zone(&name).unwrap_or_else(|_| default_zone(s)),
        _ => default_zone(s),
    }
}

fn random_hex(bytes: u64) -> String {
    imfree_plugin_sdk::random::hex(bytes as usize)
}

fn get_json<T: for<'de> Deserialize<'de>>(key: &str) -> Option<T> {
    kv::get(key).ok().flatten().and_then(|v| serde_json::from_slice(&v).ok())
}

fn set_json<T: Serialize>(key: &str, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    kv::set(key, &bytes).map_err(|e| e.describe())
}

/// One CalDAV request with the configured credentials.
fn dav(s: &Settings, method: &str, url: &str, extra: &[(&str, &str)], body: Option<&[u8]>) -> Result<http::Response, String> {
    let auth = caldav::basic_auth(&s.username, &s.password);
    let length = body.map(|b| b.len().to_string());
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    // A length, not chunked transfer: WSGI servers such as radicale's read only a declared length.
    if let Some(length) = &length {
        headers.push(("content-length", length));
    }
    if !s.username.is_empty() {
        headers.push(("authorization", &auth));
    }
    http::request(method, url, &headers, body).map_err(|e| format!("the calendar server could not be reached ({e})"))
}

fn status_problem(what: &str, r: &http::Response) -> String {
    match r.status {
        401 | 403 => format!("{what}: the calendar server refused the credentials ({})", r.status),
        404 => format!("{what}: the calendar collection does not exist (404); check calendar-url"),
        s => format!("{what}: the calendar server answered {s}"),
    }
}

fn require_url(s: &Settings) -> Result<(), String> {
    if s.calendar_url.is_empty() {
        Err("the calendar is not configured: the administrator must set calendar-url".into())
    } else {
        Ok(())
    }
}

/// Remind of `view` in `conversation`; `resource` (the event's resource name: bounded and safe, unlike a UID from
/// a posted file) names the reminder.
fn schedule_reminder(s: &Settings, resource: &str, conversation: &str, view: &EventView) {
    let Some(start) = &view.start else { return };
    let id = resource.trim_end_matches(".ics");
    let start_ms = start.timestamp().as_millisecond();
    let reminder = Reminder {
        at_ms: start_ms - s.reminder_minutes * 60_000,
        start_ms,
        conversation: conversation.to_owned(),
        title: view.title.clone(),
    };
    if let Err(e) = set_json(&format!("{REMINDER_PREFIX}{id}"), &reminder) {
        log::error(&format!("could not store the reminder for {id}: {e}"));
        return;
    }
    remind_due();
}

/// Post the reminders that are due, drop those whose event has started, and arm the one timer for the next
/// (replacing the previous one, so neither a fresh instance nor a new event adds a second).
fn remind_due() {
    let keys = kv::list_keys(REMINDER_PREFIX).unwrap_or_default();
    let stored: Vec<(String, Reminder)> = keys
        .iter()
        .filter_map(|k| Some((k.strip_prefix(REMINDER_PREFIX)?.to_owned(), get_json::<Reminder>(k)?)))
        .collect();
    let now = now_ms();
    let plan = reminders::plan(now, &stored);
    for id in &plan.expired {
        let _ = kv::delete(&format!("{REMINDER_PREFIX}{id}"));
    }
    for id in &plan.due {
        if let Some((_, r)) = stored.iter().find(|(k, _)| k == id) {
            post_reminder(id, r, now);
        }
        // Deleted even if posting failed: a reminder that comes late is worth less than none twice.
        let _ = kv::delete(&format!("{REMINDER_PREFIX}{id}"));
    }
    if let Ok(Some(old)) = kv::get_string(REMINDER_TIMER_KEY)
        && let Ok(old) = old.parse::<u64>()
    {
        let _ = timers::cancel(old);
    }
    let Some(next) = plan.next_at_ms else {
        let _ = kv::delete(REMINDER_TIMER_KEY);
        return;
    };
    match timers::once(REMINDER_TIMER, Duration::from_millis((next - now).max(0) as u64)) {
        Ok(id) => {
            let _ = kv::set_string(REMINDER_TIMER_KEY, &id.to_string());
        }
        Err(e) => log::warn(&format!("no reminder timer ({}); reminders wait for the next start", e.describe())),
    }
}

fn invitation_card(view: &EventView, tz: &TimeZone) -> imfree_plugin_sdk::types::Card {
    let mut card = CardBuilder::new(&format!("📅 {}", view.title))
        .text("React 👍 or ✅ to accept, 👎 or ❌ to decline.")
        .field("When", &view.when(tz));
    if let Some(o) = &view.organizer {
        card = card.field("Organizer", o);
    }
    card.field("Attendees", &view.attendee_list()).build()
}

fn meet(cmd: &Command) -> String {
    let s = settings();
    let args = cmd.args.trim();
    if args.is_empty() || args == "help" {
        return "Usage: `/meet <when> <title> [with @user …]`, e.g. `/meet tomorrow 10:00 Standup with @bob`, \
                `/meet fri 14:30 for 45m Retro`, `/meet in 2h Call`, `/meet 2026-12-01 09:00 Planning`. \
                `/meet tz Europe/Berlin` sets your time zone."
            .into();
    }
    if let Some(rest) = args.strip_prefix("tz").filter(|r| r.is_empty() || r.starts_with(' ')) {
        return set_zone(&s, &cmd.sender, rest.trim());
    }
    if let Err(e) = require_url(&s) {
        return e;
    }
    let tz = user_zone(&s, &cmd.sender);
    let limits = MeetingLimits {
        default_minutes: s.default_minutes,
        max_minutes: s.max_minutes,
        max_attendees: s.max_attendees,
    };
    let request = match when::parse_meeting(args, &now_in(&tz), limits) {
        Ok(r) => r,
        Err(e) => return format!("I could not read that: {e}."),
    };
    // Without `with`, everyone in the conversation is invited (but not the bot or the organizer).
    let attendees: Vec<String> = if request.attendees.is_empty() {
        conversations::members(&cmd.conversation)
            .map(|m| m.into_iter().map(|m| m.user).filter(|u| u != BOT && u != &cmd.sender).take(s.max_attendees).collect())
            .unwrap_or_default()
    } else {
        request.attendees.iter().filter(|u| **u != cmd.sender).cloned().collect()
    };
    let uid = format!("{}@imfree-calendar", random_hex(16));
    let text = event::build_event(&NewEvent {
        uid: &uid,
        stamp: Timestamp::from_millisecond(now_ms()).unwrap_or(Timestamp::UNIX_EPOCH),
        start: &request.start,
        end: &request.end,
        title: &request.title,
        organizer: Person { account: cmd.sender.clone() },
        attendees: attendees.iter().map(|a| Person { account: a.clone() }).collect(),
        domain: &s.address_domain,
    });
    let Some(resource) = caldav::resource_name(&uid) else {
        return "could not name the event".into();
    };
    let url = caldav::resource_url(&s.calendar_url, &resource);
    let created = dav(
        &s,
        "PUT",
        &url,
        &[("content-type", "text/calendar; charset=utf-8"), ("if-none-match", "*")],
        Some(text.as_bytes()),
    );
    match created {
        Ok(r) if r.is_success() => {}
        Ok(r) => {
            log::warn(&format!("creating event {uid}: status {}", r.status));
            return status_problem("The event was not created", &r);
        }
        Err(e) => return e,
    }
    log::info(&format!("event {uid} created for conversation {}", cmd.conversation));
    let Some(view) = ical::parse_calendar(&text)
        .ok()
        .and_then(|c| event::view_events(&c, &tz, &s.address_domain).into_iter().next())
    else {
        return "the event was created but could not be read back".into();
    };
    let conv_tz = default_zone(&s);
    match messaging::post_card(&cmd.conversation, &invitation_card(&view, &conv_tz)) {
        Ok(card_id) => {
            let invite = Invite {
                uid: uid.clone(),
                resource: resource.clone(),
                conversation: cmd.conversation.clone(),
            };
            if let Err(e) = set_json(&format!("{INVITE_PREFIX}{card_id}"), &invite) {
                log::error(&format!("could not store invitation {card_id}: {e}"));
            }
        }
        Err(e) => log::warn(&format!("could not post the invitation for {uid}: {}", e.describe())),
    }
    schedule_reminder(&s, &resource, &cmd.conversation, &view);
    format!("Created “{}”, {}.", view.title, view.when(&tz))
}

fn set_zone(s: &Settings, user: &str, name: &str) -> String {
    if name.is_empty() {
        let tz = user_zone(s, user);
        return format!("Your time zone is {}.", tz.iana_name().unwrap_or("UTC"));
    }
    match when::time_zone(name) {
        Ok(tz) => {
            let canonical = tz.iana_name().unwrap_or(name).to_owned();
            match kv::set_string(&format!("{TZ_PREFIX}{user}"), &canonical) {
                Ok(()) => format!("Your time zone is now {canonical}."),
                Err(e) => format!("could not store your time zone: {}", e.describe()),
            }
        }
        Err(e) => e,
    }
}

fn agenda(cmd: &Command) -> String {
    let s = settings();
    if let Err(e) = require_url(&s) {
        return e;
    }
    let days = match cmd.args.trim() {
        "" | "today" => 1,
        "week" => 7,
        other => return format!("`/agenda {other}`: use `/agenda today` or `/agenda week`."),
    };
    let tz = user_zone(&s, &cmd.sender);
    let Ok(start) = now_in(&tz).start_of_day() else {
        return "could not work out today's date".into();
    };
    let Ok(end) = start.checked_add(jiff::Span::new().days(days)) else {
        return "could not work out the range".into();
    };
    let body = caldav::calendar_query(start.timestamp(), end.timestamp());
    let response = match dav(
        &s,
        "REPORT",
        &s.calendar_url,
        &[("content-type", "application/xml; charset=utf-8"), ("depth", "1")],
        Some(body.as_bytes()),
    ) {
        Ok(r) if r.status == 207 || r.is_success() => r,
        Ok(r) => return status_problem("The agenda could not be read", &r),
        Err(e) => return e,
    };
    let mut events: Vec<EventView> = caldav::calendar_data(&response.text(), s.max_agenda_events * 4)
        .iter()
        .filter_map(|text| ical::parse_calendar(text).ok())
        .flat_map(|cal| event::view_events(&cal, &tz, &s.address_domain))
        .filter(|v| {
            // Recurring series are listed by the server when an occurrence overlaps; their own DTSTART may be
            // earlier.
            v.recurring
                || match (&v.start, &v.end) {
                    (Some(a), Some(b)) => (*a < end && *b > start) || (a == b && *a >= start && *a < end),
                    (Some(a), None) => *a >= start && *a < end,
                    _ => false,
                }
        })
        .collect();
    events.sort_by(|a, b| a.start.cmp(&b.start));
    let label = if days == 1 { "today" } else { "the next 7 days" };
    if events.is_empty() {
        return format!("Nothing in the calendar {label}.");
    }
    let total = events.len();
    let mut out = format!("**Agenda for {label}** ({})\n", tz.iana_name().unwrap_or("UTC"));
    for v in events.iter().take(s.max_agenda_events) {
        let repeat = if v.recurring { " (repeats)" } else { "" };
        let place = v.location.as_deref().map(|l| format!(" · {l}")).unwrap_or_default();
        out.push_str(&format!("- {} — {}{repeat}{place}\n", v.when(&tz), v.title));
    }
    if total > s.max_agenda_events {
        out.push_str(&format!("… and {} more.\n", total - s.max_agenda_events));
    }
    out
}

#[derive(Deserialize)]
struct Reaction {
    to: String,
    emoji: String,
    #[serde(default)]
    remove: bool,
}

fn on_reaction(msg: &Message) {
    let Ok(reaction) = serde_json::from_str::<Reaction>(&msg.body) else {
        return;
    };
    let Some(stat) = PartStat::from_emoji(&reaction.emoji) else {
        return;
    };
    let Some(invite) = get_json::<Invite>(&format!("{INVITE_PREFIX}{}", reaction.to)) else {
        return;
    };
    let answer = if reaction.remove { Answer::Withdraw(stat) } else { Answer::Set(stat) };
    let s = settings();
    match answer_on_server(&s, &invite, &msg.sender, answer) {
        Ok(Some((stat, view))) => {
            log::info(&format!("event {}: an attendee answered {}", invite.uid, stat.as_ical()));
            let text = format!("{} {} “{}”. Attendees: {}", msg.sender, answer_words(stat), view.title, view.attendee_list());
            if let Err(e) = messaging::reply(&invite.conversation, &reaction.to, &text) {
                log::warn(&format!("could not reply on invitation {}: {}", reaction.to, e.describe()));
            }
        }
        Ok(None) => {}
        Err(e) => {
            log::warn(&format!("event {}: the answer was not saved: {e}", invite.uid));
            let _ = messaging::reply(&invite.conversation, &reaction.to, &format!("Your answer was not saved: {e}"));
        }
    }
}

fn answer_words(stat: PartStat) -> &'static str {
    match stat {
        PartStat::Accepted => "accepted",
        PartStat::Declined => "declined",
        PartStat::NeedsAction => "has not answered yet",
    }
}

/// GET the event, write the answer, PUT it back with `If-Match`; a 412 (someone else changed it) starts over.
fn answer_on_server(s: &Settings, invite: &Invite, user: &str, answer: Answer) -> Result<Option<(PartStat, EventView)>, String> {
    let person = Person { account: user.to_owned() };
    let url = caldav::resource_url(&s.calendar_url, &invite.resource);
    for _ in 0..s.update_attempts {
        let current = dav(s, "GET", &url, &[], None)?;
        if !current.is_success() {
            return Err(status_problem("the event could not be read", &current));
        }
        let etag = current.header("etag").map(str::to_owned);
        let text = current.text();
        let Some((updated, stat)) = event::apply_answer(&text, &person, &s.address_domain, answer)? else {
            return Ok(None);
        };
        let mut headers = vec![("content-type", "text/calendar; charset=utf-8")];
        if let Some(tag) = etag.as_deref() {
            headers.push(("if-match", tag));
        }
        let put = dav(s, "PUT", &url, &headers, Some(updated.as_bytes()))?;
        if put.status == 412 {
            continue;
        }
        if !put.is_success() {
            return Err(status_problem("the answer could not be saved", &put));
        }
        let view = ical::parse_calendar(&updated)
            .ok()
            .and_then(|c| event::view_events(&c, &TimeZone::UTC, &s.address_domain).into_iter().next())
            .ok_or("the updated event could not be read")?;
        return Ok(Some((stat, view)));
    }
    Err(format!("the event kept changing on the server ({} attempts)", s.update_attempts))
}

fn on_file(msg: &Message) {
    let s = settings();
    let info = match files::info(&msg.id) {
        Ok(i) => i,
        Err(e) => {
            log::debug(&format!("file {}: no info ({})", msg.id, e.describe()));
            return;
        }
    };
    let is_ics = info.name.to_ascii_lowercase().ends_with(".ics")
        || info.content_type.to_ascii_lowercase().starts_with("text/calendar");
    if !is_ics || info.password_protected {
        return;
    }
    if info.size > s.max_ics_bytes {
        let _ = messaging::reply(&msg.conversation, &msg.id, &format!("This calendar file is larger than {} bytes; not shown.", s.max_ics_bytes));
        return;
    }
    let bytes = match files::read(&msg.id) {
        Ok(b) => b,
        Err(e) => {
            log::warn(&format!("file {}: could not be read ({})", msg.id, e.describe()));
            return;
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let cal = match ical::parse_calendar(&text) {
        Ok(c) => c,
        Err(e) => {
            let _ = messaging::reply(&msg.conversation, &msg.id, &format!("I could not read this calendar file: {e}"));
            return;
        }
    };
    let tz = default_zone(&s);
    let views = event::view_events(&cal, &tz, &s.address_domain);
    if views.is_empty() {
        let _ = messaging::reply(&msg.conversation, &msg.id, "This calendar file holds no events.");
        return;
    }
    for (index, view) in views.iter().enumerate().take(MAX_CARDS_PER_FILE) {
        let Some(single) = event::single_event(&cal, index) else { continue };
        let mut card = CardBuilder::new(&format!("📅 {}", view.title)).field("When", &view.when(&tz));
        if let Some(l) = &view.location {
            card = card.field("Where", l);
        }
        if let Some(o) = &view.organizer {
            card = card.field("Organizer", o);
        }
        if !view.attendees.is_empty() {
            card = card.field("Attendees", &view.attendee_list());
        }
        let card = card.button(ADD_BUTTON, "Add to calendar", ButtonStyle::Primary).build();
        match messaging::post_card(&msg.conversation, &card) {
            Ok(card_id) => {
                let pending = PendingIcs {
                    calendar: ical::serialize(&[single]),
                    conversation: msg.conversation.clone(),
                };
                if let Err(e) = set_json(&format!("{ICS_PREFIX}{card_id}"), &pending) {
                    log::error(&format!("could not store the event of card {card_id}: {e}"));
                }
            }
            Err(e) => log::warn(&format!("could not post an event card: {}", e.describe())),
        }
    }
    if views.len() > MAX_CARDS_PER_FILE {
        let _ = messaging::reply(
            &msg.conversation,
            &msg.id,
            &format!("… and {} more events in this file.", views.len() - MAX_CARDS_PER_FILE),
        );
    }
}

fn add_from_card(act: &Action) {
    let s = settings();
    let key = format!("{ICS_PREFIX}{}", act.message_id);
    let Some(pending) = get_json::<PendingIcs>(&key) else {
        return;
    };
    let say = |text: &str| {
        let _ = messaging::reply(&act.conversation, &act.message_id, text);
    };
    if let Err(e) = require_url(&s) {
        return say(&e);
    }
    let Ok(cal) = ical::parse_calendar(&pending.calendar) else { return };
    let tz = default_zone(&s);
    let Some(view) = event::view_events(&cal, &tz, &s.address_domain).into_iter().next() else { return };
    let uid = view.uid.clone().unwrap_or_else(|| format!("{}@imfree-calendar", random_hex(16)));
    let mut cal = cal;
    if view.uid.is_none()
        && let Some(ev) = cal.components.iter_mut().find(|c| c.name == "VEVENT")
    {
        ev.push(ical::Property::new("UID", &uid));
    }
    let Some(resource) = caldav::resource_name(&uid) else {
        return say("This event's UID cannot name a calendar entry.");
    };
    let url = caldav::resource_url(&s.calendar_url, &resource);
    let text = ical::serialize(&[cal]);
    match dav(
        &s,
        "PUT",
        &url,
        &[("content-type", "text/calendar; charset=utf-8"), ("if-none-match", "*")],
        Some(text.as_bytes()),
    ) {
        Ok(r) if r.is_success() => {
            log::info(&format!("event {uid} added from an .ics card in conversation {}", act.conversation));
            say(&format!("{} added “{}” to the calendar.", act.user, view.title));
            schedule_reminder(&s, &resource, &act.conversation, &view);
        }
        Ok(r) if r.status == 412 => say(&format!("“{}” is already in the calendar.", view.title)),
        Ok(r) => say(&status_problem("The event was not added", &r)),
        Err(e) => say(&e),
    }
}

fn post_reminder(id: &str, r: &Reminder, now: i64) {
    let s = settings();
    let tz = default_zone(&s);
    let start = Timestamp::from_millisecond(r.start_ms).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned(tz.clone());
    let minutes = (r.start_ms - now + 59_999) / 60_000;
    let text = format!(
        "⏰ “{}” starts in {minutes} minute{} ({} {}).",
        r.title,
        if minutes == 1 { "" } else { "s" },
        start.strftime("%H:%M"),
        tz.iana_name().unwrap_or("UTC")
    );
    if let Err(e) = messaging::post(&r.conversation, &text) {
        log::warn(&format!("reminder for {id} not posted: {}", e.describe()));
    }
}

struct Calendar;

impl Plugin for Calendar {
    fn init() -> Result<(), String> {
        let s = settings();
        if s.calendar_url.is_empty() {
            log::warn("calendar-url is not set: /meet and /agenda will say so");
        }
        // Timers do not survive a restart: arm the reminder timer again from kv (what fell due meanwhile is
        // posted now, if its event has not started).
        remind_due();
        log::info("calendar ready");
        Ok(())
    }

    fn incoming_message(msg: Message) {
        if msg.sender == BOT {
            return;
        }
        if msg.content_type == REACTION_MIME {
            on_reaction(&msg);
        } else if msg.content_type == FILE_MIME {
            on_file(&msg);
        }
    }

    fn command(cmd: Command) -> Option<String> {
        match cmd.name.as_str() {
            "meet" => Some(meet(&cmd)),
            "agenda" => Some(agenda(&cmd)),
            _ => None,
        }
    }

    fn action(act: Action) {
        if act.button == ADD_BUTTON {
            add_from_card(&act);
        }
    }

    fn timer(t: TimerFired) {
        if t.name == REMINDER_TIMER {
            remind_due();
        }
    }
}

export_plugin!(Calendar);
