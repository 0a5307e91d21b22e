//! The glue to the host (wasm32 only): settings, the kv queue, timers, file reads, outbound HTTP and replies. The
//! decisions are made by the pure modules; this one moves data between them and the host, and logs message and
//! conversation ids, part counts and statuses — never audio, transcripts, URLs or the API key.

// The exports behind `export_plugin!` use `unsafe` for the canonical ABI; the code written here does not.
#![allow(unsafe_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imfree_plugin_sdk::types::{FILE_MIME, HostError, Message, TimerFired};
use imfree_plugin_sdk::{HostErrorExt, Plugin, config, export_plugin, files, http, kv, log, messaging, timers};

use crate::audio::{self, Limits};
use crate::job::{self, Job};
use crate::request::{self, Form, Outcome};


/// The bot's account: bot-scope plugins run as an account named like the plugin.
const BOT: &str = "transcription";
/// The repeating safety-net timer, and the once-timer armed for the next due job.
const TIMER: &str = "work";
const TIMER_NOW: &str = "work-now";
/// kv: the repeating timer's id (a fresh instance replaces it), and the pending once-timer.
const TIMER_KEY: &str = "timer";
const WAKE_KEY: &str = "wake";
/// The host's shortest repeating interval.
const MIN_TICK_MS: u64 = 1000;
/// Requests one timer call makes: one, so that a call lasts about as long as the recogniser takes for one part and
/// the administrator can size `wall-ms-per-call` for that; what is left is picked up by the next call, armed at
/// once (progress is saved after every part).
const MAX_REQUESTS_PER_CALL: usize = 1;

/// The administrator's settings (plugin.toml documents each).
struct Settings {
    base_url: String,
    model: String,
    language: String,
    api_key: String,
    limits: Limits,
    max_attempts: u32,
    backoff_base_ms: u64,
    backoff_max_ms: u64,
    tick_ms: u64,
    max_queue: usize,
    max_reply_chars: usize,
    audio_files: bool,
}

