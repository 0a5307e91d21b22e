//! Every hook reaches the plugin and its result comes back.

use imfree_plugin_host::*;

use crate::support::*;

const ALL: &str = "kv = true\nmessaging = true\ntimers = true";
const GRANT_ALL: &str = "grants = { kv = true, messaging = true, timers = true }";

#[tokio::test]
async fn every_hook_is_dispatched() {
    let h = harness();
    h.load_probe("probe", ALL, GRANT_ALL).await;

    // incoming-message
    assert!(h.host.incoming_message(&message("hi")).await.is_empty());
    // outgoing-message: pass, modify (id/conversation kept), reject
    assert_eq!(
        h.host.outgoing_message(message("fine")).await,
        OutgoingOutcome::Send(message("fine"))
    );
    match h.host.outgoing_message(message("make upper")).await {
        OutgoingOutcome::Send(m) => {
            assert_eq!(m.body, "MAKE UPPER");
            assert_eq!(
                m.conversation, "c1",
                "a filter cannot move a message to another conversation"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.host.outgoing_message(message("please reject")).await,
        OutgoingOutcome::Reject {
            plugin: "probe".into(),
            reason: "probe rejects".into()
        }
    );
    // relay-envelope
    assert_eq!(h.host.relay_envelope(&envelope(10)).await, EnvelopeOutcome::Deliver);
    assert_eq!(
        h.host.relay_envelope(&envelope(5000)).await,
        EnvelopeOutcome::Reject {
            plugin: "probe".into(),
            reason: "too big for c1".into()
        }
    );
    // status-change
    let change = StatusChange {
        user: "bob".into(),
        previous: Presence::Offline,
        current: Presence::Online,
        status_text: None,
        at: 5,
    };
    assert!(h.host.status_change(&change).await.is_empty());
    // command
    assert_eq!(h.cmd("probe", "config", "greeting").await, "Some(\"hello\")");
    assert_eq!(h.host.command("probe", command("unknown", "")).await.unwrap(), None);
    // action
    h.host
        .action(
            "probe",
            Action {
                message_id: "m9".into(),
                conversation: "c1".into(),
                button: "yes".into(),
                user: "bob".into(),
            },
        )
        .await
        .unwrap();
    // http
    let resp = h
        .host
        .http(
            "probe",
            HttpRequest {
                method: "POST".into(),
                path: "/hook".into(),
                query: "a=1".into(),
                headers: vec![],
                body: b"data".to_vec(),
            },
        )
        .await;
    assert_eq!(
        (resp.status, String::from_utf8(resp.body).unwrap()),
        (200, "POST /hook ?a=1 data".to_string())
    );
    // timer
    assert!(h.cmd("probe", "timer-once", "tea 500").await.starts_with("ok "));
    assert_eq!(h.host.fire_due_timers().await, 0, "not due yet");
    h.clock.advance(500);
    assert_eq!(h.host.fire_due_timers().await, 1);
    assert_eq!(h.host.fire_due_timers().await, 0, "one-shot timers fire once");

    let texts = h.sink.texts();
    assert_eq!(
        texts,
        vec![
            "msg-1: seen hi".to_string(),
            "bob Presence::Offline->Presence::Online".to_string(),
            "bob pressed yes on m9".to_string(),
            "fired 1 tea".to_string(),
        ]
    );
    assert!(h.sink.sent().iter().all(|s| s.bot == "probe"));
    assert!(h.incidents.all().is_empty(), "{:?}", h.incidents.all());
}

#[tokio::test]
async fn hooks_not_listed_in_the_manifest_are_never_called() {
    let h = harness();
    let manifest = PluginManifest::parse(
        "name = \"quiet\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\nscopes = [\"relay\", \"bot\"]\nhooks = [\"command\"]",
    )
    .unwrap();
    h.host
        .load_bytes(manifest, admin(""), guest("guest-probe"))
        .await
        .unwrap();
    assert_eq!(
        h.host.outgoing_message(message("please reject")).await,
        OutgoingOutcome::Send(message("please reject"))
    );
    assert_eq!(
        h.host.relay_envelope(&envelope(1 << 20)).await,
        EnvelopeOutcome::Deliver
    );
    let req = HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![],
        body: vec![],
    };
    assert_eq!(h.host.http("quiet", req.clone()).await.status, 404);
    assert_eq!(h.host.http("nobody", req).await.status, 404);
    assert!(h.host.incoming_message(&message("hi")).await.is_empty());
    assert!(h.sink.sent().is_empty());
}

#[tokio::test]
async fn repeating_timers_fire_until_cancelled() {
    let h = harness();
    h.load_probe("probe", ALL, GRANT_ALL).await;
    let id = h.cmd("probe", "timer-every", "tick 100").await;
    let id = id.trim_start_matches("ok ").to_string();
    for _ in 0..3 {
        h.clock.advance(100);
        assert_eq!(h.host.fire_due_timers().await, 1);
    }
    assert_eq!(h.cmd("probe", "timer-cancel", &id).await, "ok true");
    h.clock.advance(100);
    assert_eq!(h.host.fire_due_timers().await, 0);
    assert_eq!(h.sink.texts().len(), 3);
    assert_eq!(
        h.cmd("probe", "timer-every", "fast 1").await.split(':').next().unwrap(),
        "err invalid"
    );
}
