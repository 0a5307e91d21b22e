//! The glue to the host (wasm32 only): settings, kv, timers, mail, files and posting. Decisions are made by the
//! pure modules; this module moves data between them and the host, and logs conversation ids, reasons and host
//! error kinds — never addresses, subjects or message contents.

// The exports behind `export_plugin!` use `unsafe` for the canonical ABI; the code written here does not.
#![allow(unsafe_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imfree_plugin_sdk::types::{Draft, FILE_MIME, HostError, Message, TimerFired};
use imfree_plugin_sdk::{HostErrorExt, Plugin, config, export_plugin, files, kv, log, mail, messaging, timers};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bridges::{self, Bridge};
use crate::inbound::{self, Inbound, InboundLimits, InboundMail, OwnIdentity};
use crate::outbound::{self, Attachment, OutgoingMail};
use crate::post;
use crate::retry;
use crate::thread::{self, ThreadRecord};

/// The bot's account: bot-scope plugins run as an account named like the plugin.
const BOT: &str = "email-gateway";
/// The repeating mailbox poll, and the once-timer that submits queued mail.
const POLL: &str = "poll";
const DELIVER: &str = "deliver";
/// kv: the id of the repeating timer (so a fresh instance replaces it instead of adding one).
const TIMER_KEY: &str = "timer";
/// kv prefix of the outgoing queue: `q/<created ms, zero-padded>-<hash>`, oldest first.
const QUEUE: &str = "q/";
/// kv: the thread-record ring (`r/<slot>`) and the number of records stored so far.
const RING: &str = "r/";
const RING_NEXT: &str = "ring-next";
/// Mails one delivery call submits at most, and the time after which it starts no more.
const MAX_PER_CALL: usize = 8;
const CALL_BUDGET: Duration = Duration::from_secs(10);

struct Settings {
    poll_s: u64,
    max_fetch: u32,
    max_attempts: u32,
    backoff_base_ms: u64,
    backoff_max_ms: u64,
    max_queue: usize,
    max_threads: u64,
    limits: InboundLimits,
}

fn settings() -> Settings {
    Settings {
        poll_s: config::parsed::<u64>("poll-seconds").unwrap_or(30).clamp(5, 86_400),
        max_fetch: config::parsed::<u32>("max-fetch").unwrap_or(20).clamp(1, 100),
        max_attempts: config::parsed::<u32>("max-attempts").unwrap_or(10).max(1),
        backoff_base_ms: config::parsed::<u64>("backoff-base-ms").unwrap_or(30_000).max(1),
        backoff_max_ms: config::parsed::<u64>("backoff-max-ms").unwrap_or(3_600_000).max(1),
        max_queue: config::parsed::<usize>("max-queue").unwrap_or(500),
        max_threads: config::parsed::<u64>("max-threads").unwrap_or(500).clamp(10, 1_000_000),
        limits: InboundLimits {
            max_attachments: config::parsed::<usize>("max-attachments").unwrap_or(10).min(100),
            max_text_chars: config::parsed::<usize>("max-text-chars").unwrap_or(20_000).clamp(100, 1_000_000),
        },
    }
}

fn load_bridges(log_problems: bool) -> Vec<Bridge> {
    let (list, problems) = bridges::parse_bridges(&config::get("bridges").unwrap_or_else(|| "[]".into()));
    if log_problems {
        problems.iter().for_each(|p| log::warn(p));
    }
    list
}

