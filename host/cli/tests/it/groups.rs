//! Groups through the real relay and real clients: membership changes, sender keys, and a hostile relay that adds
//! a ghost, routes to a removed member, replays old ciphertext to a new one, forks or rolls back the log.

use imfree_crypto::group::{GroupMessage, ReceiverChain};
use imfree_crypto::identity::UserIdentity;
use imfree_crypto::membership::{Member, MembershipEntry, MembershipOp};
use sqlx::{Connection, Row, SqliteConnection};

use crate::common::*;
use crate::e2e::assert_relay_never_saw;

async fn db(path: &std::path::Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("database")
}

async fn relay_db(relay: &RelayProc) -> SqliteConnection {
    db(&relay.data.join("relay.db")).await
}

/// A user's identity secret, read from their client's store (what a hostile relay could never do; the test uses it
/// to forge what only a real admin could sign).
async fn identity_of(home: &std::path::Path) -> UserIdentity {
    let mut c = db(&home.join("client.db")).await;
    let seed: Vec<u8> = sqlx::query_scalar("SELECT value FROM e2e_state WHERE name = 'identity'").fetch_one(&mut c).await.unwrap();
    UserIdentity::from_seed(&seed.try_into().unwrap())
}

async fn user_id(c: &mut SqliteConnection, user: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM users WHERE name = ?").bind(user).fetch_one(&mut *c).await.unwrap()
}

async fn device_of(c: &mut SqliteConnection, user: &str) -> String {
    sqlx::query_scalar("SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id WHERE u.name = ?").bind(user).fetch_one(&mut *c).await.unwrap()
}

/// The last entry of a group's log on the relay.
async fn head_entry(c: &mut SqliteConnection, group: &str) -> MembershipEntry {
    let bytes: Vec<u8> = sqlx::query_scalar("SELECT entry FROM group_log WHERE group_id = ? ORDER BY seq DESC LIMIT 1")
        .bind(group)
        .fetch_one(&mut *c)
        .await
        .unwrap();
    MembershipEntry::decode(&bytes).unwrap()
}

fn group_id(created: &str) -> String {
    created.trim().strip_prefix("group:").expect("group:<id>").to_owned()
}

fn recv(home: &std::path::Path) -> Vec<serde_json::Value> {
    parse_json_lines(&ok(home, &["recv", "--json"]))
}

/// Bodies of the group's readable messages (not events or warnings).
fn readable(messages: &[serde_json::Value], group: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["group"] == group && m.get("error").is_none() && m.get("event").is_none() && m.get("warning").is_none())
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn undecodable(messages: &[serde_json::Value], group: &str) -> usize {
    messages.iter().filter(|m| m["group"] == group && m.get("error").is_some()).count()
}

