//! Replies, edits, deletions and reactions through the real relay and real clients: what recipients see, what every
//! device keeps, what the relay refuses and records in its audit log — and what clients refuse when the relay lets
//! through what it should not (its database rewritten under it, or a change sent around its checks).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use imfree_client::store::OutboxItem;
use imfree_proto::content::Content;
use imfree_proto::{MessageRef, RefAction};
use sqlx::{Connection, SqliteConnection};

use crate::common::*;
use crate::e2e::assert_relay_never_saw;

fn recv(home: &Path) -> Vec<serde_json::Value> {
    parse_json_lines(&ok(home, &["recv", "--json"]))
}

fn history(home: &Path, conv: &str) -> Vec<serde_json::Value> {
    parse_json_lines(&ok(home, &["history", conv, "--json", "--versions"]))
}

fn sent_id(out: &str) -> String {
    out.trim().lines().last().expect("an id").to_owned()
}

fn failure(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a refusal; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn audit(relay: &RelayProc, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(bin()).args(["admin", "--data"]).arg(&relay.data).arg("audit").arg("--json").args(args).output().expect("admin");
    assert!(out.status.success(), "imfree admin audit {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    parse_json_lines(&String::from_utf8_lossy(&out.stdout))
}

async fn relay_db(relay: &RelayProc) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", relay.data.join("relay.db").display())).await.expect("relay database")
}

/// Send `content` from the client in `home` through the library, with the clear reference `refers` — what a
/// modified client could do, bypassing the checks `imfree client edit|delete` make before sending.
async fn send_raw(home: &Path, to: &str, content: &Content, refers: Option<MessageRef>) -> String {
    let _ = tracing_subscriber::fmt().with_env_filter("imfree_client=debug").with_test_writer().try_init();
    let client = imfree_client::Client::open(Some(home)).await.expect("open client");
    let id = imfree_client::engine::new_envelope_id();
    let kind = if to.starts_with("group:") { "group" } else { "message" };
    let item = OutboxItem { id: id.clone(), kind: kind.into(), to: to.into(), mime: imfree_proto::mime::E2E.into(), payload: content.encode(), refers };
    client.store().queue_outbox(&item).await.expect("queue");
    let mut session = client.connect().await.expect("connect");
    session.sync_outbox(Duration::from_secs(30)).await.expect("sync");
    session.close().await;
    id
}

fn edit_content(target: &str, text: &str) -> (Content, MessageRef) {
    let refers = MessageRef { action: RefAction::Edit, id: target.parse().unwrap() };
    let mut content = Content::new("text/plain", text.as_bytes(), None);
    content.refers = Some(refers);
    (content, refers)
}

fn delete_content(target: &str) -> (Content, MessageRef) {
    let refers = MessageRef { action: RefAction::Delete, id: target.parse().unwrap() };
    let mut content = Content::new(imfree_proto::mime::DELETION, b"", None);
    content.refers = Some(refers);
    (content, refers)
}

#[test]
fn replies_edits_deletions_and_reactions_between_two_users() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob, bob2) = (dir.path().join("alice"), dir.path().join("bob"), dir.path().join("bob-laptop"));
    register(&relay, &alice, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-12");
    // Bob's second device: everything below reaches it too, and what bob does there reaches alice.
    crate::linking::login(&relay, &bob2, "bob", "bob-password-12", "bob-laptop");
    crate::linking::link(&bob2, &bob);

    let first = sent_id(&ok(&alice, &["send", "bob", "lunch at noon?"]));
    let got = recv(&bob);
    assert_eq!(got.len(), 1, "{got:?}");

    // A reply names the message it answers, inside the encryption.
    let reply = sent_id(&ok(&bob, &["reply", &first, "yes @alice, the usual place; `@carol` is away"]));
    let got = recv(&alice);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0]["id"].as_str(), got[0]["reply_to"].as_str()), (Some(reply.as_str()), Some(first.as_str())));
    assert_eq!(got[0]["mentions"], serde_json::json!(["alice"]), "mentions outside code travel with the message");

    // An edit: bob sees it once as an event, and the message as it stands — with the old text in its versions.
    let canary = "CANARY-edit-91c2-the-heron-waits";
    let edit = sent_id(&ok(&alice, &["edit", &first, &format!("lunch at one? {canary}")]));
    let got = recv(&bob);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0]["id"].as_str(), got[0]["edit_of"].as_str()), (Some(edit.as_str()), Some(first.as_str())));
    let at_bob = history(&bob, "alice");
    let original = at_bob.iter().find(|m| m["id"] == first.as_str()).expect("the original");
    assert_eq!(original["body"], format!("lunch at one? {canary}"));
    assert_eq!(original["edited"], true);
    let versions: Vec<&str> = original["versions"].as_array().unwrap().iter().map(|v| v["body"].as_str().unwrap()).collect();
    assert_eq!(versions, ["lunch at noon?", format!("lunch at one? {canary}").as_str()]);
    assert_eq!(at_bob.len(), 2, "history lists messages, not the edit itself: {at_bob:?}");
    // The author's own history shows the edit too.
    assert_eq!(history(&alice, "bob").iter().find(|m| m["id"] == first.as_str()).unwrap()["edited"], true);

    // Reactions: added, counted, taken back.
    ok(&bob, &["react", &first, ":tada:"]);
    ok(&alice, &["react", &first, "🎉"]);
    assert!(failure(&client(&alice, &["react", &first, ":no-such-emoji:"])).contains("no emoji is called"));
    ok(&bob, &["react", &first, "👍"]);
    let got = recv(&alice);
    assert_eq!(got.iter().filter(|m| m["reaction"]["to"] == first.as_str()).count(), 2, "{got:?}");
    let reactions = |home: &Path, peer: &str| history(home, peer).into_iter().find(|m| m["id"] == first.as_str()).unwrap()["reactions"].clone();
    assert_eq!(reactions(&alice, "bob"), serde_json::json!([{"emoji": "🎉", "count": 2, "users": ["bob", "alice"]}, {"emoji": "👍", "count": 1, "users": ["bob"]}]));
    ok(&bob, &["react", &first, "🎉", "--remove"]);
    // A long emoji sequence doubles as a canary: it must never reach the relay in the clear.
    let family = "👨\u{200d}👩\u{200d}👧\u{200d}👦";
    ok(&bob, &["react", &first, family]);
    recv(&alice);
    assert_eq!(
        reactions(&alice, "bob"),
        serde_json::json!([{"emoji": "🎉", "count": 1, "users": ["alice"]}, {"emoji": "👍", "count": 1, "users": ["bob"]}, {"emoji": family, "count": 1, "users": ["bob"]}])
    );
    assert_eq!(reactions(&bob, "alice"), reactions(&alice, "bob"), "both sides agree");
    recv(&bob2);
    assert_eq!(reactions(&bob2, "alice"), reactions(&alice, "bob"), "and bob's other device");
    let on_laptop = history(&bob2, "alice").into_iter().find(|m| m["id"] == first.as_str()).unwrap();
    assert_eq!((on_laptop["edited"].as_bool(), on_laptop["versions"].as_array().map(Vec::len)), (Some(true), Some(2)), "{on_laptop}");
    // A reaction from the laptop reaches alice and the phone.
    ok(&bob2, &["react", &first, ":+1:"]);
    recv(&alice);
    recv(&bob);
    for (home, peer) in [(&alice, "bob"), (&bob, "alice")] {
        let thumbs = reactions(home, peer).as_array().unwrap().iter().find(|r| r["emoji"] == "👍").cloned().unwrap();
        assert_eq!(thumbs["count"], 1, "the same user's reaction from two devices counts once: {thumbs}");
    }
    assert!(!client(&bob, &["react", &first, "not an emoji"]).status.success(), "a reaction is one emoji, no spaces");

    // Only the author edits or deletes in a direct conversation: the client says so before sending anything.
    assert!(failure(&client(&bob, &["edit", &first, "mine now"])).contains("only its author"));
    assert!(failure(&client(&bob, &["delete", &first])).contains("only its author"));

    // A deletion: a tombstone on both sides, the text gone from every version.
    let deletion = sent_id(&ok(&alice, &["delete", &first]));
    let got: Vec<_> = recv(&bob).into_iter().filter(|m| m.get("delete_of").is_some()).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0]["id"].as_str(), got[0]["delete_of"].as_str()), (Some(deletion.as_str()), Some(first.as_str())), "{got:?}");
    recv(&bob2);
    for (home, peer) in [(&bob, "alice"), (&alice, "bob"), (&bob2, "alice")] {
        let h = history(home, peer);
        let gone = h.iter().find(|m| m["id"] == first.as_str()).unwrap();
        assert_eq!((gone["deleted"].as_bool(), gone["body"].as_str()), (Some(true), Some("")), "{gone}");
        assert!(gone["versions"].as_array().unwrap().is_empty(), "no version of a deleted message is kept: {gone}");
    }
    assert!(failure(&client(&alice, &["edit", &first, "undo"])).contains("was deleted"));

    // The relay's audit log has who edited and deleted which message, never the text.
    let log = audit(&relay, &["--conv", "alice,bob"]);
    let actions: Vec<(&str, &str, &str)> =
        log.iter().map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap(), e["message"].as_str().unwrap())).collect();
    assert_eq!(actions, [("message.delete", "alice", first.as_str()), ("message.edit", "alice", first.as_str())]);
    assert!(audit(&relay, &["--user", "bob"]).is_empty(), "bob changed nothing");
    assert_eq!(audit(&relay, &["--since", "1h", "--user", "alice"]).len(), 2);
    assert!(audit(&relay, &["--until", "2000-01-01"]).is_empty());
    assert_relay_never_saw(&relay, canary);
    assert_relay_never_saw(&relay, family);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_the_sender_may_not_make_are_refused_by_the_relay_and_by_clients() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let home = |u: &str| dir.path().join(u);
    for user in ["alice", "bob", "carol"] {
        register(&relay, &home(user), user, &format!("{user}-password-1"));
    }
    let (alice, bob, carol) = (home("alice"), home("bob"), home("carol"));
    let created = ok(&alice, &["group", "create", "ops"]);
    let g = created.trim().to_owned();
    ok(&alice, &["group", "add", &g, "bob"]);
    ok(&alice, &["group", "add", &g, "carol"]);
    let bobs = sent_id(&ok(&bob, &["send", &g, "bob's plan"]));
    let alices = sent_id(&ok(&alice, &["send", "bob", "between us"]));
    recv(&alice);
    recv(&carol);
    recv(&bob);

    // Carol, a plain member, may not delete bob's message: the relay refuses, nothing is delivered.
    let refused = failure(&client(&carol, &["delete", &bobs]));
    assert!(refused.contains("not_allowed"), "{refused}");
    // Nor may she edit it, even with a modified client that sends the edit anyway.
    let (content, refers) = edit_content(&bobs, "carol's plan");
    send_raw(&carol, &g, &content, Some(refers)).await;
    // A change of a message the relay never saw in this conversation is refused as unknown.
    let (content, refers) = edit_content(&alices, "moved to the group");
    send_raw(&bob, &g, &content, Some(refers)).await;
    for home in [&alice, &bob] {
        let got = recv(home);
        assert!(got.iter().all(|m| m.get("edit_of").is_none() && m.get("delete_of").is_none()), "{got:?}");
    }

    // Alice, the group's admin, may delete bob's message: every member sees the tombstone.
    ok(&alice, &["delete", &bobs]);
    for (home, name) in [(&bob, "bob"), (&carol, "carol")] {
        let got = recv(home);
        assert!(got.iter().any(|m| m["delete_of"] == bobs.as_str() && m["by_admin"] == true), "{name}: {got:?}");
        let gone = history(home, &g).into_iter().find(|m| m["id"] == bobs.as_str()).unwrap();
        assert_eq!(gone["deleted"], true, "{name}: {gone}");
    }
    let log = audit(&relay, &["--conv", &g]);
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["message.delete", "group.add", "group.add", "group.create"], "{log:?}");
    assert_eq!(log[0]["actor"], "alice");
    assert_eq!(log[1]["subject"], "carol");

    // A hostile relay: its record of who sent a message is rewritten so that carol passes as the author of bob's
    // new message. The relay lets her edit and delete it; the clients refuse, and show why.
    let second = sent_id(&ok(&bob, &["send", &g, "bob's second plan"]));
    recv(&alice);
    recv(&carol);
    let mut db = relay_db(&relay).await;
    sqlx::query("UPDATE envelopes SET sender = 'carol' WHERE id = ?").bind(&second).execute(&mut db).await.unwrap();
    let (content, refers) = edit_content(&second, "carol rewrote this");
    send_raw(&carol, &g, &content, Some(refers)).await;
    let (content, refers) = delete_content(&second);
    send_raw(&carol, &g, &content, Some(refers)).await;
    for home in [&alice, &bob] {
        let got = recv(home);
        let refusals: Vec<&str> = got.iter().filter_map(|m| m["refused"].as_str()).collect();
        assert_eq!(refusals, ["only its author may edit a message", "only its author, or a group admin, may delete a message"], "{got:?}");
        let still = history(home, &g).into_iter().find(|m| m["id"] == second.as_str()).unwrap();
        assert_eq!((still["body"].as_str(), still["edited"].as_bool(), still["deleted"].as_bool()), (Some("bob's second plan"), Some(false), Some(false)));
    }

    // A change sent around the relay's checks (encrypted reference, no clear one) is refused by every client, so it
    // can never escape the audit log.
    let (content, _) = edit_content(&second, "sneaky");
    send_raw(&bob, &g, &content, None).await;
    let got = recv(&alice);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["error"], "undecodable", "{got:?}");
    assert!(got[0]["body"].as_str().unwrap().contains("without saying so") || got[0]["body"].as_str().unwrap().contains("does not match"), "{got:?}");
    let still = history(&alice, &g).into_iter().find(|m| m["id"] == second.as_str()).unwrap();
    assert_eq!(still["body"], "bob's second plan");
}


