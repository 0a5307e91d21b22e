//! `imfree client search` through a real relay and real clients: users exchange 1:1 and group messages, then each
//! device finds, in its own local index, exactly the messages that match — by keyword, phrase, prefix, sender,
//! conversation and date — and nothing else; a second device of a user finds what reached it; non-text messages are
//! not indexed; edits and deletions follow; what a user types never breaks the query, and message text never reaches
//! the terminal raw.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use crate::linking::{link, login};

const DAY_MS: i64 = 86_400_000;

/// Send one text message; returns its id.
fn send(home: &Path, to: &str, args: &[&str]) -> String {
    let mut all = vec!["send", to];
    all.extend_from_slice(args);
    let id = ok(home, &all).trim().to_owned();
    assert_eq!(id.lines().count(), 1, "one message, one id: {id}");
    id
}

/// The ids `search --json` finds.
fn found(home: &Path, args: &[&str]) -> BTreeSet<String> {
    let mut all = vec!["search", "--json"];
    all.extend_from_slice(args);
    parse_json_lines(&ok(home, &all)).iter().map(|v| v["id"].as_str().expect("an id").to_owned()).collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).clone()).collect()
}

fn now_ms() -> i64 {
    imfree_client::now_ms()
}

/// `YYYY-MM-DD` of a time (UTC).
fn day(ms: i64) -> String {
    imfree_client::search::utc_time(ms)[..10].to_owned()
}

fn group_id(created: &str) -> String {
    created.trim().strip_prefix("group:").expect("group:<id>").to_owned()
}

