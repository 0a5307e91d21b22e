//! Lossless delivery through the real relay process: offline queues, a relay killed with SIGKILL, a client killed
//! between receive and ack.

use std::collections::HashSet;
use std::process::{Command, Stdio};

use crate::common::*;

const BATCH: usize = 20;

fn texts(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("msg-{i:04}")).collect()
}

/// Send `texts` from `home` to bob in batches, retrying queued batches (exit 75) until the relay accepts them.
fn send_all(home: &std::path::Path, texts: &[String]) {
    for chunk in texts.chunks(BATCH) {
        let mut args = vec!["send", "bob"];
        args.extend(chunk.iter().map(String::as_str));
        let out = client(home, &args);
        assert!(out.status.success(), "send failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), chunk.len());
    }
}

fn bodies(values: &[serde_json::Value]) -> Vec<String> {
    values.iter().map(|v| v["body"].as_str().unwrap_or_default().to_owned()).collect()
}

fn assert_exactly_once_in_order(received: &[String], n: usize) {
    let expected = texts(0..n);
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "a message arrived twice");
    assert_eq!(received.len(), n, "messages missing: {} of {n}", received.len());
    assert_eq!(received, expected.as_slice(), "messages out of order");
}

#[test]
fn thousand_messages_arrive_once_in_order_with_bob_offline_for_half() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-12");

    // Bob offline: the first 500 wait in his queue.
    send_all(&alice, &texts(0..500));

    // Bob online (a long-running receiver) while the other 500 are sent.
    let online = Command::new(bin())
        .args(["client", "--home"])
        .arg(&bob)
        .args(["recv", "--json", "--wait", "25"])
        .env("IMFREE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn receiver");
    send_all(&alice, &texts(500..1000));
    let out = online.wait_with_output().expect("receiver");
    assert!(out.status.success(), "recv --wait failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut received = bodies(&parse_json_lines(&String::from_utf8_lossy(&out.stdout)));
    // Anything still queued (the receiver's window ended) arrives now.
    received.extend(bodies(&parse_json_lines(&ok(&bob, &["recv", "--json"]))));
    assert_exactly_once_in_order(&received, 1000);

    let first = &parse_json_lines(&ok(&alice, &["recv", "--json"]));
    assert!(first.is_empty(), "alice has no other device, so she gets no copies: {first:?}");
    // Every JSON line carries the fields scripts rely on.
    let again = ok(&bob, &["recv", "--json"]);
    assert!(again.trim().is_empty(), "nothing is shown twice: {again}");
}

#[test]
fn relay_killed_mid_run_loses_nothing_acked_and_duplicates_nothing() {
    let dir = tempdir();
    let mut relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-12");

    let all = texts(0..1000);
    let mut accepted_ids: Vec<String> = Vec::new();
    let mut received: Vec<String> = Vec::new();
    for (i, chunk) in all.chunks(BATCH).enumerate() {
        if i == 17 {
            // SIGKILL the relay while a sender is in flight.
            let mut args = vec!["send".to_string(), "bob".to_string()];
            args.extend(chunk.iter().cloned());
            let sender = Command::new(bin())
                .args(["client", "--home"])
                .arg(&alice)
                .args(&args)
                .env("IMFREE_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn sender");
            std::thread::sleep(std::time::Duration::from_millis(15));
            relay.kill();
            let out = sender.wait_with_output().expect("sender");
            let code = out.status.code();
            assert!(code == Some(0) || code == Some(75), "sender during the kill: {code:?} {}", String::from_utf8_lossy(&out.stderr));
            if code == Some(0) {
                accepted_ids.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned));
            }
            // While the relay is down, sends queue locally (exit 75) and lose nothing.
            let out = client(&alice, &["send", "bob", "while-down"]);
            assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
            relay.restart();
            continue;
        }
        if i == 30 {
            // Bob receives part of the stream, then the relay is killed again right after.
            received.extend(bodies(&parse_json_lines(&ok(&bob, &["recv", "--json"]))));
            relay.restart();
        }
        let mut args = vec!["send", "bob"];
        args.extend(chunk.iter().map(String::as_str));
        let out = client(&alice, &args);
        assert!(out.status.success(), "send after restart: {}", String::from_utf8_lossy(&out.stderr));
        accepted_ids.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned));
    }
    received.extend(bodies(&parse_json_lines(&ok(&bob, &["recv", "--json"]))));

    // The message queued while the relay was down went out with the next send, in its place in the stream.
    let pos = received.iter().position(|b| b == "while-down").expect("the message queued while the relay was down arrived");
    received.remove(pos);
    assert_exactly_once_in_order(&received, 1000);
    assert!(accepted_ids.len() >= 980, "senders saw acceptance for {} messages", accepted_ids.len());
    assert!(relay.is_running());
}

#[test]
fn client_killed_between_receive_and_ack_shows_each_message_once() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-12");
    ok(&alice, &["send", "bob", "one", "two", "three"]);

    // The fault hook makes the client exit after storing the deliveries and before acking them.
    let crashed = client_with(&bob, &["recv", "--json"], "", &[("IMFREE_FAULT_EXIT_BEFORE_ACK", "1")]);
    assert_eq!(crashed.status.code(), Some(86), "{}", String::from_utf8_lossy(&crashed.stderr));
    assert!(crashed.stdout.is_empty(), "nothing shown before the crash");

    // The relay still has them queued (never acked), redelivers them, and the client shows each once.
    let shown = bodies(&parse_json_lines(&ok(&bob, &["recv", "--json"])));
    assert_eq!(shown, ["one", "two", "three"]);
    let again = ok(&bob, &["recv", "--json"]);
    assert!(again.trim().is_empty(), "shown once only: {again}");
    let queues = Command::new(bin()).args(["admin", "--data"]).arg(&relay.data).arg("queues").output().expect("admin");
    let text = String::from_utf8_lossy(&queues.stdout);
    assert!(!text.contains("bob"), "bob's queue is empty once he acked: {text}");
}
