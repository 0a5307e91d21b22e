//! Every released API version loads side by side: plugins built against `imfree:plugin@0.1.0` and `@0.2.0` keep
//! working after 0.3.0, and each version's additions (`messaging.send`, `conversations`, `accounts`; `files`,
//! `mail`) are capability-checked like the rest.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use imfree_plugin_host::host::HostServices;
use imfree_plugin_host::{
    AccountDirectory, AccountError, ComponentInspector, ExternalIdentity, HostOptions, ManualClock, MemoryKv,
    NoConversations, PluginHost, PluginManifest, Profile, RecordingIncidents,
};

use crate::support::*;

fn legacy_manifest(api: &str) -> PluginManifest {
    PluginManifest::parse(&format!(
        r#"
        name = "legacy"
        version = "0.9.0"
        api = "{api}"
        scopes = ["bot"]
        hooks = ["command"]
        [capabilities]
        kv = true
        messaging = true
        [settings.motto]
        type = "string"
        default = "old but gold"
        "#
    ))
    .unwrap()
}

#[tokio::test]
async fn plugins_built_against_0_1_0_and_0_2_0_load_and_their_host_calls_work() {
    for (guest_name, api) in [("guest-legacy", "0.1.0"), ("guest-legacy-v2", "0.2.0")] {
        let report = ComponentInspector::new(&HostOptions::default()).unwrap().inspect(&guest(guest_name));
        assert_eq!(report.api_versions.iter().collect::<Vec<_>>(), vec![api], "{guest_name}");
        assert!(report.ok(), "{guest_name}: {:?}", report.problems);

        let h = harness();
        h.host
            .load_bytes(legacy_manifest(api), admin("grants = { kv = true, messaging = true }"), guest(guest_name))
            .await
            .unwrap_or_else(|e| panic!("a {api} plugin loads: {e}"));
        assert_eq!(h.cmd("legacy", "kv", "colour blue").await, "ok blue");
        assert_eq!(h.cmd("legacy", "post", &format!("c1 hello from {api}")).await, "ok m1");
        assert_eq!(h.sink.texts(), vec![format!("hello from {api}")]);
        assert_eq!(h.cmd("legacy", "config", "motto").await, "Some(\"old but gold\")");

        // Its grants are checked like anyone's: without messaging the post is refused, not trapped.
        let h = harness();
        h.host.load_bytes(legacy_manifest(api), admin("grants = { kv = true }"), guest(guest_name)).await.unwrap();
        let refused = h.cmd("legacy", "post", "c1 nope").await;
        assert!(refused.starts_with("err") && refused.contains("Denied"), "{api}: refused without the grant: {refused}");
        assert!(h.sink.texts().is_empty());
    }
}

#[tokio::test]
async fn send_admits_only_text_types_within_the_output_limit() {
    let h = harness();
    h.load_probe("p", "messaging = true", "grants = { messaging = true }").await;
    assert_eq!(h.cmd("p", "send-typed", "c1 text/plain words").await, "ok \"m1\"");
    assert_eq!(h.sink.texts(), vec!["words"]);
    // The test sink is a plain one: it cannot send markdown, and says so.
    assert!(h.cmd("p", "send-markdown", "c1 **bold**").await.starts_with("err invalid"), "a sink without markdown refuses it");
    let refused = h.cmd("p", "send-typed", "c1 application/json {}").await;
    assert!(refused.starts_with("err invalid") && refused.contains("text/markdown"), "{refused}");
    assert_eq!(h.sink.texts().len(), 1, "nothing else was sent");
}

#[tokio::test]
async fn conversations_ride_on_messaging_and_accounts_need_their_own_grant() {
    let h = harness();
    h.load_probe("p", "kv = true", "grants = { kv = true }").await;
    assert!(h.cmd("p", "members", "c1").await.starts_with("err denied"));
    assert!(h.cmd("p", "account-exists", "alice").await.starts_with("err denied"));

    let h = harness();
    h.load_probe("p", "messaging = true\naccounts = true", "grants = { messaging = true }").await;
    // Granted, but this scope has no conversations: the embedder's refusal reaches the guest.
    assert!(h.cmd("p", "members", "c1").await.starts_with("err invalid"));
    let refused = h.cmd("p", "account-exists", "alice").await;
    assert!(refused.starts_with("err denied") && refused.contains("not granted"), "{refused}");
}

/// An account directory that remembers the calls it got.
#[derive(Default)]
struct Accounts(Mutex<Vec<String>>);

#[async_trait]
impl AccountDirectory for Accounts {
    async fn find_linked(&self, i: &ExternalIdentity) -> Result<Option<String>, AccountError> {
        self.0.lock().unwrap().push(format!("find {} {}", i.issuer, i.subject));
        Ok(None)
    }
    async fn exists(&self, name: &str) -> Result<bool, AccountError> {
        self.0.lock().unwrap().push(format!("exists {name}"));
        Ok(name == "alice")
    }
    async fn provision(&self, name: &str, _: &ExternalIdentity, _: &Profile) -> Result<(), AccountError> {
        Err(AccountError::Invalid(format!("{name} is taken")))
    }
    async fn link(&self, _: &str, _: &ExternalIdentity) -> Result<(), AccountError> {
        Ok(())
    }
    async fn update_profile(&self, _: &str, _: &Profile) -> Result<(), AccountError> {
        Ok(())
    }
    async fn issue_login_code(&self, name: &str, _: &str) -> Result<String, AccountError> {
        Ok(format!("code-for-{name}"))
    }
    async fn revoke_sessions(&self, _: &str) -> Result<u32, AccountError> {
        Ok(0)
    }
}

#[tokio::test]
async fn accounts_reach_the_embedders_directory_when_requested_and_granted() {
    let accounts = Arc::new(Accounts::default());
    let services = HostServices {
        messages: Arc::new(RecordingSink::default()),
        kv: Arc::new(MemoryKv::new()),
        clock: Arc::new(ManualClock::new(1)),
        incidents: Arc::new(RecordingIncidents::new()),
        accounts: accounts.clone(),
        conversations: Arc::new(NoConversations),
        files: Arc::new(imfree_plugin_host::NoFiles),
        mail: Arc::new(imfree_plugin_host::NoMail),
    };
    let host = PluginHost::new(HostOptions { max_instances: 4, ..HostOptions::default() }, services).unwrap();
    host.load_bytes(probe_manifest("sso-ish", "accounts = true"), admin("grants = { accounts = true }"), guest("guest-probe"))
        .await
        .unwrap();
    let run = |args: &'static str| {
        let host = &host;
        async move { host.command("sso-ish", command("account-exists", args)).await.unwrap().unwrap_or_default() }
    };
    assert_eq!(run("alice").await, "ok true");
    assert_eq!(run("bob").await, "ok false");
    // The host checks sizes before the embedder sees anything.
    assert!(run("").await.starts_with("err invalid"));
    assert_eq!(*accounts.0.lock().unwrap(), vec!["exists alice", "exists bob"]);
}
