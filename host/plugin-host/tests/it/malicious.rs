//! The malicious-plugin corpus: in every case the host stays up, the incident names plugin and reason, the failure
//! policy is applied, and other plugins keep working.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imfree_plugin_host::*;

use crate::support::*;

const HOOKS: &str = r#"["incoming-message", "outgoing-message", "relay-envelope", "status-change", "command", "action", "http", "timer"]"#;

fn bad_manifest(name: &str) -> PluginManifest {
    PluginManifest::parse(&format!(
        r#"
        name = "{name}"
        version = "6.6.6"
        api = "0.3.0"
        scopes = ["relay", "bot"]
        hooks = {HOOKS}
        [capabilities]
        kv = true
        [settings.mode]
        type = "string"
        default = "ok"
        "#
    ))
    .unwrap()
}

async fn load_bad(h: &Harness, name: &str, mode: &str, extra: &str) {
    let config = admin(&format!(
        "settings = {{ mode = \"{mode}\" }}\ngrants = {{ kv = true }}\n{extra}"
    ));
    h.host
        .load_bytes(bad_manifest(name), config, guest("guest-misbehave"))
        .await
        .expect("misbehave loads");
}

/// The healthy neighbour still answers, and its filter still runs.
async fn neighbour_still_works(h: &Harness) {
    assert_eq!(h.cmd("probe", "config", "greeting").await, "Some(\"hello\")");
}

/// Call `outgoing-message` and check the failure policy and the incident.
async fn assert_contained(h: &Harness, name: &str, kind: IncidentKind) {
    let started = Instant::now();
    let outcome = h.host.outgoing_message(message("hello")).await;
    assert!(started.elapsed() < Duration::from_secs(10), "contained promptly");
    assert_eq!(
        outcome,
        OutgoingOutcome::Reject {
            plugin: name.into(),
            reason: format!("the {name} filter is unavailable, so the message was not sent")
        },
        "outgoing filters fail closed by default"
    );
    let incidents = h.incidents.of(name);
    let last = incidents.last().expect("an incident was reported");
    assert_eq!(
        (last.kind, last.hook, last.version.as_str()),
        (kind, Some(Hook::OutgoingMessage), "6.6.6"),
        "{last}"
    );
    assert!(!last.reason.is_empty());
    neighbour_still_works(h).await;
}

#[tokio::test]
async fn infinite_loop_hits_the_cpu_limit() {
    let h = harness();
    h.load_probe("probe", "", "").await;
    load_bad(&h, "spinner", "loop", "limits = { cpu-ms-per-call = 50 }").await;
    assert_contained(&h, "spinner", IncidentKind::CpuLimit).await;
    assert!(h.incidents.of("spinner")[0].reason.contains("CPU limit of 50 ms"));
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let h = harness();
    h.load_probe("probe", "", "").await;
    load_bad(&h, "hoarder", "memory-bomb", "limits = { memory-mib = 32 }").await;
    assert_contained(&h, "hoarder", IncidentKind::MemoryLimit).await;
}

#[tokio::test]
async fn deep_recursion_traps_on_stack_overflow() {
    let h = harness();
    h.load_probe("probe", "", "").await;
    load_bad(&h, "recurser", "recursion", "").await;
    assert_contained(&h, "recurser", IncidentKind::Trap).await;
    assert!(
        h.incidents.of("recurser")[0].reason.contains("call stack exhausted"),
        "{:?}",
        h.incidents.of("recurser")
    );
}

#[tokio::test]
async fn slow_host_calls_hit_the_wall_clock_limit() {
    let kv = Arc::new(SlowKv {
        inner: MemoryKv::new(),
        delay: Duration::from_millis(20),
    });
    let h = harness_with(kv, None);
    h.load_probe("probe", "", "").await;
    // A generous CPU budget, so it is the wall clock (time spent in host calls) that stops it.
    load_bad(
        &h,
        "staller",
        "slow-host-calls",
        "limits = { cpu-ms-per-call = 60000, wall-ms-per-call = 300 }",
    )
    .await;
    assert_contained(&h, "staller", IncidentKind::Timeout).await;
}

