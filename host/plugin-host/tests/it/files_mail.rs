//! `files` and `mail` (API 0.3.0) from the guest's side: each works only when requested and granted, the host's
//! limits and checks apply before the embedder is asked, and the embedder's answers reach the guest.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use imfree_plugin_host::host::HostServices;
use imfree_plugin_host::{
    FileDraft, FileInfo, FileStore, HostOptions, InboundMail, MailError, MailTransport, ManualClock, MemoryKv,
    NoAccounts, NoConversations, PluginHost, PluginIdentity, RecordingIncidents, SinkError,
};

use crate::support::*;

/// One file message `m1` whose descriptor claims `claimed` bytes and whose contents are `data`; sends are recorded.
struct Files {
    claimed: u64,
    data: Vec<u8>,
    reads: Mutex<u32>,
    sent: Mutex<Vec<(String, String, usize)>>,
}

#[async_trait]
impl FileStore for Files {
    async fn info(&self, _: &PluginIdentity, message_id: &str) -> Result<FileInfo, SinkError> {
        if message_id != "m1" {
            return Err(SinkError::Invalid(format!("{message_id} is not a file message")));
        }
        Ok(FileInfo {
            message_id: "m1".into(),
            conversation: "alice".into(),
            sender: "alice".into(),
            name: "notes.txt".into(),
            content_type: "text/plain".into(),
            size: self.claimed,
            voice: false,
            duration_ms: None,
            password_protected: false,
        })
    }
    async fn read(&self, _: &PluginIdentity, _: &str) -> Result<Vec<u8>, SinkError> {
        *self.reads.lock().unwrap() += 1;
        Ok(self.data.clone())
    }
    async fn send(&self, _: &PluginIdentity, file: &FileDraft) -> Result<String, SinkError> {
        self.sent.lock().unwrap().push((file.conversation.clone(), file.name.clone(), file.data.len()));
        Ok("f1".into())
    }
}

/// A mailbox of two messages (the second too big for the limit) and a record of what was sent and removed.
#[derive(Default)]
struct Mail {
    sent: Mutex<Vec<(Vec<String>, Vec<u8>)>>,
    removed: Mutex<Vec<String>>,
}

#[async_trait]
impl MailTransport for Mail {
    async fn address(&self, _: &PluginIdentity) -> Result<String, MailError> {
        Ok("bridge@example.org".into())
    }
    async fn send(&self, _: &PluginIdentity, recipients: &[String], message: &[u8]) -> Result<(), MailError> {
        self.sent.lock().unwrap().push((recipients.to_vec(), message.to_vec()));
        Ok(())
    }
    async fn fetch(&self, _: &PluginIdentity, max: u32) -> Result<Vec<InboundMail>, MailError> {
        let all = vec![
            InboundMail { id: "7".into(), raw: b"Subject: hi".to_vec() },
            InboundMail { id: "8".into(), raw: vec![b'x'; 5000] },
        ];
        Ok(all.into_iter().take(max as usize).collect())
    }
    async fn remove(&self, _: &PluginIdentity, ids: &[String]) -> Result<(), MailError> {
        self.removed.lock().unwrap().extend_from_slice(ids);
        Ok(())
    }
}

fn host_with(files: Arc<dyn FileStore>, mail: Arc<dyn MailTransport>) -> PluginHost {
    let services = HostServices {
        messages: Arc::new(RecordingSink::default()),
        kv: Arc::new(MemoryKv::new()),
        clock: Arc::new(ManualClock::new(1)),
        incidents: Arc::new(RecordingIncidents::new()),
        accounts: Arc::new(NoAccounts),
        conversations: Arc::new(NoConversations),
        files,
        mail,
    };
    PluginHost::new(HostOptions { max_instances: 4, ..HostOptions::default() }, services).unwrap()
}

async fn run(host: &PluginHost, plugin: &str, name: &str, args: &str) -> String {
    host.command(plugin, command(name, args)).await.unwrap().unwrap_or_default()
}

