//! Test guest exercising every hook and every host capability. Commands run one host call and answer with its
//! result (`ok …` or `err …`), so the tests can see both granted and refused calls from the guest's side. A received
//! message `probe: NAME ARGS` runs a command too (client scope, which has no command hook, drives it that way).

use std::time::Duration;

use imfree_plugin_sdk::messaging::CardBuilder;
use imfree_plugin_sdk::types::*;
use imfree_plugin_sdk::{HostErrorExt, Plugin, accounts, config, conversations, export_plugin, files, http, kv, log, mail, messaging, timers};

struct Probe;

fn answer<T: std::fmt::Debug>(r: Result<T, HostError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("err {}", e.describe()),
    }
}

impl Plugin for Probe {
    fn init() -> Result<(), String> {
        if config::get("fail-init").as_deref() == Some("true") {
            return Err("configured to fail".into());
        }
        log::info("probe ready");
        Ok(())
    }

    fn incoming_message(msg: Message) {
        // A file: describe it, read it, and send it back as `echo-<name>` (the `files` capability end to end).
        if msg.content_type == FILE_MIME {
            let text = match files::info(&msg.id).and_then(|info| files::read(&msg.id).map(|data| (info, data))) {
                Ok((info, data)) => {
                    let sent = files::send(&msg.conversation, &format!("echo-{}", info.name), &info.content_type, &data);
                    format!(
                        "file {} {} {} bytes read, voice {} from {}; echo {}",
                        info.name,
                        info.content_type,
                        data.len(),
                        info.voice,
                        info.sender,
                        if sent.is_ok() { "sent" } else { "refused" }
                    )
                }
                Err(e) => format!("file refused: {}", e.describe()),
            };
            let _ = messaging::reply(&msg.conversation, &msg.id, &text);
            return;
        }
        // Client scope has no command hook: a message `probe: NAME ARGS` runs the command NAME as `/NAME ARGS`
        // would, and the answer is the reply.
        let text = match msg.body.strip_prefix("probe: ") {
            Some(line) => {
                let (name, args) = line.split_once(' ').unwrap_or((line, ""));
                Self::command(Command {
                    name: name.into(),
                    args: args.into(),
                    conversation: msg.conversation.clone(),
                    sender: msg.sender.clone(),
                })
                .unwrap_or_else(|| format!("no command {name}"))
            }
            None => {
                let mut seen = format!("seen {}", msg.body);
                if let Some(to) = &msg.reply_to {
                    seen.push_str(&format!(" in reply to {to}"));
                }
                if !msg.mentions.is_empty() {
                    seen.push_str(&format!(" mentioning {}", msg.mentions.join(",")));
                }
                seen
            }
        };
        let _ = messaging::reply(&msg.conversation, &msg.id, &text);
    }

    fn outgoing_message(mut msg: Message) -> Verdict {
        if msg.body.contains("reject") {
            Verdict::Reject("probe rejects".into())
        } else if msg.body.contains("upper") {
            msg.body = msg.body.to_uppercase();
            msg.conversation = "elsewhere".into();
            Verdict::Modify(msg)
        } else {
            Verdict::Pass
        }
    }

    fn relay_envelope(env: Envelope) -> EnvelopeVerdict {
        if env.size > 1000 || env.recipients.len() > 3 {
            EnvelopeVerdict::Reject(format!("too big for {}", env.conversation))
        } else {
            EnvelopeVerdict::Pass
        }
    }

    fn status_change(change: StatusChange) {
        let _ = messaging::post(
            "status",
            &format!("{} {:?}->{:?}", change.user, change.previous, change.current),
        );
    }

