//! Relay policy: a relay-scope plugin. It refuses envelopes that are too big, go to too many users or come from a
//! blocked sender; counts what it passed and refused, presence changes and timer ticks in its kv store (the relay's
//! database); and serves those counts as JSON at `GET /plugins/relay-policy/stats`.

use std::time::Duration;

use imfree_plugin_sdk::types::{Envelope, EnvelopeVerdict, HttpRequest, HttpResponse, Presence, StatusChange, TimerFired};
use imfree_plugin_sdk::{HostErrorExt, Plugin, config, export_plugin, kv, log, timers};

struct RelayPolicy;

const COUNTERS: [&str; 5] = ["passed", "refused", "online", "offline", "ticks"];

fn count(key: &str) {
    if let Err(e) = kv::increment(key, 1) {
        log::warn(&format!("cannot count {key}: {}", e.describe()));
    }
}

fn counter(key: &str) -> i64 {
    kv::get_string(key).ok().flatten().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn verdict(env: &Envelope) -> Option<String> {
    let max_bytes = config::parsed::<u64>("max_bytes").unwrap_or(256 * 1024);
    if env.size > max_bytes {
        return Some(format!("messages larger than {max_bytes} bytes are not accepted here"));
    }
    let max_recipients = config::parsed::<usize>("max_recipients").unwrap_or(100);
    if env.recipients.len() > max_recipients {
        return Some(format!("messages to more than {max_recipients} people are not accepted here"));
    }
    let blocked = config::get_or("blocked_senders", "");
    if blocked.split(',').map(str::trim).any(|b| !b.is_empty() && b == env.sender) {
        return Some(format!("{} may not send messages on this server", env.sender));
    }
    None
}

impl Plugin for RelayPolicy {
    fn init() -> Result<(), String> {
        // Every fresh instance runs init (after a reload too): replace the heartbeat rather than add another.
        if let Ok(Some(id)) = kv::get_string("tick-timer") {
            if let Ok(id) = id.parse() {
                let _ = timers::cancel(id);
            }
        }
        let every = config::parsed::<u64>("tick_seconds").unwrap_or(60).max(1);
        let id = timers::repeating("heartbeat", Duration::from_secs(every)).map_err(|e| e.describe())?;
        kv::set_string("tick-timer", &id.to_string()).map_err(|e| e.describe())?;
        Ok(())
    }

    fn relay_envelope(env: Envelope) -> EnvelopeVerdict {
        match verdict(&env) {
            Some(reason) => {
                count("refused");
                EnvelopeVerdict::Reject(reason)
            }
            None => {
                count("passed");
                EnvelopeVerdict::Pass
            }
        }
    }

    fn status_change(change: StatusChange) {
        match change.current {
            Presence::Online => count("online"),
            Presence::Offline => count("offline"),
            Presence::Away | Presence::Busy => {}
        }
    }

    fn http(req: HttpRequest) -> HttpResponse {
        if req.method != "GET" || req.path != "/stats" {
            return HttpResponse { status: 404, headers: vec![], body: b"not found\n".to_vec() };
        }
        let fields: Vec<String> = COUNTERS.iter().map(|k| format!("\"{k}\":{}", counter(k))).collect();
        HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: format!("{{{}}}\n", fields.join(",")).into_bytes(),
        }
    }

    fn timer(t: TimerFired) {
        if t.name == "heartbeat" {
            count("ticks");
        }
    }
}

export_plugin!(RelayPolicy);
