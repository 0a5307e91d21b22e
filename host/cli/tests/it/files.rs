//! End-to-end encrypted files through the real relay and real client processes: several users and devices, groups,
//! voice messages, passwords, quota and size limits, a tampered chunk, expiry, and a 200 MiB file that survives a
//! killed client and a restarted relay and arrives bit-identical while the relay's disk never holds its name or
//! contents.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::*;
use crate::e2e::assert_relay_never_saw;
use crate::linking::{link, login};

/// A relay with a `[files]` section (and nothing else changed).
fn relay_with(dir: &Path, files: &str) -> RelayProc {
    let config = dir.join("relay.toml");
    std::fs::write(&config, format!("[files]\n{files}\n")).unwrap();
    RelayProc::start(&dir.join("relay"), Some(&config))
}

fn sha256_of(path: &Path) -> [u8; 32] {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().into()
}

/// `len` bytes of a cheap deterministic stream with `canary` written in every 4 MiB.
fn write_file(path: &Path, len: usize, seed: u64, canary: &str) {
    let mut data = vec![0u8; len];
    let mut x = seed | 1;
    for word in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
    let mut at = 1000;
    while at + canary.len() < len {
        data[at..at + canary.len()].copy_from_slice(canary.as_bytes());
        at += 4 << 20;
    }
    std::fs::write(path, data).unwrap();
}

/// The single line `file send` printed: the message id.
pub(crate) fn sent_id(out: &str) -> String {
    let id = out.trim().to_owned();
    assert_eq!(id.len(), 26, "a message id: {out:?}");
    id
}

fn recv(home: &Path) -> Vec<serde_json::Value> {
    parse_json_lines(&ok(home, &["recv", "--json"]))
}