#[test]
fn search_finds_exactly_what_matches_on_every_device_that_has_it() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let home = |u: &str| dir.path().join(u);
    for user in ["alice", "bob", "carol"] {
        register(&relay, &home(user), user, &format!("{user}-password"));
    }
    let (alice, bob, carol, bob2) = (home("alice"), home("bob"), home("carol"), home("bob-laptop"));
    // Bob's second device, linked before anything is sent.
    login(&relay, &bob2, "bob", "bob-password", "bob-laptop");
    link(&bob2, &bob);
    let g = group_id(&ok(&alice, &["group", "create", "planning"]));
    let to_group = format!("group:{g}");
    ok(&alice, &["group", "add", &to_group, "bob"]);
    ok(&alice, &["group", "add", &to_group, "carol"]);

    // First round.
    let lunch = send(&alice, "bob", &["lunch at the harbour café tomorrow?"]);
    let draft = send(&bob, "alice", &["the quarterly report draft is ready"]);
    let bug = send(&carol, "bob", &["please report the bug to the owl team"]);
    let kickoff = send(&alice, &to_group, &["kickoff: quarterly planning in the big room"]);
    let dashboards = send(&bob, &to_group, &["I will bring the reporting dashboards"]);
    // Every message of the first round was accepted before `boundary`, every one of the second after it.
    let boundary = (now_ms() / 1000 + 1) * 1000;
    while now_ms() <= boundary + 50 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let approved = send(&carol, &to_group, &["Quarterly REPORT approved: ship it"]);
    let notes = send(&alice, "bob", &["--markdown", "**Release** notes for the report are *done*"]);

    for device in [&alice, &bob, &carol, &bob2] {
        ok(device, &["recv"]);
    }
    let boundary = imfree_client::search::utc_time(boundary).replace(' ', "T");
    let (today, yesterday, tomorrow) = (day(now_ms()), day(now_ms() - DAY_MS), day(now_ms() + DAY_MS));

    // Both of bob's devices hold every message: those to him, those he sent (the laptop got copies), the group's.
    for device in [&bob, &bob2] {
        let name = device.display();
        // Keyword (case-insensitive), not "reporting"; a message from bob himself is found too.
        assert_eq!(found(device, &["report"]), set(&[&draft, &bug, &approved, &notes]), "{name}");
        assert_eq!(found(device, &["quarterly"]), set(&[&draft, &kickoff, &approved]), "{name}");
        // All words required; diacritics folded.
        assert_eq!(found(device, &["cafe tomorrow"]), set(&[&lunch]), "{name}");
        assert_eq!(found(device, &["cafe yesterday"]), BTreeSet::new(), "{name}");
        // Phrase: the words together and in order.
        assert_eq!(found(device, &["\"quarterly report\""]), set(&[&draft, &approved]), "{name}");
        assert_eq!(found(device, &["\"report quarterly\""]), BTreeSet::new(), "{name}");
        // Prefix.
        assert_eq!(found(device, &["report*"]), set(&[&draft, &bug, &dashboards, &approved, &notes]), "{name}");
        assert_eq!(found(device, &["dash*"]), set(&[&dashboards]), "{name}");
        // Participant.
        assert_eq!(found(device, &["report*", "--from", "carol"]), set(&[&bug, &approved]), "{name}");
        assert_eq!(found(device, &["report*", "--from", "bob"]), set(&[&draft, &dashboards]), "{name}");
        assert_eq!(found(device, &["report*", "--from", "dave"]), BTreeSet::new(), "{name}");
        // Conversation: a user, or the group.
        assert_eq!(found(device, &["report*", "--in", &to_group]), set(&[&dashboards, &approved]), "{name}");
        assert_eq!(found(device, &["report*", "--in", "alice"]), set(&[&draft, &notes]), "{name}");
        assert_eq!(found(device, &["report*", "--in", "carol"]), set(&[&bug]), "{name}");
        // Dates: RFC 3339 instants and whole UTC days.
        assert_eq!(found(device, &["report*", "--until", &boundary]), set(&[&draft, &bug, &dashboards]), "{name}");
        assert_eq!(found(device, &["report*", "--since", &boundary]), set(&[&approved, &notes]), "{name}");
        assert_eq!(found(device, &["report*", "--since", &boundary, "--in", "alice"]), set(&[&notes]), "{name}");
        assert_eq!(found(device, &["report", "--since", &today, "--until", &today]).len(), 4, "{name}");
        assert_eq!(found(device, &["report", "--since", &tomorrow]), BTreeSet::new(), "{name}");
        assert_eq!(found(device, &["report", "--until", &yesterday]), BTreeSet::new(), "{name}");
        // Limit: the best match only (three words in a short message beat one in a longer).
        assert_eq!(found(device, &["report*", "--limit", "1"]).len(), 1, "{name}");
        // No match.
        assert_eq!(found(device, &["walrus"]), BTreeSet::new(), "{name}");
    }

    // What one hit says, as JSON.
    let hits = parse_json_lines(&ok(&bob2, &["search", "--json", "\"quarterly report\"", "--in", &to_group]));
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["id"], approved.as_str());
    assert_eq!(hits[0]["from"], "carol");
    assert_eq!(hits[0]["conversation"], to_group.as_str());
    assert_eq!(hits[0]["matches"], serde_json::json!(["Quarterly REPORT"]));
    assert_eq!(hits[0]["snippet"], "Quarterly REPORT approved: ship it");

    // Each user's index holds their own conversations only: carol was never part of alice and bob's.
    assert_eq!(found(&carol, &["report*"]), set(&[&bug, &dashboards, &approved]));
    assert_eq!(found(&alice, &["report*"]), set(&[&draft, &dashboards, &approved, &notes]));
    assert_eq!(found(&alice, &["lunch"]), set(&[&lunch]), "the sender's own copy is searchable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_text_is_indexed_edits_and_deletions_follow_and_no_input_breaks_the_search() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password");
    register(&relay, &bob, "bob", "bob-password");

    let text = send(&alice, "bob", &["the gazebo plans, version two"]);
    let hostile = send(&alice, "bob", &["gazebo \u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[31m ALERT\u{1b}[0m\u{202e}txt.exe\u{2}fake\u{3}"]);
    // Non-text content with the same word, through the client library (the CLI sends text only).
    {
        let client = imfree_client::Client::open(Some(&alice)).await.expect("alice's client");
        client.compose("bob", "application/octet-stream", b"gazebo gazebo gazebo").await.expect("binary");
        client.compose("bob", "application/vnd.imfree.reaction+json", br#"{"emoji":"gazebo"}"#).await.expect("reaction");
        client.compose("bob", "text/html", b"<p>gazebo</p>").await.expect("html");
        client.store().close().await;
    }
    ok(&alice, &["recv"]);
    let received = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    let mimes: BTreeSet<&str> = received.iter().filter_map(|m| m["mime"].as_str()).collect();
    assert_eq!(
        mimes,
        BTreeSet::from(["text/plain", "application/octet-stream", "application/vnd.imfree.reaction+json", "text/html"]),
        "everything arrived: {received:?}"
    );

    // Only the text/plain messages are found, on both sides.
    for device in [&alice, &bob] {
        assert_eq!(found(device, &["gazebo"]), set(&[&text, &hostile]));
    }

    // Printed results carry no control characters from the message, whatever it held; matches are marked.
    let printed = ok(&bob, &["search", "alert"]);
    assert!(!printed.chars().any(|c| c.is_control() && c != '\n'), "{printed:?}");
    assert!(!printed.contains('\u{202e}'), "{printed:?}");
    assert!(printed.contains("[ALERT]"), "{printed:?}");
    assert!(printed.contains("alice"), "{printed:?}");
    // The message's own STX/ETX bytes are not taken for highlight marks.
    assert!(!printed.contains("[fake]"), "{printed:?}");
    let json = parse_json_lines(&ok(&bob, &["search", "--json", "alert"]));
    assert_eq!(json[0]["matches"], serde_json::json!(["ALERT"]));

    // FTS5 syntax in the input is plain text: no syntax error, no crash, and only real words match.
    for input in ["NEAR(gazebo", "gazebo AND", "\"gazebo", "body:gazebo", "gazebo OR walrus", "^gazebo*", "-gazebo", "(gazebo)", "gaz\"ebo"] {
        let out = client(&bob, &["search", "--json", input]);
        assert!(out.status.success(), "{input:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(found(&bob, &["gazebo OR walrus"]), BTreeSet::new(), "OR is a word to find, not an operator");
    assert_eq!(found(&bob, &["(gazebo)"]), set(&[&text, &hostile]));

    // An edit replaces what is found, under the original message (once, not also under the edit's own row); a
    // deletion removes the message from every index that held it.
    ok(&alice, &["edit", &text, "the pergola plans, version three"]);
    ok(&alice, &["delete", &hostile]);
    ok(&bob, &["recv"]);
    for device in [&alice, &bob] {
        assert_eq!(found(device, &["pergola"]), set(&[&text]), "{}", device.display());
        assert_eq!(found(device, &["gazebo"]), BTreeSet::new(), "{}", device.display());
        assert_eq!(found(device, &["alert"]), BTreeSet::new(), "{}", device.display());
    }

    // Unusable input is refused with a reason.
    for (args, reason) in [
        (vec!["search", ""], "empty"),
        (vec!["search", "  \"\" "], "no letters or digits"),
        (vec!["search", "gazebo", "--since", "last tuesday"], "YYYY-MM-DD"),
        (vec!["search", "gazebo", "--since", "2026-12-02", "--until", "2026-12-01"], "--since"),
        (vec!["search", "gazebo", "--in", "group:nope"], "not a group"),
        (vec!["search", "gazebo", "--limit", "0"], "limit"),
    ] {
        let out = client(&bob, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} is refused");
        assert!(err.contains(reason), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