fn load_identities(log_problems: bool) -> Vec<(String, String)> {
    let (list, problems) = bridges::parse_identities(&config::get("identities").unwrap_or_else(|| "[]".into()));
    if log_problems {
        problems.iter().for_each(|p| log::warn(p));
    }
    list
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The bridge's address and the domain of its Message-IDs.
fn own_identity() -> Result<OwnIdentity, HostError> {
    let address = mail::address()?.to_ascii_lowercase();
    let domain = address.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_else(|| "imfree.invalid".into());
    Ok(OwnIdentity { address, domain })
}

fn get_json<T: for<'de> Deserialize<'de>>(key: &str) -> Option<T> {
    kv::get(key).ok().flatten().and_then(|v| serde_json::from_slice(&v).ok())
}

fn set_json<T: Serialize>(key: &str, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    kv::set(key, &bytes).map_err(|e| e.describe())
}

/// Store `record` (under its imfree message, with a pointer from its Message-ID) and forget the oldest one beyond
/// `max-threads`: a ring of slots `r/<n mod max>` names the keys of the record stored n-th, so kv use stays bounded.
fn remember(record: &ThreadRecord) {
    let by_message = thread::key_by_message(&record.conversation, &record.id);
    let by_mail = thread::key_by_mail(&record.message_id);
    if let Err(e) = set_json(&by_message, record).and_then(|()| kv::set_string(&by_mail, &by_message).map_err(|e| e.describe())) {
        log::warn(&format!("could not remember a thread record in {}: {e}", record.conversation));
        return;
    }
    let max = settings().max_threads;
    let n = kv::get_string(RING_NEXT).ok().flatten().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let slot = format!("{RING}{}", n % max);
    let keys = [by_message, by_mail];
    if let Some(old) = get_json::<[String; 2]>(&slot)
        && old != keys
    {
        old.iter().for_each(|k| {
            let _ = kv::delete(k);
        });
    }
    let _ = set_json(&slot, &keys);
    let _ = kv::set_string(RING_NEXT, &(n + 1).to_string());
}

/// The record of the mail `message_id`, if it was bridged.
fn record_by_mail(message_id: &str) -> Option<ThreadRecord> {
    let key = kv::get_string(&thread::key_by_mail(message_id)).ok().flatten()?;
    get_json(&key)
}

/// A message waiting to go out. The file of a file message is read when it is sent, so kv holds no file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    conversation: String,
    id: String,
    sender: String,
    sent_at: u64,
    content_type: String,
    body: String,
    message_id: String,
    in_reply_to: Option<String>,
    references: Vec<String>,
    subject: String,
    attempts: u32,
    due_ms: u64,
}

fn queue_key(created_ms: u64, id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{QUEUE}{created_ms:016}-{hash}")
}

/// A number in `[0, 1)` from the message and attempt, so retries of mails that failed together spread out.
fn jitter(id: &str, attempt: u32) -> f64 {
    let digest = Sha256::digest(format!("{id}/{attempt}").as_bytes());
    let n = u64::from_le_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]]);
    (n >> 11) as f64 / (1u64 << 53) as f64
}

struct EmailGateway;

impl Plugin for EmailGateway {
    fn init() -> Result<(), String> {
        let s = settings();
        let bridges = load_bridges(true);
        load_identities(true);
        // One repeating timer for the plugin: a fresh instance replaces the previous one's.
        if let Some(id) = kv::get_string(TIMER_KEY).ok().flatten().and_then(|v| v.parse::<u64>().ok()) {
            let _ = timers::cancel(id);
        }
        match timers::repeating(POLL, Duration::from_secs(s.poll_s)) {
            Ok(id) => {
                let _ = kv::set_string(TIMER_KEY, &id.to_string());
            }
            Err(e) => log::warn(&format!("no polling timer ({}); mail is neither fetched nor retried", e.describe())),
        }
        log::info(&format!("email-gateway ready: {} bridged conversation(s), polling every {} s", bridges.len(), s.poll_s));
        Ok(())
    }

