//! The glue to the host (wasm32 only): settings, kv, timers, outbound HTTP and posting. Every decision is made by
//! the pure modules; this module only moves data between them and the host, and logs target names, hook ids,
//! conversation ids and statuses — never URLs, secrets or message contents.

// The exports behind `export_plugin!` use `unsafe` for the canonical ABI; the code written here does not.
#![allow(unsafe_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imfree_plugin_sdk::types::{Command, Draft, HttpRequest, HttpResponse, Message, Role, TimerFired};
use imfree_plugin_sdk::{HostErrorExt, Plugin, config, conversations, export_plugin, http, kv, log, messaging, timers};

use crate::formats::{self, OutgoingMessage};
use crate::incoming::{self, Answer, Hook, Subcommand};
use crate::queue::{self, Delivery};
use crate::ratelimit::Bucket;
use crate::retry::{self, Verdict};
use crate::signing::{self, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::targets::{self, Target};


/// The bot's account: bot-scope plugins run as an account named like the plugin. A command whose sender is this
/// account can only come from the operator (`imfree admin webhook`, which holds the bot's data directory).
const BOT: &str = "webhooks";
/// The repeating delivery timer, and the once-timer armed when something is queued.
const TIMER: &str = "deliver";
const TIMER_NOW: &str = "deliver-now";
/// kv: the id of the repeating timer (so a fresh instance replaces it instead of adding one).
const TIMER_KEY: &str = "timer";
/// kv: the pending once-timer that wakes the queue for the next due delivery (`timers::wake_by`), so that at most
/// one is pending; the repeating timer is the safety net if it is lost (a restart drops timers).
const WAKE_KEY: &str = "wake";
/// The host's shortest repeating interval.
const MIN_TICK_MS: u64 = 1000;
/// kv prefixes: incoming hooks by id, rate-limit buckets by URL hash.
const HOOK_PREFIX: &str = "hook/";
const RATE_PREFIX: &str = "rate/";
/// Requests one timer call starts at most, and the time after which it starts no more (the call's wall-clock
/// limit must leave room for the kv writes after the last answer).
const MAX_PER_TICK: usize = 8;
const TICK_BUDGET: Duration = Duration::from_millis(500);

struct Settings {
    tick_ms: u64,
    max_attempts: u32,
    backoff_base_ms: u64,
    backoff_max_ms: u64,
    max_queue: usize,
    rate_per_second: f64,
    rate_burst: u32,
    max_body_bytes: usize,
    signature_window_s: u64,
    public_url: String,
}

fn settings() -> Settings {
    Settings {
        tick_ms: config::parsed::<u64>("tick-ms").unwrap_or(1000).clamp(MIN_TICK_MS, 3_600_000),
        max_attempts: config::parsed::<u32>("max-attempts").unwrap_or(8).max(1),
        backoff_base_ms: config::parsed::<u64>("backoff-base-ms").unwrap_or(2000).max(1),
        backoff_max_ms: config::parsed::<u64>("backoff-max-ms").unwrap_or(600_000).max(1),
        max_queue: config::parsed::<usize>("max-queue").unwrap_or(1000),
        rate_per_second: config::parsed::<f64>("rate-per-second").unwrap_or(1.0),
        rate_burst: config::parsed::<u32>("rate-burst").unwrap_or(5).max(1),
        max_body_bytes: config::parsed::<usize>("max-body-bytes").unwrap_or(65_536),
        signature_window_s: config::parsed::<u64>("signature-window-s").unwrap_or(300),
        public_url: config::get_or("public-url", "https://127.0.0.1:7878").trim_end_matches('/').to_owned(),
    }
}

fn load_targets(log_problems: bool) -> Vec<Target> {
    let (targets, problems) = targets::parse_targets(&config::get("targets").unwrap_or_else(|| "[]".into()));
    if log_problems {
        for p in problems {
            log::warn(&p);
        }
    }
    targets
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn random_hex(bytes: u64) -> String {
    imfree_plugin_sdk::random::hex(bytes as usize)
}

/// A random number in `[0, 1)`.
fn jitter() -> f64 {
    imfree_plugin_sdk::random::unit()
}

struct Webhooks;

impl Plugin for Webhooks {
    fn init() -> Result<(), String> {
        let s = settings();
        let targets = load_targets(true);
        // One repeating timer for the plugin, not one per instance: a fresh instance (after a trap, a reload or a
        // restart) replaces the previous one's.
        if let Err(e) = timers::repeating_replacing(TIMER, Duration::from_millis(s.tick_ms), TIMER_KEY) {
            log::warn(&format!("no delivery timer ({}); queued deliveries wait", e.describe()));
        }
        log::info(&format!("webhooks ready: {} outgoing target(s)", targets.len()));
        Ok(())
    }

    fn incoming_message(msg: Message) {
        // Text only: cards, reactions, button presses and files are not messages a receiver can show.
        if !msg.content_type.starts_with("text/") || msg.sender == BOT {
            return;
        }
        let targets = load_targets(false);
        let out = OutgoingMessage {
            id: msg.id,
            conversation: msg.conversation,
            sender: msg.sender,
            sent_at: msg.sent_at,
            content_type: msg.content_type,
            body: msg.body,
            reply_to: msg.reply_to,
            mentions: msg.mentions,
        };
        let wanted: Vec<&Target> = targets.iter().filter(|t| t.wants(&out, BOT)).collect();
        if wanted.is_empty() {
            return;
        }
        let s = settings();
        let mut queued = kv::list_keys(queue::PREFIX).map(|k| k.len()).unwrap_or(0);
        let now = now_ms();
        let mut any = false;
        for t in wanted {
            if queued >= s.max_queue {
                log::warn(&format!("delivery queue full ({} waiting): message for target {} dropped", s.max_queue, t.name));
                continue;
            }
            let d = Delivery {
                id: random_hex(16),
                target: t.name.clone(),
                body: formats::render(t.format, &out),
                attempts: 0,
                due_ms: now,
                created_ms: now,
            };
            // Queued before the first attempt: a restart between here and the delivery loses nothing.
            match serde_json::to_vec(&d).map_err(|e| e.to_string()).and_then(|v| kv::set(&queue::key(now, &d.id), &v).map_err(|e| e.describe())) {
                Ok(()) => {
                    queued += 1;
                    any = true;
                }
                Err(e) => log::error(&format!("could not queue a delivery for target {}: {e}", t.name)),
            }
        }
        if any {
            // Deliver soon, from a timer: this hook never waits for a receiver.
            arm(now);
        }
    }

    fn timer(t: TimerFired) {
        if t.name == TIMER_NOW {
            timers::woke(WAKE_KEY, t.id);
        }
        if t.name == TIMER || t.name == TIMER_NOW {
            deliver_due();
        }
    }

    fn command(cmd: Command) -> Option<String> {
        if cmd.name != "webhook" {
            return None;
        }
        Some(webhook_command(&cmd))
    }

    fn http(req: HttpRequest) -> HttpResponse {
        let s = settings();
        let limits = incoming::Limits {
            max_body_bytes: s.max_body_bytes,
            signature_window_s: s.signature_window_s,
            now_s: now_ms() / 1000,
        };
        let request = incoming::Request { method: &req.method, path: &req.path, headers: &req.headers, body: &req.body };
        let answer = match incoming::check(&request, &limits, load_hook) {
            Err(a) => a,
            Ok((hook, markdown)) => {
                let draft = Draft { conversation: hook.conversation.clone(), content_type: "text/markdown".into(), body: markdown, reply_to: None };
                match messaging::send(&draft) {
                    Ok(id) => {
                        log::info(&format!("incoming webhook {} posted into {}", hook.id, hook.conversation));
                        Answer::posted(&id)
                    }
                    Err(e) => {
                        log::warn(&format!("incoming webhook {}: could not post into {}: {}", hook.id, hook.conversation, e.describe()));
                        Answer::unavailable()
                    }
                }
            }
        };
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        headers.extend(answer.headers);
        HttpResponse { status: answer.status, headers, body: answer.body.into_bytes() }
    }
}

/// Make sure the queue is looked at by `at_ms`: one once-timer at the earliest time anything is due, replaced when
/// something earlier comes, never one per delivery (the host caps a plugin's timers).
fn arm(at_ms: u64) {
    if let Err(e) = timers::wake_by(TIMER_NOW, WAKE_KEY, at_ms, now_ms()) {
        log::debug(&format!("no wake-up timer ({}); the repeating timer delivers", e.describe()));
    }
}

fn load_hook(id: &str) -> Option<Hook> {
    let bytes = kv::get(&format!("{HOOK_PREFIX}{id}")).ok().flatten()?;
    serde_json::from_slice(&bytes).ok()
}

fn all_hooks() -> Vec<Hook> {
    kv::list_keys(HOOK_PREFIX)
        .unwrap_or_default()
        .iter()
        .filter_map(|k| kv::get(k).ok().flatten())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// `/webhook create|list|revoke`. The operator (the bot's own account, through `imfree admin webhook`) may act on
/// any conversation; anyone else must be an owner or admin of the conversation the command was typed in, and acts
/// on that conversation only.
fn webhook_command(cmd: &Command) -> String {
    let operator = cmd.sender == BOT;
    if !operator {
        match conversations::members(&cmd.conversation) {
            Ok(members) => {
                let allowed = members.iter().any(|m| m.user == cmd.sender && matches!(m.role, Role::Owner | Role::Admin));
                if !allowed {
                    return "only an owner or admin of this conversation can manage its webhooks".into();
                }
            }
            Err(e) => return format!("cannot check your role in this conversation: {}", e.describe()),
        }
    }
    match incoming::parse_command(&cmd.args, operator) {
        Subcommand::Help => incoming::USAGE.into(),
        Subcommand::Create { conversation, name, verify } => {
            let conversation = conversation.unwrap_or_else(|| cmd.conversation.clone());
            if operator && let Err(e) = conversations::members(&conversation) {
                return format!("cannot create a webhook for {conversation}: {} (is the webhooks bot a member?)", e.describe());
            }
            let secret = random_hex(24);
            let hook = Hook {
                id: random_hex(6),
                name,
                conversation,
                secret_sha256: signing::sha256_hex(secret.as_bytes()),
                verify_secret: verify.then(|| random_hex(24)),
                created_by: cmd.sender.clone(),
                created_ms: now_ms(),
            };
            let saved = serde_json::to_vec(&hook).map_err(|e| e.to_string()).and_then(|v| kv::set(&format!("{HOOK_PREFIX}{}", hook.id), &v).map_err(|e| e.describe()));
            if let Err(e) = saved {
                return format!("could not save the webhook: {e}");
            }
            log::info(&format!("incoming webhook {} created for {} by {}", hook.id, hook.conversation, hook.created_by));
            let url = format!("{}/plugins/webhooks/hooks/{}/{secret}", settings().public_url, hook.id);
            let mut answer = format!("webhook {} ({}) posts into {}\nurl: {url}\n", hook.id, hook.name, hook.conversation);
            if let Some(v) = &hook.verify_secret {
                answer.push_str(&format!("signing secret: {v}\n(sign requests with X-Imfree-Request-Timestamp and X-Imfree-Signature)\n"));
            }
            answer.push_str(&format!("This is shown only now. Revoke it with: /webhook revoke {}", hook.id));
            answer
        }
        Subcommand::List => {
            let hooks: Vec<Hook> = all_hooks().into_iter().filter(|h| operator || h.conversation == cmd.conversation).collect();
            if hooks.is_empty() {
                return "no webhooks".into();
            }
            hooks
                .iter()
                .map(|h| {
                    let signed = if h.verify_secret.is_some() { " (signed)" } else { "" };
                    format!("{}  {}  {}  by {}{signed}", h.id, h.name, h.conversation, h.created_by)
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        Subcommand::Revoke(id) => match load_hook(&id) {
            Some(h) if operator || h.conversation == cmd.conversation => match kv::delete(&format!("{HOOK_PREFIX}{id}")) {
                Ok(()) => {
                    log::info(&format!("incoming webhook {id} revoked by {}", cmd.sender));
                    format!("webhook {id} revoked")
                }
                Err(e) => format!("could not revoke {id}: {}", e.describe()),
            },
            _ => format!("no webhook {id} in this conversation"),
        },
    }
}

/// Send what is due, oldest first, within this call's budget.
fn deliver_due() {
    let s = settings();
    let targets = load_targets(false);
    let keys = match kv::list_keys(queue::PREFIX) {
        Ok(k) => k,
        Err(e) => {
            log::warn(&format!("cannot read the delivery queue: {}", e.describe()));
            return;
        }
    };
    let started = Instant::now();
    let mut sent = 0;
    // The earliest time something left in the queue is due, to wake up then.
    let mut next_due: Option<u64> = None;
    let mut note = |at: u64| next_due = Some(next_due.map_or(at, |n: u64| n.min(at)));
    for key in keys {
        if sent >= MAX_PER_TICK || started.elapsed() > TICK_BUDGET {
            note(now_ms());
            break;
        }
        let Ok(Some(bytes)) = kv::get(&key) else { continue };
        let Ok(mut d) = serde_json::from_slice::<Delivery>(&bytes) else {
            log::warn("an unreadable delivery was dropped from the queue");
            let _ = kv::delete(&key);
            continue;
        };
        let now = now_ms();
        if d.due_ms > now {
            note(d.due_ms);
            continue;
        }
        let Some(target) = targets.iter().find(|t| t.name == d.target) else {
            log::warn(&format!("target {} is no longer configured: its delivery was dropped", d.target));
            let _ = kv::delete(&key);
            continue;
        };
        if !take_token(&target.url, &s, now) {
            note(now + (1000.0 / s.rate_per_second.max(0.001)).min(60_000.0) as u64);
            continue;
        }
        // Count the attempt and push the due time out before making it: an attempt cut short (a trap, a crash, a
        // restart) counts as failed, and another call does not pick the delivery up meanwhile.
        d.attempts += 1;
        d.due_ms = now + retry::backoff_ms(d.attempts, s.backoff_base_ms, s.backoff_max_ms, None, jitter());
        if save(&key, &d).is_err() {
            continue;
        }
        sent += 1;
        if let Some(due) = attempt(&key, d, target, &s) {
            note(due);
        }
    }
    if let Some(at) = next_due {
        arm(at);
    }
}

fn save(key: &str, d: &Delivery) -> Result<(), ()> {
    let bytes = serde_json::to_vec(d).map_err(|_| ())?;
    kv::set(key, &bytes).map_err(|e| log::warn(&format!("cannot update the delivery queue: {}", e.describe())))
}

/// One POST, and what follows from its answer: when it is due again, if it stays queued.
fn attempt(key: &str, mut d: Delivery, target: &Target, s: &Settings) -> Option<u64> {
    let now_s = now_ms() / 1000;
    let timestamp = now_s.to_string();
    let signature = signing::sign(target.secret.as_bytes(), now_s, d.body.as_bytes());
    let headers = [
        ("content-type", "application/json"),
        ("user-agent", "imfree-webhooks/0.1"),
        (TIMESTAMP_HEADER, timestamp.as_str()),
        (SIGNATURE_HEADER, signature.as_str()),
        (DELIVERY_HEADER, d.id.as_str()),
    ];
    let verdict = match http::post(&target.url, &headers, d.body.as_bytes()) {
        Ok(r) => {
            let v = retry::judge(r.status, r.header("retry-after"), now_s);
            if v == Verdict::Drop {
                log::warn(&format!("target {} answered {}: delivery dropped", target.name, r.status));
            } else if v != Verdict::Delivered {
                log::info(&format!("target {} answered {} (attempt {})", target.name, r.status, d.attempts));
            }
            v
        }
        Err(http::HttpError::Timeout(_) | http::HttpError::Transport(_) | http::HttpError::TooLarge(_)) => {
            log::info(&format!("target {}: no answer (attempt {})", target.name, d.attempts));
            Verdict::Retry { after_ms: None }
        }
        Err(e) => {
            // Refused by the host (origin not granted, private address) or a malformed URL: retrying cannot help.
            let kind = e.to_string().split(':').next().unwrap_or("error").to_owned();
            log::warn(&format!("target {}: request refused ({kind}); delivery dropped, see the host's incident log", target.name));
            Verdict::Drop
        }
    };
    match verdict {
        Verdict::Delivered | Verdict::Drop => {
            let _ = kv::delete(key);
            None
        }
        Verdict::Retry { after_ms } => {
            if d.attempts >= s.max_attempts {
                log::warn(&format!("target {}: gave up after {} attempts; delivery dropped", target.name, d.attempts));
                let _ = kv::delete(key);
                return None;
            }
            d.due_ms = now_ms() + retry::backoff_ms(d.attempts, s.backoff_base_ms, s.backoff_max_ms, after_ms, jitter());
            let _ = save(key, &d);
            Some(d.due_ms)
        }
    }
}

/// The URL's token bucket, in kv.
fn take_token(url: &str, s: &Settings, now: u64) -> bool {
    let key = format!("{RATE_PREFIX}{}", &signing::sha256_hex(url.as_bytes())[..32]);
    let mut bucket = kv::get(&key)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Bucket>(&b).ok())
        .unwrap_or_else(|| Bucket::full(s.rate_burst, now));
    let ok = bucket.try_take(s.rate_per_second, s.rate_burst, now);
    if let Ok(bytes) = serde_json::to_vec(&bucket) {
        let _ = kv::set(&key, &bytes);
    }
    ok
}

export_plugin!(Webhooks);
