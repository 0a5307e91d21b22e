//! A component that imports an interface the host does not provide: loading it must fail cleanly.

wit_bindgen::generate!({
    path: ["../../../../../wit/imfree-plugin@0.1.0", "wit"],
    world: "evil:host/bad-import",
    generate_all,
});

struct Bad;

impl Guest for Bad {
    fn init() -> Result<(), String> {
        evil::host::admin::shutdown_host();
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
    fn command(_cmd: Command) -> Option<String> {
        None
    }
    fn action(_act: Action) {}
    fn http(_req: HttpRequest) -> HttpResponse {
        HttpResponse {
            status: 404,
            headers: vec![],
            body: vec![],
        }
    }
    fn timer(_t: TimerFired) {}
}

export!(Bad);