#[test]
fn typing_indicators_and_read_receipts_can_each_be_turned_off() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-12");
    assert_eq!(ok(&alice, &["settings"]), "typing on\nread-receipts on\n");
    // The relay passes typing indicators only between contacts: they talk first.
    ok(&alice, &["send", "bob", "hello"]);
    ok(&bob, &["recv"]);

    // Typing: alice sees bob typing while she listens.
    let typing_seen_by_alice = |bob_args: &[&str]| {
        let listener = Command::new(bin())
            .args(["client", "--home"])
            .arg(&alice)
            .args(["recv", "--json", "--wait", "4"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("alice listens");
        std::thread::sleep(Duration::from_millis(1500));
        let out = client(&bob, bob_args);
        let lines = parse_json_lines(&String::from_utf8_lossy(&listener.wait_with_output().unwrap().stdout));
        (out, lines.into_iter().filter(|l| l.get("typing").is_some()).collect::<Vec<_>>())
    };
    let (out, seen) = typing_seen_by_alice(&["typing", "alice"]);
    assert!(out.status.success());
    assert_eq!(seen, [serde_json::json!({"typing": true, "from": "bob"})]);
    // Bob turns typing off: he cannot send it.
    ok(&bob, &["settings", "typing", "off"]);
    let (out, seen) = typing_seen_by_alice(&["typing", "alice"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("typing indicators are off"), "{out:?}");
    assert!(seen.is_empty());
    ok(&bob, &["settings", "typing", "on"]);
    // Alice turns typing off: she does not see bob's either.
    ok(&alice, &["settings", "typing", "off"]);
    let (out, seen) = typing_seen_by_alice(&["typing", "alice"]);
    assert!(out.status.success());
    assert!(seen.is_empty(), "{seen:?}");

    // Read receipts: alice sees bob's ✓✓ read while both share them.
    ok(&bob, &["read", "alice"]);
    ok(&alice, &["recv"]);
    let hist = ok(&alice, &["history", "bob"]);
    assert!(hist.contains("✓✓ read"), "{hist}");
    // Alice stops sharing: she no longer sees bob's, and cannot send her own.
    ok(&alice, &["settings", "read-receipts", "off"]);
    let hist = ok(&alice, &["history", "bob"]);
    assert!(!hist.contains("read") && hist.contains("✓"), "{hist}");
    ok(&bob, &["send", "alice", "hi back"]);
    ok(&alice, &["recv"]);
    let refused = client(&alice, &["read", "bob"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("read receipts are off"), "{refused:?}");
    assert!(!client(&alice, &["settings", "colour", "off"]).status.success());
}

#[test]
fn markdown_through_the_relay_is_rendered_and_cannot_drive_the_terminal() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-12");
    // Markdown with raw HTML, a script, a javascript: link, and escape sequences that would set the terminal's title,
    // clear the screen and write the clipboard.
    let hostile = "**ship it** :tada:\n\n<script>alert(1)</script> [click](javascript:alert(1))\n\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}]52;c;aGk=\u{7}done";
    ok(&alice, &["send", "bob", "--markdown", hostile]);
    let shown = ok(&bob, &["recv"]);
    assert!(!shown.contains('\u{1b}') && !shown.contains('\u{7}'), "no control character reaches the terminal: {shown:?}");
    assert!(shown.contains("ship it") && !shown.contains("**ship it**"), "rendered, not raw: {shown:?}");
    assert!(shown.contains('🎉'), "shortcodes become emoji: {shown:?}");
    assert!(shown.contains("done"), "{shown:?}");
    // The JSON output stays the message as sent (front ends sanitise it themselves, see docs/formatting.md).
    ok(&alice, &["send", "bob", "--markdown", "**again**"]);
    let json = recv(&bob);
    assert_eq!((json[0]["mime"].as_str(), json[0]["body"].as_str()), (Some("text/markdown"), Some("**again**")));
}