#[tokio::test]
async fn huge_return_values_are_refused() {
    let h = harness();
    h.load_probe("probe", "", "").await;
    load_bad(&h, "bloater", "huge-return", "").await;
    assert_contained(&h, "bloater", IncidentKind::OutputTooLarge).await;
    let err = h.host.command("bloater", command("x", "")).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Incident(IncidentKind::OutputTooLarge));
    let req = HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![],
        body: vec![],
    };
    assert_eq!(h.host.http("bloater", req).await.status, 503);
    assert_eq!(
        h.host.relay_envelope(&envelope(1)).await,
        EnvelopeOutcome::Reject {
            plugin: "bloater".into(),
            reason: "the bloater filter is unavailable".into()
        }
    );
}

#[tokio::test]
async fn a_panic_in_every_hook_is_contained() {
    let h = harness();
    h.load_probe("probe", "", "").await;
    load_bad(
        &h,
        "panicker",
        "panic",
        "failure = { quarantine-after = 0, backoff-initial-ms = 0 }",
    )
    .await;
    assert_contained(&h, "panicker", IncidentKind::Trap).await;
    let failures = h.host.incoming_message(&message("hi")).await;
    assert_eq!(failures.len(), 1, "only the panicking plugin fails");
    let change = StatusChange {
        user: "u".into(),
        previous: Presence::Away,
        current: Presence::Busy,
        status_text: None,
        at: 1,
    };
    assert_eq!(h.host.status_change(&change).await.len(), 1);
    assert!(h.host.command("panicker", command("x", "")).await.is_err());
    let act = Action {
        message_id: "m".into(),
        conversation: "c".into(),
        button: "b".into(),
        user: "u".into(),
    };
    assert!(h.host.action("panicker", act).await.is_err());
    let req = HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![],
        body: vec![],
    };
    assert_eq!(h.host.http("panicker", req).await.status, 503);
    assert!(matches!(
        h.host.relay_envelope(&envelope(1)).await,
        EnvelopeOutcome::Reject { .. }
    ));
    assert!(
        h.host
            .call(
                "panicker",
                host::HookCall::Timer(TimerFired {
                    id: 1,
                    name: "t".into()
                })
            )
            .await
            .is_err()
    );
    let incidents = h.incidents.of("panicker");
    let hooks: std::collections::BTreeSet<_> = incidents.iter().filter_map(|i| i.hook).collect();
    assert_eq!(hooks.len(), 8, "one incident per hook: {incidents:?}");
    assert!(
        incidents
            .iter()
            .all(|i| i.kind == IncidentKind::Trap && i.reason.contains("misbehave panics on purpose"))
    );
    neighbour_still_works(&h).await;
}

#[tokio::test]
async fn fail_open_lets_messages_through() {
    let h = harness();
    load_bad(&h, "panicker", "panic", "failure = { policy = \"fail-open\" }").await;
    assert_eq!(
        h.host.outgoing_message(message("hello")).await,
        OutgoingOutcome::Send(message("hello"))
    );
    assert_eq!(h.host.relay_envelope(&envelope(1)).await, EnvelopeOutcome::Deliver);
    assert_eq!(h.incidents.of("panicker").len(), 2);
}

#[tokio::test]
async fn a_fresh_instance_follows_a_trap_and_kv_state_survives() {
    let h = harness();
    load_bad(&h, "flaky", "panic-odd", "").await;
    // Calls alternate: odd ones panic (instance dropped), even ones succeed on a fresh instance.
    for round in 0..3 {
        assert!(
            h.host.command("flaky", command("x", "")).await.is_err(),
            "round {round}"
        );
        assert_eq!(
            h.host.command("flaky", command("x", "")).await.unwrap().as_deref(),
            Some("fine")
        );
    }
    assert_eq!(h.incidents.of("flaky").len(), 3);
    assert_eq!(h.host.plugins()[0].health.consecutive_failures, 0);
}

