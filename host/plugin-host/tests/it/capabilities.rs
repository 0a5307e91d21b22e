//! Each capability works only when the manifest asks AND the grant allows; refusals reach the guest as `denied`.

use std::sync::Arc;

use imfree_plugin_host::*;

use crate::support::*;

/// One host call per capability, as probe commands.
const CALLS: &[(&str, &str, &str)] = &[
    ("kv", "kv-set", "k v"),
    ("messaging", "post", "c1 hello"),
    ("messaging", "card", "c1"),
    ("messaging", "react", "c1 m1 👍"),
    ("timers", "timer-once", "t 10"),
];

#[tokio::test]
async fn capabilities_need_both_request_and_grant() {
    for (cap, cmd, args) in CALLS {
        for (asked, granted) in [(true, true), (false, true), (true, false), (false, false)] {
            let h = harness();
            let request = if asked { format!("{cap} = true") } else { String::new() };
            let grant = if granted {
                format!("grants = {{ {cap} = true }}")
            } else {
                String::new()
            };
            h.load_probe("probe", &request, &grant).await;
            let got = h.cmd("probe", cmd, args).await;
            match (asked, granted) {
                (true, true) => assert!(got.starts_with("ok"), "{cap} {cmd}: {got}"),
                (false, _) => assert_eq!(
                    got,
                    format!("err denied: capability {cap} is not requested in this plugin's plugin.toml"),
                    "{cmd}"
                ),
                (true, false) => {
                    assert_eq!(
                        got,
                        format!("err denied: capability {cap} is not granted by the administrator")
                    )
                }
            }
            assert!(h.incidents.all().is_empty(), "a refusal is not an incident");
            if !(asked && granted) {
                assert!(h.sink.sent().is_empty());
                assert_eq!(h.host.timers().count("probe"), 0);
            }
        }
    }
}

#[tokio::test]
async fn kv_roundtrip_namespaces_and_quota() {
    let kv = Arc::new(MemoryKv::new());
    let h = harness_with(kv.clone(), None);
    let grant = "grants = { kv = true }\nlimits = { kv-quota-bytes = 100 }";
    h.load_probe("one", "kv = true", grant).await;
    h.load_probe("two", "kv = true", grant).await;
    assert_eq!(h.cmd("one", "kv-set", "colour blue").await, "ok ()");
    assert_eq!(h.cmd("one", "kv-get", "colour").await, "ok Some(\"blue\")");
    assert_eq!(
        h.cmd("two", "kv-get", "colour").await,
        "ok None",
        "namespaces are per plugin"
    );
    assert_eq!(kv.get("one", "colour").await.unwrap(), Some(b"blue".to_vec()));
    assert_eq!(h.cmd("one", "kv-list", "col").await, "ok [\"colour\"]");
    assert_eq!(h.cmd("one", "kv-del", "colour").await, "ok ()");
    assert_eq!(h.cmd("one", "kv-get", "colour").await, "ok None");
    assert_eq!(h.cmd("one", "kv-fill", "a 50").await, "ok ()");
    assert_eq!(
        h.cmd("one", "kv-fill", "a 60").await,
        "ok ()",
        "replacing a value counts the new size only"
    );
    assert!(h.cmd("one", "kv-fill", "b 60").await.starts_with("err quota exceeded"));
    assert_eq!(h.cmd("two", "kv-fill", "b 60").await, "ok ()", "quota is per plugin");
}

#[tokio::test]
async fn messaging_sends_as_the_bot_within_limits() {
    let h = harness();
    h.load_probe(
        "bot",
        "messaging = true",
        "grants = { messaging = true }\nlimits = { max-output-bytes = 100 }",
    )
    .await;
    assert_eq!(h.cmd("bot", "post", "c1 hi").await, "ok \"m1\"");
    assert_eq!(h.cmd("bot", "reply", "c1 m1 yes").await, "ok \"m2\"");
    assert_eq!(h.cmd("bot", "react", "c1 m1 🎉").await, "ok ()");
    assert_eq!(h.cmd("bot", "card", "c1").await, "ok \"m4\"");
    let long = "x".repeat(120);
    assert_eq!(
        h.cmd("bot", "post", &format!("c1 {long}")).await,
        "err invalid: message of 120 bytes exceeds the limit of 100 bytes"
    );
    let sent = h.sink.sent();
    assert_eq!(sent.len(), 4);
    assert_eq!(
        sent[1],
        Sent {
            bot: "bot".into(),
            kind: "reply",
            conversation: "c1".into(),
            text: "m1: yes".into()
        }
    );
}

#[tokio::test]
async fn cards_carry_buttons_and_presses_come_back_as_actions() {
    let h = harness();
    h.load_probe("bot", "messaging = true", "grants = { messaging = true }")
        .await;
    assert_eq!(h.cmd("bot", "card", "c1").await, "ok \"m1\"");
    assert_eq!(h.sink.sent()[0].text, "Deploy? [yes,no]");
    let press = Action {
        message_id: "m1".into(),
        conversation: "c1".into(),
        button: "no".into(),
        user: "carol".into(),
    };
    h.host.action("bot", press).await.unwrap();
    assert_eq!(h.sink.texts()[1], "carol pressed no on m1");
}

#[tokio::test]
async fn config_and_log_are_always_available_and_private() {
    let h = harness();
    h.load_probe("one", "", "settings = { greeting = \"hej\" }").await;
    h.load_probe("two", "", "").await;
    assert_eq!(h.cmd("one", "config", "greeting").await, "Some(\"hej\")");
    assert_eq!(h.cmd("two", "config", "greeting").await, "Some(\"hello\")");
    assert_eq!(h.cmd("one", "config", "missing").await, "None");
    assert_eq!(
        h.cmd("one", "config-all", "").await,
        "[(\"fail-init\", \"false\"), (\"greeting\", \"hej\")]"
    );
    assert_eq!(h.cmd("one", "log", "hello").await, "logged");
}

#[tokio::test]
async fn timers_respect_the_per_plugin_limit() {
    let h = harness();
    h.load_probe(
        "t",
        "timers = true",
        "grants = { timers = true }\nlimits = { max-timers = 2 }",
    )
    .await;
    assert!(h.cmd("t", "timer-once", "a 1000").await.starts_with("ok"));
    assert!(h.cmd("t", "timer-once", "b 1000").await.starts_with("ok"));
    assert!(
        h.cmd("t", "timer-once", "c 1000")
            .await
            .starts_with("err quota exceeded")
    );
    assert_eq!(h.cmd("t", "timer-cancel", "999").await, "ok false");
    assert!(h.host.unload("t"));
    assert_eq!(h.host.timers().count("t"), 0, "unloading drops the plugin's timers");
}

#[tokio::test]
async fn plugin_list_shows_effective_capabilities() {
    let h = harness();
    h.load_probe(
        "p",
        "kv = true\nmessaging = true",
        "grants = { kv = true, timers = true }",
    )
    .await;
    let list = h.host.plugins();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].capabilities, vec!["kv".to_string()]);
    assert_eq!(list[0].version, "1.2.3");
    assert!(!list[0].quarantined);
}