    fn command(cmd: Command) -> Option<String> {
        let args: Vec<&str> = cmd.args.split_whitespace().collect();
        let arg = |i: usize| args.get(i).copied().unwrap_or("");
        Some(match cmd.name.as_str() {
            "kv-set" => answer(kv::set_string(arg(0), arg(1))),
            "kv-get" => answer(kv::get_string(arg(0))),
            "kv-del" => answer(kv::delete(arg(0))),
            "kv-list" => answer(kv::list_keys(arg(0))),
            "kv-fill" => answer(kv::set(arg(0), &vec![b'x'; arg(1).parse().unwrap_or(0)])),
            "post" => answer(messaging::post(arg(0), arg(1))),
            "reply" => answer(messaging::reply(arg(0), arg(1), arg(2))),
            "react" => answer(messaging::react(arg(0), arg(1), arg(2))),
            "card" => answer(messaging::post_card(
                arg(0),
                &CardBuilder::new("Deploy?")
                    .text("Release 1.2")
                    .field("env", "prod")
                    .button("yes", "Deploy", ButtonStyle::Primary)
                    .button("no", "Cancel", ButtonStyle::Danger)
                    .build(),
            )),
            "file-info" => answer(files::info(arg(0)).map(|f| format!("{} {} {}", f.name, f.content_type, f.size))),
            "file-read" => answer(files::read(arg(0)).map(|d| d.len())),
            "file-send" => answer(files::send(arg(0), arg(1), "text/plain", arg(2).as_bytes())),
            "mail-address" => answer(mail::address()),
            "mail-send" => answer(mail::send(&[arg(0).replace("\\r\\n", "\r\n")], arg(1).as_bytes())),
            "mail-fetch" => answer(mail::fetch(arg(0).parse().unwrap_or(10)).map(|m| {
                m.iter().map(|m| format!("{}:{}", m.id, String::from_utf8_lossy(&m.raw))).collect::<Vec<_>>().join(",")
            })),
            "mail-remove" => answer(mail::remove(&args[..].iter().map(|a| a.to_string()).collect::<Vec<_>>())),
            "send-markdown" => answer(messaging::post_markdown(arg(0), arg(1))),
            "send-typed" => answer(messaging::send(&Draft {
                conversation: arg(0).into(),
                content_type: arg(1).into(),
                body: arg(2).into(),
                reply_to: None,
            })),
            "members" => answer(conversations::members(arg(0)).map(|m| {
                m.iter().map(|m| format!("{}:{:?}", m.user, m.role)).collect::<Vec<_>>().join(",")
            })),
            "account-exists" => answer(accounts::exists(arg(0))),
            "timer-once" => answer(timers::once(arg(0), Duration::from_millis(arg(1).parse().unwrap_or(0)))),
            "timer-every" => answer(timers::repeating(
                arg(0),
                Duration::from_millis(arg(1).parse().unwrap_or(0)),
            )),
            "timer-cancel" => answer(timers::cancel(arg(0).parse().unwrap_or(0))),
            "config" => format!("{:?}", config::get(arg(0))),
            "config-all" => format!("{:?}", config::all()),
            // http-get URL [name:value ...]: status, the echoed request and the body, or the error.
            "http-get" | "http-post" => {
                let headers: Vec<(&str, &str)> = args[1.min(args.len())..]
                    .iter()
                    .filter_map(|h| h.split_once(':'))
                    .collect();
                let got = if cmd.name == "http-get" {
                    http::get(arg(0), &headers)
                } else {
                    http::post(arg(0), &headers, b"ping")
                };
                match got {
                    Ok(r) => format!(
                        "ok {} x-echo={} {} bytes: {}",
                        r.status,
                        r.header("x-echo").unwrap_or("-"),
                        r.body.len(),
                        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
                    ),
                    Err(e) => format!("err {e}"),
                }
            }
            // http-upload N URL: POST N bytes.
            "http-upload" => match http::post(arg(1), &[], &vec![b'u'; arg(0).parse().unwrap_or(0)]) {
                Ok(r) => format!("ok {}", r.status),
                Err(e) => format!("err {e}"),
            },
            // http-leak N AUTHORITY: start N raw wasi:http GETs and forget their futures (a leaking guest).
            "http-leak" => {
                use imfree_plugin_sdk::wasi_bindings::wasi::http::outgoing_handler;
                use imfree_plugin_sdk::wasi_bindings::wasi::http::types::{Fields, OutgoingRequest, Scheme};
                for _ in 0..arg(0).parse::<u32>().unwrap_or(0) {
                    let request = OutgoingRequest::new(Fields::new());
                    let _ = request.set_scheme(Some(&Scheme::Http));
                    let _ = request.set_authority(Some(arg(1)));
                    let _ = request.set_path_with_query(Some("/"));
                    match outgoing_handler::handle(request, None) {
                        Ok(pending) => std::mem::forget(pending),
                        Err(e) => return Some(format!("err {e:?}")),
                    }
                }
                "leaked".into()
            }
            // http-repeat N URL: N GETs in one call; the statuses or the first error.
            "http-repeat" => {
                let mut statuses = Vec::new();
                for _ in 0..arg(0).parse::<u32>().unwrap_or(0) {
                    match http::get(arg(1), &[]) {
                        Ok(r) => statuses.push(r.status.to_string()),
                        Err(e) => return Some(format!("ok {} then err {e}", statuses.join(","))),
                    }
                }
                format!("ok {}", statuses.join(","))
            }
            "log" => {
                log::info(arg(0));
                "logged".into()
            }
            _ => return None,
        })
    }

    fn action(act: Action) {
        let _ = messaging::post(
            &act.conversation,
            &format!("{} pressed {} on {}", act.user, act.button, act.message_id),
        );
    }

    fn http(req: HttpRequest) -> HttpResponse {
        // `POST /cmd/NAME` with the arguments as the body runs a command (relay scope has no other way in).
        if let Some(name) = req.path.strip_prefix("/cmd/") {
            let answer = Self::command(Command {
                name: name.into(),
                args: String::from_utf8_lossy(&req.body).into_owned(),
                conversation: String::new(),
                sender: String::new(),
            })
            .unwrap_or_else(|| format!("no command {name}"));
            return HttpResponse { status: 200, headers: vec![], body: answer.into_bytes() };
        }
        let body = format!(
            "{} {} ?{} {}",
            req.method,
            req.path,
            req.query,
            String::from_utf8_lossy(&req.body)
        );
        HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.into_bytes(),
        }
    }

    fn timer(t: TimerFired) {
        // Seen through kv where there is no one to post to (relay scope).
        let _ = kv::set_string("last-timer", &t.name);
        let _ = messaging::post("timers", &format!("fired {} {}", t.id, t.name));
    }
}

export_plugin!(Probe);