#[tokio::test]
async fn files_are_read_and_sent_within_the_limit_and_only_with_the_grant() {
    let files = Arc::new(Files { claimed: 60, data: vec![1; 60], reads: Mutex::new(0), sent: Mutex::new(Vec::new()) });
    let host = host_with(files.clone(), Arc::new(Mail::default()));
    host.load_bytes(probe_manifest("p", "files = true"), admin("grants = { files = true }\nlimits = { files-max-bytes = 100, cpu-ms-per-call = 10000, wall-ms-per-call = 20000 }"), guest("guest-probe"))
        .await
        .unwrap();
    host.load_bytes(probe_manifest("ungranted", "files = true"), admin(""), guest("guest-probe")).await.unwrap();
    host.load_bytes(probe_manifest("unasked", ""), admin("grants = { files = true }"), guest("guest-probe")).await.unwrap();

    assert_eq!(run(&host, "p", "file-info", "m1").await, "ok \"notes.txt text/plain 60\"");
    assert_eq!(run(&host, "p", "file-read", "m1").await, "ok 60");
    assert!(run(&host, "p", "file-info", "m2").await.starts_with("err invalid: m2 is not a file message"));
    assert_eq!(run(&host, "p", "file-send", "alice hello.txt hi").await, "ok \"f1\"");
    assert_eq!(*files.sent.lock().unwrap(), vec![("alice".to_owned(), "hello.txt".to_owned(), 2)]);
    assert!(run(&host, "p", "file-send", "alice ../etc/passwd x").await.starts_with("err invalid: a file name"));

    assert_eq!(run(&host, "ungranted", "file-read", "m1").await, "err denied: capability files is not granted by the administrator");
    assert_eq!(run(&host, "unasked", "file-read", "m1").await, "err denied: capability files is not requested in this plugin's plugin.toml");
    assert_eq!(*files.reads.lock().unwrap(), 1, "refused calls never reach the embedder");

    // A descriptor over the limit is refused before the download; one that understates its size, after it.
    let big = Arc::new(Files { claimed: 500, data: vec![1; 500], reads: Mutex::new(0), sent: Mutex::new(Vec::new()) });
    let liar = Arc::new(Files { claimed: 10, data: vec![1; 500], reads: Mutex::new(0), sent: Mutex::new(Vec::new()) });
    for (files, reads) in [(big, 0), (liar, 1)] {
        let host = host_with(files.clone(), Arc::new(Mail::default()));
        host.load_bytes(probe_manifest("p", "files = true"), admin("grants = { files = true }\nlimits = { files-max-bytes = 100, cpu-ms-per-call = 10000, wall-ms-per-call = 20000 }"), guest("guest-probe"))
            .await
            .unwrap();
        let got = run(&host, "p", "file-read", "m1").await;
        assert_eq!(got, "err quota exceeded: a file of 500 bytes exceeds this plugin's limit of 100 bytes (files-max-bytes)");
        assert_eq!(*files.reads.lock().unwrap(), reads);
    }
}

#[tokio::test]
async fn mail_goes_through_the_embedders_transport_with_checked_recipients_and_sizes() {
    let mail = Arc::new(Mail::default());
    let no_files = Arc::new(imfree_plugin_host::NoFiles);
    let host = host_with(no_files, mail.clone());
    host.load_bytes(probe_manifest("p", "mail = true"), admin("grants = { mail = true }\nlimits = { mail-max-bytes = 1000, cpu-ms-per-call = 10000, wall-ms-per-call = 20000 }"), guest("guest-probe"))
        .await
        .unwrap();
    host.load_bytes(probe_manifest("ungranted", "mail = true"), admin(""), guest("guest-probe")).await.unwrap();

    assert_eq!(run(&host, "p", "mail-address", "").await, "ok \"bridge@example.org\"");
    assert_eq!(run(&host, "p", "mail-send", "team@example.org Subject:hello").await, "ok ()");
    // An address that would smuggle an SMTP command, and a message over the limit, never reach the transport.
    let injected = run(&host, "p", "mail-send", "a@example.org\\r\\nRCPT:<x@evil.example> body").await;
    assert!(injected.starts_with("err invalid:") && injected.contains("is not an e-mail address"), "{injected}");
    let oversize = run(&host, "p", "mail-send", &format!("team@example.org {}", "x".repeat(1500))).await;
    assert_eq!(oversize, "err quota exceeded: a message of 1500 bytes exceeds this plugin's limit of 1000 bytes (mail-max-bytes)");
    assert_eq!(*mail.sent.lock().unwrap(), vec![(vec!["team@example.org".to_owned()], b"Subject:hello".to_vec())]);

    // Fetch: a message over the limit comes with its id and no bytes, so the plugin can remove it.
    assert_eq!(run(&host, "p", "mail-fetch", "10").await, "ok \"7:Subject: hi,8:\"");
    assert_eq!(run(&host, "p", "mail-remove", "7 8").await, "ok ()");
    assert_eq!(*mail.removed.lock().unwrap(), vec!["7", "8"]);

    assert_eq!(run(&host, "ungranted", "mail-address", "").await, "err denied: capability mail is not granted by the administrator");
}