    fn incoming_message(msg: Message) {
        let is_text = msg.content_type.starts_with("text/plain") || msg.content_type.starts_with("text/markdown");
        // People's text and files only: not the bot's own posts (mail coming in), reactions or cards.
        if msg.sender == BOT || !(is_text || msg.content_type == FILE_MIME) {
            return;
        }
        let bridges = load_bridges(false);
        let Some(bridge) = bridges.iter().find(|b| b.conversation == msg.conversation) else { return };
        let s = settings();
        if kv::list_keys(QUEUE).map(|k| k.len()).unwrap_or(0) >= s.max_queue {
            log::warn(&format!("outgoing mail queue full ({}): a message of {} dropped", s.max_queue, msg.conversation));
            return;
        }
        let own = match own_identity() {
            Ok(o) => o,
            Err(e) => {
                log::error(&format!("no sending address ({}); a message of {} is not bridged", e.describe(), msg.conversation));
                return;
            }
        };
        let parent: Option<ThreadRecord> =
            msg.reply_to.as_deref().and_then(|p| get_json(&thread::key_by_message(&msg.conversation, p)));
        let body = if is_text { msg.body.clone() } else { String::new() };
        let (in_reply_to, references, subject) = match &parent {
            Some(p) => (Some(p.message_id.clone()), p.references_for_reply(), thread::reply_subject(&p.subject)),
            None => {
                let fallback = format!("Message from {}", msg.sender);
                (None, Vec::new(), outbound::new_subject(bridge.subject.as_deref(), &body, &fallback))
            }
        };
        let message_id = thread::message_id(&msg.conversation, &msg.id, &own.domain);
        remember(&ThreadRecord {
            conversation: msg.conversation.clone(),
            id: msg.id.clone(),
            message_id: message_id.clone(),
            references: references.clone(),
            subject: subject.clone(),
        });
        let now = now_ms();
        let pending = Pending {
            conversation: msg.conversation,
            id: msg.id,
            sender: msg.sender,
            sent_at: msg.sent_at,
            content_type: msg.content_type,
            body: msg.body,
            message_id,
            in_reply_to,
            references,
            subject,
            attempts: 0,
            due_ms: now,
        };
        // Queued before the first attempt: a restart loses nothing, and this hook never waits for SMTP.
        match set_json(&queue_key(now, &pending.id), &pending) {
            Ok(()) => {
                if let Err(e) = timers::once(DELIVER, Duration::ZERO) {
                    log::warn(&format!("no delivery timer ({}); the mail goes out on the next poll", e.describe()));
                }
            }
            Err(e) => log::error(&format!("could not queue a mail for {}: {e}", pending.conversation)),
        }
    }

    fn timer(t: TimerFired) {
        match t.name.as_str() {
            POLL => {
                poll_mailbox();
                deliver_due();
            }
            DELIVER => deliver_due(),
            _ => {}
        }
    }
}

/// The mail for `p`, with its file attached for a file message. `Err` if the file cannot be read now.
fn build(p: &Pending, bridge: &Bridge, from: &str) -> Result<Vec<u8>, HostError> {
    let mut markdown = p.body.clone();
    let mut attachment = None;
    if p.content_type == FILE_MIME {
        let info = files::info(&p.id)?;
        match files::read(&p.id) {
            Ok(data) => {
                markdown = format!("{} sent a file: {}", p.sender, info.name);
                attachment = Some(Attachment { name: info.name, content_type: info.content_type, data });
            }
            Err(e @ HostError::Unavailable(_)) => return Err(e),
            // Too large or password-protected: the mail says so instead of carrying it.
            Err(e) => markdown = format!("{} sent a file: {} ({} bytes; not attached: {})", p.sender, info.name, info.size, e.kind()),
        }
    }
    Ok(outbound::compose(&OutgoingMail {
        sender_name: p.sender.clone(),
        from: from.to_owned(),
        to: bridge.addresses.clone(),
        subject: p.subject.clone(),
        message_id: p.message_id.clone(),
        in_reply_to: p.in_reply_to.clone(),
        references: p.references.clone(),
        sent_at_ms: p.sent_at,
        markdown,
        conversation: p.conversation.clone(),
        attachment,
    }))
}

/// Submit the queued mails that are due; reschedule the ones the server deferred.
fn deliver_due() {
    let Ok(keys) = kv::list_keys(QUEUE) else { return };
    if keys.is_empty() {
        return;
    }
    let s = settings();
    let bridges = load_bridges(false);
    let Ok(own) = own_identity() else {
        log::warn("no sending address; queued mail waits");
        return;
    };
    let (started, now) = (Instant::now(), now_ms());
    let mut sent = 0;
    for key in keys {
        if sent >= MAX_PER_CALL || started.elapsed() > CALL_BUDGET {
            // The rest go out on the next call, soon.
            let _ = timers::once(DELIVER, Duration::from_millis(100));
            break;
        }
        let Some(mut p) = get_json::<Pending>(&key) else {
            let _ = kv::delete(&key);
            continue;
        };
        if p.due_ms > now {
            continue;
        }
        let Some(bridge) = bridges.iter().find(|b| b.conversation == p.conversation) else {
            log::info(&format!("{} is no longer bridged; its queued mail is dropped", p.conversation));
            let _ = kv::delete(&key);
            continue;
        };
        sent += 1;
        p.attempts += 1;
        // Counted before the attempt, so one cut short by a crash still counts.
        if let Err(e) = set_json(&key, &p) {
            log::warn(&format!("could not update a queued mail of {}: {e}", p.conversation));
        }
        let result = build(&p, bridge, &own.address).and_then(|raw| mail::send(&bridge.addresses, &raw));
        match result {
            Ok(()) => {
                let _ = kv::delete(&key);
            }
            Err(HostError::Unavailable(_)) if p.attempts < s.max_attempts => {
                p.due_ms = now + retry::backoff_ms(p.attempts, s.backoff_base_ms, s.backoff_max_ms, jitter(&p.id, p.attempts));
                log::info(&format!("mail for {} deferred (attempt {}); retried later", p.conversation, p.attempts));
                let _ = set_json(&key, &p);
            }
            Err(e) => {
                log::warn(&format!("mail for {} dropped after {} attempt(s): {}", p.conversation, p.attempts, e.describe()));
                let _ = kv::delete(&key);
            }
        }
    }
}