fn err(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_follow_the_membership_log() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let home = |u: &str| dir.path().join(u);
    for user in ["alice", "bob", "carol", "dave"] {
        register(&relay, &home(user), user, &format!("{user}-password"));
    }
    let (alice, bob, carol, dave) = (home("alice"), home("bob"), home("carol"), home("dave"));
    let g = group_id(&ok(&alice, &["group", "create", "launch team"]));
    let to = format!("group:{g}");
    ok(&alice, &["group", "add", &to, "bob"]);
    ok(&alice, &["group", "add", &to, "carol"]);
    let info = ok(&bob, &["group", "info", &to]);
    assert!(info.contains("alice (owner)") && info.contains("bob (member)") && info.contains("carol (member)"), "{info}");

    let canary = "CANARY-group-4b1d-the-owl-flies-at-noon";
    ok(&alice, &["send", &to, canary]);
    let at_bob = recv(&bob);
    assert_eq!(readable(&at_bob, &g), [canary], "{at_bob:?}");
    assert!(at_bob.iter().any(|m| m["event"] == true && m["body"].as_str().unwrap().contains("alice added carol")), "{at_bob:?}");
    ok(&bob, &["send", &to, "bob here"]);
    assert_eq!(readable(&recv(&alice), &g), ["bob here"]);
    assert_eq!(readable(&recv(&carol), &g), [canary, "bob here"]);

    // Carol is removed. The relay no longer routes to her; a relay that does anyway gives her nothing readable.
    // And a carol who ignores her removal and keeps every key she had (a copy of her store from before) cannot
    // read on either: the senders started new chains that never reached her.
    let old_carol = dir.path().join("carol-before-removal.db");
    {
        let mut c = db(&carol.join("client.db")).await;
        sqlx::query("VACUUM INTO ?").bind(old_carol.display().to_string()).execute(&mut c).await.unwrap();
    }
    ok(&alice, &["group", "remove", &to, "carol"]);
    let mut c = relay_db(&relay).await;
    let carol_id = user_id(&mut c, "carol").await;
    sqlx::query("UPDATE group_members SET active = 1 WHERE group_id = ? AND user_id = ?").bind(&g).bind(carol_id).execute(&mut c).await.unwrap();
    let after = ok(&alice, &["send", &to, "after carol left"]);
    let ciphertext: Vec<u8> = relay_ciphertext(&mut c, after.trim()).await;
    let message = GroupMessage::from_bytes(&ciphertext).expect("a group message");
    let session: Vec<u8> = sqlx::query_scalar("SELECT session FROM e2e_groups WHERE group_id = ?")
        .bind(&g)
        .fetch_one(&mut db(&old_carol).await)
        .await
        .unwrap();
    let session: serde_json::Value = serde_json::from_slice(&session).unwrap();
    let chains = session["receivers"].as_array().expect("carol held receiving chains");
    assert!(!chains.is_empty(), "carol had alice's chain before her removal");
    for chain in chains {
        let mut chain: ReceiverChain = serde_json::from_value(chain.clone()).unwrap();
        assert!(chain.decrypt(&message).is_err(), "a removed member's old keys must not open a later message");
    }
    assert_eq!(readable(&recv(&bob), &g), ["after carol left"]);
    let at_carol = recv(&carol);
    assert!(readable(&at_carol, &g).is_empty(), "a removed member reads nothing new: {at_carol:?}");
    assert_eq!(undecodable(&at_carol, &g), 1, "{at_carol:?}");
    assert!(ok(&carol, &["group", "info", &to]).contains("status left"));
    let refused = client(&carol, &["send", &to, "still here?"]);
    assert!(!refused.status.success(), "a former member cannot send");

    // Dave joins later. A relay that hands him a ciphertext from before he joined gives him nothing readable.
    ok(&alice, &["send", &to, "before dave"]);
    let old: String = sqlx::query_scalar("SELECT id FROM envelopes WHERE recipient = ? ORDER BY created_at DESC LIMIT 1")
        .bind(format!("group:{g}"))
        .fetch_one(&mut c)
        .await
        .unwrap();
    ok(&alice, &["group", "add", &to, "dave"]);
    ok(&alice, &["send", &to, "welcome dave"]);
    // Queued after alice's sender key reached dave: he holds her chain, but only from "welcome dave" on.
    let dave_device = device_of(&mut c, "dave").await;
    sqlx::query("INSERT INTO queue (device_id, envelope_id) VALUES (?, ?)").bind(&dave_device).bind(&old).execute(&mut c).await.unwrap();
    let at_dave = recv(&dave);
    assert_eq!(readable(&at_dave, &g), ["welcome dave"], "{at_dave:?}");
    assert_eq!(undecodable(&at_dave, &g), 1, "the replayed older message stays unreadable: {at_dave:?}");
    assert_eq!(readable(&recv(&bob), &g), ["before dave", "welcome dave"]);

    drop(c);
    assert_relay_never_saw(&relay, canary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_relay_cannot_add_a_ghost_fork_or_roll_back_the_log() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let home = |u: &str| dir.path().join(u);
    for user in ["alice", "bob", "carol", "mallory"] {
        register(&relay, &home(user), user, &format!("{user}-password"));
    }
    let (alice, bob, mallory) = (home("alice"), home("bob"), home("mallory"));
    let new_group = |members: &[&str]| {
        let g = group_id(&ok(&alice, &["group", "create"]));
        for m in members {
            ok(&alice, &["group", "add", &format!("group:{g}"), m]);
        }
        ok(&bob, &["recv"]);
        g
    };
    let mut c = relay_db(&relay).await;

    // 1. Mallory routed in without any log entry: she receives the ciphertext and reads nothing.
    let g = new_group(&["bob"]);
    let to = format!("group:{g}");
    let mallory_id = user_id(&mut c, "mallory").await;
    sqlx::query("INSERT INTO group_members (group_id, user_id, active) VALUES (?, ?, 1)").bind(&g).bind(mallory_id).execute(&mut c).await.unwrap();
    ok(&alice, &["send", &to, "not for mallory"]);
    assert_eq!(readable(&recv(&bob), &g), ["not for mallory"]);
    let at_mallory = recv(&mallory);
    assert!(at_mallory.iter().all(|m| m["body"] != "not for mallory"), "{at_mallory:?}");
    assert_eq!(undecodable(&at_mallory, &g), 1, "{at_mallory:?}");

    // 2. Mallory written into the log by an entry that no admin signed: clients refuse the group.
    let head = head_entry(&mut c, &g).await;
    let mallory_identity = identity_of(&mallory).await;
    let ghost = MembershipEntry::sign(
        &mallory_identity,
        head.group_id,
        head.seq + 1,
        head.hash(),
        MembershipOp::Add,
        Member { user: "mallory".into(), identity_key: mallory_identity.public_key() },
        1,
        Vec::new(),
    );
    sqlx::query("INSERT INTO group_log (group_id, seq, entry, created_at) VALUES (?, ?, ?, 0)")
        .bind(&g)
        .bind(ghost.seq as i64)
        .bind(ghost.encode())
        .execute(&mut c)
        .await
        .unwrap();
    let out = client(&alice, &["send", &to, "the vault code is 0000"]);
    assert!(!out.status.success(), "nothing goes to a group whose log does not verify");
    assert!(err(&out).contains("not allowed"), "{}", err(&out));
    let info = ok(&bob, &["group", "info", &to]);
    assert!(info.contains("status refused") && info.contains("not allowed"), "{info}");
    assert!(recv(&mallory).iter().all(|m| m["body"] != "the vault code is 0000"));

    // 3. Rolled back: the relay drops the entry that added carol, after bob saw it.
    let g = new_group(&["bob", "carol"]);
    let to = format!("group:{g}");
    sqlx::query("DELETE FROM group_log WHERE group_id = ? AND seq = 2").bind(&g).execute(&mut c).await.unwrap();
    let info = ok(&bob, &["group", "info", &to]);
    assert!(info.contains("status refused") && info.contains("rolled back"), "{info}");
    assert!(!client(&bob, &["send", &to, "x"]).status.success());

    // 4. Forked: the relay swaps the entry that added carol for another one alice signed (say, from a request it
    // held back), after bob saw the first.
    let g = new_group(&["bob", "carol"]);
    let to = format!("group:{g}");
    let second = head_entry(&mut c, &g).await;
    let alice_identity = identity_of(&alice).await;
    let mallory_key: Vec<u8> = sqlx::query("SELECT identity_key FROM identities i JOIN users u ON u.id = i.user_id WHERE u.name = 'mallory'")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    let other = MembershipEntry::sign(
        &alice_identity,
        second.group_id,
        second.seq,
        second.prev,
        MembershipOp::Add,
        Member { user: "mallory".into(), identity_key: mallory_key.try_into().unwrap() },
        2,
        Vec::new(),
    );
    sqlx::query("UPDATE group_log SET entry = ? WHERE group_id = ? AND seq = ?").bind(other.encode()).bind(&g).bind(second.seq as i64).execute(&mut c).await.unwrap();
    let info = ok(&bob, &["group", "info", &to]);
    assert!(info.contains("status refused") && info.contains("forked"), "{info}");
    assert!(ok(&bob, &["recv"]).contains("WARNING"), "the conversation shows the warning");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_loses_the_group_sender_keys() {
    use crate::linking::{link, login, this_device_id};
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (a, b, bob) = (dir.path().join("alice-a"), dir.path().join("alice-b"), dir.path().join("bob"));
    register(&relay, &a, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-12");
    login(&relay, &b, "alice", "alice-password-1", "alice-phone");
    link(&b, &a);
    let g = group_id(&ok(&a, &["group", "create", "family"]));
    let to = format!("group:{g}");
    ok(&a, &["group", "add", &to, "bob"]);
    ok(&bob, &["send", &to, "before the revocation"]);
    assert_eq!(readable(&recv(&b), &g), ["before the revocation"], "alice's second device reads the group");

    // What B held (bob's chain among it), kept by whoever has B now.
    let old_b = dir.path().join("alice-b-before-revocation.db");
    {
        let mut c = db(&b.join("client.db")).await;
        sqlx::query("VACUUM INTO ?").bind(old_b.display().to_string()).execute(&mut c).await.unwrap();
    }
    ok(&a, &["devices", "revoke", &this_device_id(&b)]);

    // Bob's next message: his client sees B gone, starts a new chain and sends it to A only.
    let after = ok(&bob, &["send", &to, "after the revocation"]);
    let mut c = relay_db(&relay).await;
    let ciphertext: Vec<u8> = relay_ciphertext(&mut c, after.trim()).await;
    let message = GroupMessage::from_bytes(&ciphertext).unwrap();
    let session: Vec<u8> = sqlx::query_scalar("SELECT session FROM e2e_groups WHERE group_id = ?").bind(&g).fetch_one(&mut db(&old_b).await).await.unwrap();
    let session: serde_json::Value = serde_json::from_slice(&session).unwrap();
    let chains = session["receivers"].as_array().expect("B held receiving chains");
    assert!(!chains.is_empty());
    for chain in chains {
        let mut chain: ReceiverChain = serde_json::from_value(chain.clone()).unwrap();
        assert!(chain.decrypt(&message).is_err(), "a revoked device's old keys must not open a later group message");
    }
    assert_eq!(readable(&recv(&a), &g), ["before the revocation", "after the revocation"]);
}

/// Regression: a member who sends to the group while a sender key from another member is still queued for it used to
/// take that key in during the send's round trips and then overwrite it with the send's older copy of the group —
/// and could never read that member again.
#[test]
fn a_sender_key_that_arrives_while_sending_is_kept() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let home = |u: &str| dir.path().join(u);
    for user in ["alice", "bob", "carol"] {
        register(&relay, &home(user), user, &format!("{user}-password"));
    }
    let (alice, bob, carol) = (home("alice"), home("bob"), home("carol"));
    let to = ok(&alice, &["group", "create", "race"]).trim().to_owned();
    let g = group_id(&to);
    ok(&alice, &["group", "add", &to, "bob"]);
    ok(&alice, &["group", "add", &to, "carol"]);
    ok(&bob, &["send", &to, "bob first"]);
    recv(&carol);
    // Carol's first message: her sender key and the message wait in bob's queue while bob sends.
    ok(&carol, &["send", &to, "carol first"]);
    ok(&bob, &["send", &to, "bob again"]);
    ok(&carol, &["send", &to, "carol again"]);
    let at_bob = recv(&bob);
    assert_eq!(readable(&at_bob, &g), ["carol first", "carol again"], "{at_bob:?}");
    assert_eq!(readable(&recv(&alice), &g), ["bob first", "carol first", "bob again", "carol again"]);
}

/// The group message ciphertext the relay holds for envelope `id`: in the envelope row when several devices share it,
/// in the queue row when exactly one device gets it (the store keeps it there so that the ack deletes it).
async fn relay_ciphertext(c: &mut SqliteConnection, id: &str) -> Vec<u8> {
    sqlx::query_scalar(
        "SELECT COALESCE((SELECT payload FROM queue WHERE envelope_id = ?1 AND payload IS NOT NULL LIMIT 1), \
         (SELECT payload FROM envelopes WHERE id = ?1))",
    )
    .bind(id)
    .fetch_one(c)
    .await
    .unwrap()
}