fn file_message<'a>(messages: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    messages.iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("message {id} not received: {messages:?}"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn chunk_dirs(relay: &RelayProc) -> Vec<PathBuf> {
    std::fs::read_dir(relay.data.join("files")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

fn chunks_stored(relay: &RelayProc) -> usize {
    chunk_dirs(relay)
        .iter()
        .map(|d| std::fs::read_dir(d).map(|e| e.flatten().filter(|f| !f.file_name().to_string_lossy().ends_with(".part")).count()).unwrap_or(0))
        .sum()
}

fn spawn_client(home: &Path, args: &[&str]) -> Child {
    Command::new(bin())
        .arg("client")
        .arg("--home")
        .arg(home)
        .args(args)
        .env("IMFREE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imfree client")
}

fn wait_long(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A WAV header and `ms` milliseconds of 16 kHz mono 16-bit silence.
pub(crate) fn wav(ms: u32) -> Vec<u8> {
    let data = 16_000 * 2 * ms / 1000;
    let mut v = b"RIFF".to_vec();
    v.extend_from_slice(&(36 + data).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&16_000u32.to_le_bytes());
    v.extend_from_slice(&32_000u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data.to_le_bytes());
    v.resize(v.len() + data as usize, 0);
    v
}

#[test]
fn files_reach_every_device_and_group_member_with_passwords_and_voice() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob, bob2, carol) = (dir.path().join("alice"), dir.path().join("bob"), dir.path().join("bob-phone"), dir.path().join("carol"));
    register(&relay, &alice, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-123");
    register(&relay, &carol, "carol", "carol-password-1");
    login(&relay, &bob2, "bob", "bob-password-123", "bob-phone");
    link(&bob2, &bob);

    // A file to bob reaches both of his devices; the relay holds neither its name nor its contents.
    let name_canary = "NAMECANARY-91c2e7-quarterly-plans";
    let content_canary = "CONTENTCANARY-5d41402abc4b2a76b9719d911017c592";
    let path = dir.path().join(format!("{name_canary}.txt"));
    write_file(&path, 300_000, 7, content_canary);
    let id = sent_id(&ok(&alice, &["file", "send", "bob", path.to_str().unwrap(), "--chunk-size", "65536"]));
    for home in [&bob, &bob2] {
        let got = recv(home);
        let m = file_message(&got, &id);
        assert_eq!(m["mime"], "application/vnd.imfree.file+json");
        assert_eq!(m["file"]["name"], format!("{name_canary}.txt"));
        assert_eq!(m["file"]["size"], 300_000);
        assert_eq!(m["file"]["mime"], "text/plain");
        assert_eq!(m["file"]["id"].as_str().unwrap().len(), 32);
        assert!(m["file"].get("key").is_none() && !m["body"].as_str().unwrap().contains("\"key\""), "recv never prints the key: {m}");
        let out_dir = home.join("downloads");
        std::fs::create_dir_all(&out_dir).unwrap();
        let saved = ok(home, &["file", "get", &id, out_dir.to_str().unwrap()]);
        assert!(saved.contains("saved"), "{saved}");
        assert_eq!(sha256_of(&out_dir.join(format!("{name_canary}.txt"))), sha256_of(&path));
        // Again: nothing to do, and no overwrite.
        let again = client(home, &["file", "get", &id, out_dir.to_str().unwrap()]);
        assert!(again.status.success() && stderr(&again).contains("already downloaded"), "{}", stderr(&again));
    }
    let listed = ok(&bob, &["files", "alice"]);
    assert!(listed.contains(&id) && listed.contains(name_canary) && listed.contains("saved as"), "{listed}");
    let listed = parse_json_lines(&ok(&alice, &["files", "bob", "--json"]));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["message_id"], id.as_str());

    // Password-protected: the descriptor alone does not open it.
    let secret = dir.path().join("secret.bin");
    write_file(&secret, 50_000, 9, content_canary);
    let out = client_with(&alice, &["file", "send", "bob", secret.to_str().unwrap(), "--password"], "", &[("IMFREE_FILE_PASSWORD", "open sesame 42")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = sent_id(&String::from_utf8_lossy(&out.stdout));
    let got = recv(&bob);
    assert_eq!(file_message(&got, &pid)["file"]["password"], true);
    let target = dir.path().join("secret-out.bin");
    let out = client(&bob, &["file", "get", &pid, target.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("password-protected"), "{}", stderr(&out));
    let out = client_with(&bob, &["file", "get", &pid, target.to_str().unwrap(), "--password"], "wrong guess\n", &[]);
    assert!(!out.status.success() && stderr(&out).contains("wrong password"), "{}", stderr(&out));
    assert!(!target.exists());
    let out = client_with(&bob, &["file", "get", &pid, target.to_str().unwrap(), "--password"], "open sesame 42\n", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_of(&target), sha256_of(&secret));

    // A voice message shows its duration.
    let voice = dir.path().join("memo.wav");
    std::fs::write(&voice, wav(1500)).unwrap();
    let vid = sent_id(&ok(&alice, &["voice", "send", "bob", voice.to_str().unwrap()]));
    let got = recv(&bob);
    let v = file_message(&got, &vid);
    assert_eq!(v["file"]["voice"], true);
    assert_eq!(v["file"]["duration_ms"], 1500);
    assert_eq!(v["file"]["mime"], "audio/wav");
    assert!(ok(&bob, &["history", "alice"]).contains("voice message, 1.5 s"));

    // A group: every member gets the same file.
    let created = ok(&alice, &["group", "create", "files"]);
    let g = created.trim().to_owned();
    assert!(g.starts_with("group:"), "{created}");
    ok(&alice, &["group", "add", &g, "bob"]);
    ok(&alice, &["group", "add", &g, "carol"]);
    let report = dir.path().join("report.pdf");
    write_file(&report, 120_000, 11, content_canary);
    let gid = sent_id(&ok(&alice, &["file", "send", &g, report.to_str().unwrap()]));
    for (home, who) in [(&bob, "bob"), (&bob2, "bob2"), (&carol, "carol")] {
        let got = recv(home);
        let m = file_message(&got, &gid);
        assert_eq!(m["group"], g.trim_start_matches("group:"), "{who}");
        assert_eq!(m["file"]["mime"], "application/pdf");
        let out = home.join(format!("report-{who}.pdf"));
        ok(home, &["file", "get", &gid, out.to_str().unwrap()]);
        assert_eq!(sha256_of(&out), sha256_of(&report), "{who}");
    }
    assert!(ok(&carol, &["files", &g]).contains("report.pdf"));

    assert_relay_never_saw(&relay, name_canary);
    assert_relay_never_saw(&relay, content_canary);
}

/// A file transfer opens a second connection of the device (a bot's plugin does it while its main session runs).
/// It must not take the device's messages: what was waiting for bob is still delivered to his next session after
/// he sent and fetched files.
#[test]
fn a_file_transfer_takes_no_message_from_the_devices_session() {
    let dir = tempdir();
    let relay = relay_with(dir.path(), "");
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password");
    register(&relay, &bob, "bob", "bob-password-1");
    let path = dir.path().join("report.txt");
    std::fs::write(&path, "quarterly numbers\n").unwrap();
    ok(&alice, &["send", "bob", "hello"]);
    assert_eq!(recv(&bob).len(), 1, "bob has sessions with alice");

    // Waiting for bob while he only transfers files: a message, and a file of alice's.
    ok(&alice, &["send", "bob", "while you were busy"]);
    let file_id = sent_id(&ok(&alice, &["file", "send", "bob", path.to_str().unwrap()]));
    sent_id(&ok(&bob, &["file", "send", "alice", path.to_str().unwrap()]));
    let out = dir.path().join("got");
    std::fs::create_dir_all(&out).unwrap();
    let fetched = client(&bob, &["file", "get", &file_id, out.to_str().unwrap()]);
    assert!(!fetched.status.success(), "bob has not received the file message yet: {}", stderr(&fetched));

    let got = recv(&bob);
    let bodies: Vec<&str> = got.iter().map(|m| m["body"].as_str().unwrap_or("")).collect();
    assert!(bodies.contains(&"while you were busy"), "the waiting message reached bob's session: {got:?}");
    assert!(got.iter().any(|m| m["id"] == file_id.as_str()), "so did the file message: {got:?}");
    ok(&bob, &["file", "get", &file_id, out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("report.txt")).unwrap(), "quarterly numbers\n");
}

#[test]
fn size_limits_quota_tampering_and_expiry_are_refused_clearly() {
    let dir = tempdir();
    let relay = relay_with(dir.path(), "max_file_bytes = 1000000\nquota_bytes = 1500000\nexpiry_secs = 15\nsweep_interval_secs = 1");
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-123");

    let big = dir.path().join("big.bin");
    write_file(&big, 1_000_001, 1, "x");
    let out = client(&alice, &["file", "send", "bob", big.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("file_too_large") && stderr(&out).contains("at most 1000000 bytes"), "{}", stderr(&out));
    let out = client(&alice, &["file", "send", "bob", big.to_str().unwrap(), "--chunk-size", "100000000"]);
    assert!(!out.status.success(), "a chunk size beyond the limits is refused: {}", stderr(&out));

    let first = dir.path().join("first.bin");
    write_file(&first, 900_000, 2, "x");
    let id = sent_id(&ok(&alice, &["file", "send", "bob", first.to_str().unwrap(), "--chunk-size", "16384"]));
    let second = dir.path().join("second.bin");
    write_file(&second, 900_000, 3, "x");
    let out = client(&alice, &["file", "send", "bob", second.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("over_quota") && stderr(&out).contains("900000 of 1500000"), "{}", stderr(&out));

    // One altered byte in one chunk on the relay's disk: the download stops there and no file appears.
    recv(&bob);
    let dirs = chunk_dirs(&relay);
    assert_eq!(dirs.len(), 1);
    let victim = dirs[0].join("20");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
    let target = dir.path().join("got.bin");
    let out = client(&bob, &["file", "get", &id, target.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("chunk 20 failed authentication"), "{}", stderr(&out));
    assert!(!target.exists(), "nothing under the final name");
    let partial = dir.path().join("got.bin.imfree-part");
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 20 * 16384, "only the verified chunks are kept");
    // A swapped chunk is caught the same way.
    std::fs::copy(dirs[0].join("3"), &victim).unwrap();
    let out = client(&bob, &["file", "get", &id, target.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("chunk 20 failed authentication"), "{}", stderr(&out));

    // After expiry the sweeper removes the chunks and the record; the quota is free again.
    wait_long("the sweeper", Duration::from_secs(30), || chunk_dirs(&relay).is_empty());
    let out = client(&bob, &["file", "get", &id, target.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("unknown_file"), "{}", stderr(&out));
    ok(&alice, &["file", "send", "bob", second.to_str().unwrap()]);
}

#[test]
fn a_200_mib_file_survives_a_killed_client_and_a_relay_restart() {
    let dir = tempdir();
    let relay_dir = dir.path().join("relay");
    let mut relay = RelayProc::start(&relay_dir, None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-123");
    let name_canary = "BIGNAMECANARY-3f2a-merger-draft";
    let content_canary = "BIGCONTENTCANARY-a8f5f167f44f4964e6c998dee827110c";
    let path = dir.path().join(format!("{name_canary}.bin"));
    write_file(&path, 200 << 20, 0x5eed, content_canary);
    let chunk = (1u32 << 20).to_string();

    // Interruption 1: the sending client is killed mid-upload; running it again continues.
    let mut sender = spawn_client(&alice, &["file", "send", "bob", path.to_str().unwrap(), "--chunk-size", &chunk]);
    wait_long("upload progress", Duration::from_secs(300), || chunks_stored(&relay) >= 40);
    sender.kill().unwrap();
    sender.wait().unwrap();
    let before = chunks_stored(&relay);
    assert!(before < 200, "interrupted before the end ({before} chunks)");
    let out = client(&alice, &["file", "send", "bob", path.to_str().unwrap(), "--chunk-size", &chunk]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resumed:"), "the second run continued: {}", stderr(&out));
    let id = sent_id(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(chunks_stored(&relay), 200);

    // Interruption 2: the relay is killed and restarted mid-download; the client waits, reconnects and continues.
    let got = recv(&bob);
    assert_eq!(file_message(&got, &id)["file"]["size"], 200u64 << 20);
    let target = dir.path().join("received.bin");
    let partial = dir.path().join("received.bin.imfree-part");
    let getter = spawn_client(&bob, &["file", "get", &id, target.to_str().unwrap(), "--retry-secs", "120"]);
    wait_long("download progress", Duration::from_secs(300), || std::fs::metadata(&partial).map(|m| m.len() >= 40 << 20).unwrap_or(false));
    relay.kill();
    let cut_at = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(cut_at < 200 << 20, "interrupted before the end");
    std::thread::sleep(Duration::from_millis(500));
    relay.restart();
    let out = getter.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!partial.exists());
    assert_eq!(sha256_of(&target), sha256_of(&path), "bit-identical");

    assert_relay_never_saw(&relay, name_canary);
    assert_relay_never_saw(&relay, content_canary);
}