/// Fetch waiting mail, post what belongs to a bridge, and remove every mail handled (or dropped).
fn poll_mailbox() {
    let s = settings();
    let own = match own_identity() {
        Ok(o) => o,
        Err(e) => {
            log::warn(&format!("no mail address ({}); the mailbox is not read", e.describe()));
            return;
        }
    };
    let mails = match mail::fetch(s.max_fetch) {
        Ok(m) => m,
        Err(e) => {
            log::warn(&format!("mailbox not read: {}", e.kind()));
            return;
        }
    };
    if mails.is_empty() {
        return;
    }
    let bridges = load_bridges(false);
    let identities = load_identities(false);
    let mut done = Vec::new();
    for m in mails {
        match inbound::read(&m.raw, &own, s.limits) {
            Inbound::Drop(reason) => {
                log::info(&format!("incoming mail dropped: {reason}"));
                done.push(m.id);
            }
            Inbound::Post(mail) => match post(&mail, &bridges, &identities) {
                Ok(()) => done.push(m.id),
                // Left in the mailbox: offered again on the next poll.
                Err(e) => log::warn(&format!("incoming mail not posted yet: {}", e.describe())),
            },
        }
    }
    if !done.is_empty()
        && let Err(e) = mail::remove(&done)
    {
        log::warn(&format!("handled mail not removed from the mailbox: {}", e.kind()));
    }
}

/// Post one mail. `Err` only when posting failed for now (the mail stays in the mailbox).
fn post(mail: &InboundMail, bridges: &[Bridge], identities: &[(String, String)]) -> Result<(), HostError> {
    // The same mail twice (a list copy and a direct copy): post it once.
    if let Some(id) = &mail.message_id
        && kv::get(&thread::key_by_mail(id))?.is_some()
    {
        log::info("incoming mail already posted; removed");
        return Ok(());
    }
    let parent: Option<ThreadRecord> = mail
        .in_reply_to
        .iter()
        .chain(mail.references.iter().rev())
        .find_map(|id| record_by_mail(id));
    let Some(bridge) = post::find_bridge(mail, parent.as_ref().map(|p| p.conversation.as_str()), bridges) else {
        log::info("incoming mail for no bridged conversation dropped");
        return Ok(());
    };
    let parent = parent.filter(|p| p.conversation == bridge.conversation);
    let body = post::post_text(mail, identities, parent.is_some());
    let draft = Draft {
        conversation: bridge.conversation.clone(),
        content_type: "text/markdown".into(),
        body,
        reply_to: parent.as_ref().map(|p| p.id.clone()),
    };
    let posted = match messaging::send(&draft) {
        Ok(id) => id,
        Err(e @ HostError::Unavailable(_)) => return Err(e),
        Err(e) => {
            log::warn(&format!("incoming mail for {} refused by the host: {}", bridge.conversation, e.describe()));
            return Ok(());
        }
    };
    if let Some(message_id) = &mail.message_id {
        let mut references = mail.references.clone();
        references.extend(mail.in_reply_to.iter().cloned());
        remember(&ThreadRecord {
            conversation: bridge.conversation.clone(),
            id: posted,
            message_id: message_id.clone(),
            references: thread::trim_references(references),
            subject: mail.subject.clone(),
        });
    }
    for a in &mail.attachments {
        if let Err(e) = files::send(&bridge.conversation, &a.name, &a.content_type, &a.data) {
            log::warn(&format!("an attachment of a mail for {} not posted: {}", bridge.conversation, e.describe()));
        }
    }
    Ok(())
}

export_plugin!(EmailGateway);