fn settings() -> Settings {
    let seconds = |key: &str, default: u64| config::parsed::<u64>(key).unwrap_or(default).max(1).saturating_mul(1000);
    Settings {
        base_url: config::get_or("base-url", "http://127.0.0.1:8080"),
        model: config::get_or("model", "whisper-1"),
        language: config::get_or("language", "").trim().to_owned(),
        api_key: config::get_or("api-key", "").trim().to_owned(),
        limits: Limits {
            max_chunk_ms: seconds("max-chunk-seconds", 30),
            max_chunk_bytes: config::parsed::<usize>("max-chunk-bytes").unwrap_or(1_000_000).max(1024),
            max_duration_ms: seconds("max-duration-seconds", 1800),
        },
        max_attempts: config::parsed::<u32>("max-attempts").unwrap_or(6).max(1),
        backoff_base_ms: config::parsed::<u64>("backoff-base-ms").unwrap_or(5000).max(1),
        backoff_max_ms: config::parsed::<u64>("backoff-max-ms").unwrap_or(600_000).max(1),
        tick_ms: config::parsed::<u64>("tick-ms").unwrap_or(10_000).clamp(MIN_TICK_MS, 3_600_000),
        max_queue: config::parsed::<usize>("max-queue").unwrap_or(100),
        max_reply_chars: config::parsed::<usize>("max-reply-chars").unwrap_or(20_000).max(100),
        audio_files: config::parsed::<bool>("audio-files").unwrap_or(false),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A random number in `[0, 1)`.
fn jitter() -> f64 {
    imfree_plugin_sdk::random::unit()
}

fn random_boundary() -> String {
    format!("imfree-{}", imfree_plugin_sdk::random::hex(18))
}

struct Transcription;

impl Plugin for Transcription {
    fn init() -> Result<(), String> {
        let s = settings();
        // One repeating timer for the plugin, not one per instance: a fresh instance replaces the previous one's.
        if let Err(e) = timers::repeating_replacing(TIMER, Duration::from_millis(s.tick_ms), TIMER_KEY) {
            log::warn(&format!("no work timer ({}); queued voice messages wait", e.describe()));
        }
        let waiting = kv::list_keys(job::PREFIX).map(|k| k.len()).unwrap_or(0);
        log::info(&format!(
            "transcription ready: model {}, parts of at most {} s, {waiting} voice message(s) waiting",
            s.model,
            s.limits.max_chunk_ms / 1000
        ));
        Ok(())
    }

    fn incoming_message(msg: Message) {
        if msg.content_type != FILE_MIME || msg.sender == BOT {
            return;
        }
        let s = settings();
        let Some(summary) = job::parse_summary(&msg.body) else {
            log::debug(&format!("file message {} without a readable summary: ignored", msg.id));
            return;
        };
        if !job::wanted(&summary, s.audio_files) {
            return;
        }
        let waiting = kv::list_keys(job::PREFIX).unwrap_or_default();
        // A message delivered twice (a redelivery after a restart) is queued once.
        let suffix = format!("-{}", msg.id);
        if waiting.iter().any(|k| k.ends_with(&suffix)) {
            return;
        }
        let queued = waiting.len();
        if queued >= s.max_queue {
            log::warn(&format!("transcription queue full ({queued} waiting): voice message {} not transcribed", msg.id));
            say(&msg.conversation, &msg.id, "Sorry, too many voice messages are waiting to be transcribed; this one is skipped.");
            return;
        }
        let now = now_ms();
        let j = Job {
            message: msg.id.clone(),
            conversation: msg.conversation.clone(),
            mime: summary.mime,
            declared_ms: summary.duration_ms,
            done: Vec::new(),
            attempts: 0,
            due_ms: now,
            queued_ms: now,
            told_delay: false,
        };
        // Queued first, worked on by a timer: this hook never waits for the recogniser, and a restart loses nothing.
        if save(&job::key(now, &j.message), &j) {
            log::info(&format!("voice message {} in {} queued for transcription", j.message, j.conversation));
            arm(now);
        }
    }

    fn timer(t: TimerFired) {
        if t.name == TIMER_NOW {
            timers::woke(WAKE_KEY, t.id);
        }
        if t.name == TIMER || t.name == TIMER_NOW {
            work_due();
        }
    }
}

/// Reply to `message` with a short note; a failure is logged (the note is not worth a retry).
fn say(conversation: &str, message: &str, text: &str) {
    if let Err(e) = messaging::reply(conversation, message, text) {
        log::warn(&format!("could not reply to {message} in {conversation}: {}", e.describe()));
    }
}

fn save(key: &str, j: &Job) -> bool {
    let saved = serde_json::to_vec(j).map_err(|e| e.to_string()).and_then(|v| kv::set(key, &v).map_err(|e| e.describe()));
    match saved {
        Ok(()) => true,
        Err(e) => {
            log::warn(&format!("cannot save the transcription of {}: {e}", j.message));
            false
        }
    }
}

/// Make sure the queue is looked at by `at_ms` (one pending once-timer at the earliest due time; the repeating
/// timer is the safety net if it is lost).
fn arm(at_ms: u64) {
    if let Err(e) = timers::wake_by(TIMER_NOW, WAKE_KEY, at_ms, now_ms()) {
        log::debug(&format!("no wake-up timer ({}); the repeating timer picks the work up", e.describe()));
    }
}

/// Work on what is due, oldest first, within this call's budget of requests; arm a timer for what is left.
fn work_due() {
    let s = settings();
    let keys = match kv::list_keys(job::PREFIX) {
        Ok(k) => k,
        Err(e) => {
            log::warn(&format!("cannot read the transcription queue: {}", e.describe()));
            return;
        }
    };
    let mut requests = 0usize;
    let mut next_due: Option<u64> = None;
    for key in keys {
        if requests >= MAX_REQUESTS_PER_CALL {
            next_due = Some(now_ms());
            break;
        }
        let Ok(Some(bytes)) = kv::get(&key) else { continue };
        let Ok(j) = serde_json::from_slice::<Job>(&bytes) else {
            log::warn("an unreadable transcription job was dropped from the queue");
            let _ = kv::delete(&key);
            continue;
        };
        if j.due_ms > now_ms() {
            next_due = Some(next_due.map_or(j.due_ms, |n| n.min(j.due_ms)));
            continue;
        }
        if let Some(due) = work_on(&key, j, &s, &mut requests) {
            next_due = Some(next_due.map_or(due, |n| n.min(due)));
        }
    }
    if let Some(at) = next_due {
        arm(at);
    }
}

/// Why a job stops for good, and what the reply says.
fn give_up(key: &str, j: &Job, log_line: &str, reply: &str) {
    log::warn(&format!("voice message {} in {}: {log_line}; not transcribed", j.message, j.conversation));
    say(&j.conversation, &j.message, reply);
    let _ = kv::delete(key);
}

/// Transcribe the job's next part (or post its transcript when all are done). Returns when it is due again if it stays queued.
fn work_on(key: &str, mut j: Job, s: &Settings, requests: &mut usize) -> Option<u64> {
    let data = match files::read(&j.message) {
        Ok(d) => d,
        Err(HostError::Unavailable(why)) => {
            j.attempts += 1;
            return retry(key, j, s, None, &format!("the file is unavailable ({why})"));
        }
        Err(HostError::QuotaExceeded(_)) => {
            give_up(key, &j, "the file is larger than files-max-bytes", "Sorry, this voice message is too large for me to transcribe.");
            return None;
        }
        Err(e) => {
            give_up(key, &j, &format!("cannot read the file ({})", e.describe()), "Sorry, I cannot read this voice message, so I cannot transcribe it.");
            return None;
        }
    };
    let parts = match audio::prepare(&data, &j.mime, j.declared_ms, &s.limits) {
        Ok(p) => p,
        Err(e) => {
            give_up(key, &j, &e.to_string(), &format!("Sorry, I could not transcribe this voice message: {e}."));
            return None;
        }
    };
    drop(data);
    let url = request::endpoint(&s.base_url);
    let bearer = format!("Bearer {}", s.api_key);
    while j.done.len() < parts.len() {
        if *requests >= MAX_REQUESTS_PER_CALL {
            let _ = save(key, &j);
            return Some(now_ms());
        }
        let n = j.done.len();
        let part = &parts[n];
        // Count the attempt and push the due time out before making it: an attempt cut short (a trap, a restart)
        // counts as failed, and a later call does not pick the job up meanwhile.
        j.attempts += 1;
        j.due_ms = now_ms() + request::backoff_ms(j.attempts, s.backoff_base_ms, s.backoff_max_ms, None, jitter());
        if !save(key, &j) {
            return Some(j.due_ms);
        }
        *requests += 1;
        let filename = format!("part-{}.{}", n + 1, part.extension);
        let form = Form { audio: &part.data, filename: &filename, mime: &part.mime, model: &s.model, language: &s.language };
        let mut boundary = random_boundary();
        while request::body_contains(&part.data, boundary.as_bytes()) {
            boundary = random_boundary();
        }
        let (body, content_type) = request::multipart(&form, &boundary);
        let mut headers = vec![("content-type", content_type.as_str()), ("user-agent", "imfree-transcription/0.1"), ("accept", "application/json")];
        if !s.api_key.is_empty() {
            headers.push(("authorization", bearer.as_str()));
        }
        let outcome = match http::post(&url, &headers, &body) {
            Ok(r) => request::judge(r.status, r.header("retry-after"), &r.body),
            Err(http::HttpError::Timeout(_)) => Outcome::Retry { after_ms: None, why: "no answer in time".into() },
            Err(http::HttpError::Transport(_)) => Outcome::Retry { after_ms: None, why: "connection failed".into() },
            Err(e) => {
                // Refused by the host (origin not granted, private address), a malformed URL, an answer over the
                // host's size limit: retrying cannot help. The host's incident log says which.
                let kind = e.to_string().split(':').next().unwrap_or("error").to_owned();
                give_up(key, &j, &format!("request refused ({kind}); see the host's incident log"), "Sorry, I could not reach the speech service to transcribe this voice message.");
                return None;
            }
        };
        match outcome {
            Outcome::Text(text) => {
                j.done.push(text);
                j.attempts = 0;
                j.due_ms = now_ms();
                log::debug(&format!("voice message {}: part {} of {} transcribed", j.message, n + 1, parts.len()));
                if j.done.len() < parts.len() && !save(key, &j) {
                    return Some(j.due_ms);
                }
            }
            Outcome::Retry { after_ms, why } => return retry(key, j, s, after_ms, &why),
            Outcome::Permanent { why } => {
                give_up(key, &j, &format!("the speech service answered {why}"), &format!("Sorry, the speech service could not transcribe this voice message ({why})."));
                return None;
            }
        }
    }
    let text = job::reply_text(&j.done, s.max_reply_chars);
    match messaging::reply(&j.conversation, &j.message, &text) {
        Ok(_) => {
            log::info(&format!("voice message {} in {} transcribed ({} part(s))", j.message, j.conversation, parts.len()));
            let _ = kv::delete(key);
            None
        }
        Err(HostError::Unavailable(why)) => {
            j.attempts += 1;
            retry(key, j, s, None, &format!("cannot post the transcript ({why})"))
        }
        Err(e) => {
            log::warn(&format!("cannot post the transcript of {} in {}: {}; dropped", j.message, j.conversation, e.describe()));
            let _ = kv::delete(key);
            None
        }
    }
}

/// A failure worth retrying (`j.attempts` already counts it): back off, tell the conversation once, give up after
/// `max-attempts`.
fn retry(key: &str, mut j: Job, s: &Settings, after_ms: Option<u64>, why: &str) -> Option<u64> {
    if j.attempts >= s.max_attempts {
        give_up(key, &j, &format!("{why}, {} attempts", j.attempts), "Sorry, I could not transcribe this voice message: the speech service kept failing, so I gave up.");
        return None;
    }
    j.due_ms = now_ms() + request::backoff_ms(j.attempts, s.backoff_base_ms, s.backoff_max_ms, after_ms, jitter());
    log::info(&format!("voice message {}: {why} (attempt {}); retrying in {} ms", j.message, j.attempts, j.due_ms.saturating_sub(now_ms())));
    if !j.told_delay {
        j.told_delay = true;
        say(&j.conversation, &j.message, "The transcript of this voice message is delayed: the speech service is not answering right now. I will keep trying.");
    }
    let _ = save(key, &j);
    Some(j.due_ms)
}

export_plugin!(Transcription);