#[tokio::test]
async fn repeated_failures_back_off_then_quarantine() {
    let h = harness();
    h.load_probe("probe", "", "").await;
    load_bad(
        &h,
        "crasher",
        "panic",
        "failure = { backoff-initial-ms = 1000, quarantine-after = 3 }",
    )
    .await;
    let call = || h.host.command("crasher", command("x", ""));
    assert_eq!(
        call().await.unwrap_err().kind,
        FailureKind::Incident(IncidentKind::Trap)
    );
    assert_eq!(
        call().await.unwrap_err().kind,
        FailureKind::Incident(IncidentKind::Trap),
        "first failure retries at once"
    );
    let until = h.clock.now_ms() + 1000;
    assert_eq!(
        call().await.unwrap_err().kind,
        FailureKind::BackingOff { until_ms: until }
    );
    assert_eq!(h.incidents.of("crasher").len(), 2, "skipped calls are not incidents");
    h.clock.advance(1000);
    assert_eq!(
        call().await.unwrap_err().kind,
        FailureKind::Incident(IncidentKind::Trap)
    );
    assert_eq!(call().await.unwrap_err().kind, FailureKind::Quarantined);
    let incidents = h.incidents.of("crasher");
    assert_eq!(incidents.last().unwrap().kind, IncidentKind::Quarantined);
    assert!(h.host.plugins().iter().any(|p| p.name == "crasher" && p.quarantined));
    // An administrator's reset lets it run again.
    assert!(h.host.reset("crasher"));
    assert_eq!(
        call().await.unwrap_err().kind,
        FailureKind::Incident(IncidentKind::Trap)
    );
    neighbour_still_works(&h).await;
}

#[tokio::test]
async fn a_component_importing_an_unknown_interface_does_not_load() {
    let h = harness();
    let err = h
        .host
        .load_bytes(bad_manifest("importer"), admin(""), guest("guest-bad-import"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("importer 6.6.6") && text.contains("evil:host/admin"),
        "{text}"
    );
    let incidents = h.incidents.of("importer");
    assert_eq!(incidents.len(), 1);
    assert_eq!((incidents[0].kind, incidents[0].hook), (IncidentKind::LoadFailed, None));
    assert!(h.host.plugins().is_empty());
}

#[tokio::test]
async fn a_panicking_init_does_not_load() {
    let h = harness();
    let config = admin("settings = { mode = \"panic-init\" }");
    let err = h
        .host
        .load_bytes(bad_manifest("starter"), config, guest("guest-misbehave"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("init panics on purpose"), "{err}");
    assert_eq!(h.incidents.of("starter")[0].kind, IncidentKind::InitFailed);
    let err = h
        .host
        .load_bytes(bad_manifest("junk"), admin(""), b"\0asm not really".to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a valid component"), "{err}");
}

#[tokio::test]
async fn many_misbehaving_plugins_at_once_leave_the_rest_working() {
    let h = harness();
    h.load_probe("probe", "", "").await;
    load_bad(
        &h,
        "a-loop",
        "loop",
        "limits = { cpu-ms-per-call = 30 }\nfailure = { policy = \"fail-open\" }",
    )
    .await;
    load_bad(
        &h,
        "b-bomb",
        "memory-bomb",
        "limits = { memory-mib = 16 }\nfailure = { policy = \"fail-open\" }",
    )
    .await;
    load_bad(&h, "c-panic", "panic", "failure = { policy = \"fail-open\" }").await;
    for _ in 0..3 {
        // probe subscribes too; with all the broken filters failing open, probe's verdict decides.
        assert_eq!(
            h.host.outgoing_message(message("ok")).await,
            OutgoingOutcome::Send(message("ok"))
        );
        assert!(
            matches!(h.host.outgoing_message(message("reject")).await, OutgoingOutcome::Reject { plugin, .. } if plugin == "probe")
        );
    }
    neighbour_still_works(&h).await;
}
