// The body of the legacy guests (`guest-legacy` on API 0.1.0, `guest-legacy-v2` on 0.2.0): the same plugin built
// against each older API, included after that version's bindings.

use imfree::plugin::{config, kv, log, messaging};

struct Legacy;

impl Guest for Legacy {
    fn init() -> Result<(), String> {
        log::log(log::Level::Info, &format!("legacy plugin (api {API}) ready"));
        Ok(())
    }
    fn incoming_message(_msg: Message) {}
    fn outgoing_message(_msg: Message) -> Verdict {
        Verdict::Pass
    }
    fn relay_envelope(_env: Envelope) -> EnvelopeVerdict {
        EnvelopeVerdict::Pass
    }
    fn status_change(_change: StatusChange) {}
    fn command(cmd: Command) -> Option<String> {
        let args: Vec<&str> = cmd.args.splitn(2, ' ').collect();
        let arg = |i: usize| args.get(i).copied().unwrap_or("");
        Some(match cmd.name.as_str() {
            "kv" => match kv::set(arg(0), arg(1).as_bytes()).and_then(|()| kv::get(arg(0))) {
                Ok(v) => format!("ok {}", String::from_utf8_lossy(&v.unwrap_or_default())),
                Err(e) => format!("err {e:?}"),
            },
            "post" => match messaging::post(arg(0), arg(1)) {
                Ok(id) => format!("ok {id}"),
                Err(e) => format!("err {e:?}"),
            },
            "config" => format!("{:?}", config::get(arg(0))),
            _ => return None,
        })
    }
    fn action(_act: Action) {}
    fn http(_req: HttpRequest) -> HttpResponse {
        HttpResponse { status: 404, headers: vec![], body: vec![] }
    }
    fn timer(_t: TimerFired) {}
}

export!(Legacy);
