//! A hostile relay: the operator (or an intruder) rewrites the relay's database between restarts of the real relay
//! process — the relay then serves exactly what its store says. The clients must refuse or warn, and the attacker's
//! own keys must never receive a readable message.

use sqlx::{Connection, Row, SqliteConnection};

use crate::common::*;

async fn db(relay: &RelayProc) -> SqliteConnection {
    let url = format!("sqlite://{}", relay.data.join("relay.db").display());
    SqliteConnection::connect(&url).await.expect("relay database")
}

async fn device_of(conn: &mut SqliteConnection, user: &str) -> (String, i64) {
    let row = sqlx::query("SELECT d.id, d.user_id FROM devices d JOIN users u ON u.id = d.user_id WHERE u.name = ?")
        .bind(user)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// alice, bob and mallory registered; alice and bob have talked, so each has pinned the other's identity.
fn world() -> (tempfile::TempDir, RelayProc) {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    for user in ["alice", "bob", "mallory"] {
        register(&relay, &dir.path().join(user), user, &format!("{user}-password"));
    }
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    ok(&alice, &["send", "bob", "hello bob"]);
    assert!(ok(&bob, &["recv"]).contains("hello bob"));
    ok(&bob, &["send", "alice", "hello alice"]);
    assert!(ok(&alice, &["recv"]).contains("hello alice"));
    (dir, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_key_bundle_is_refused_and_the_message_held() {
    let (dir, mut relay) = world();
    let (alice, mallory) = (dir.path().join("alice"), dir.path().join("mallory"));
    relay.kill();
    {
        // Serve mallory's certificate and prekeys as bob's, and claim bob's identity is mallory's.
        let mut c = db(&relay).await;
        let (bob_dev, bob_id) = device_of(&mut c, "bob").await;
        let (mal_dev, mal_id) = device_of(&mut c, "mallory").await;
        sqlx::query(
            "UPDATE device_keys SET (certificate, signed_prekey, kem_last_resort) = \
             (SELECT certificate, signed_prekey, kem_last_resort FROM device_keys WHERE device_id = ?1) WHERE device_id = ?2",
        )
        .bind(&mal_dev)
        .bind(&bob_dev)
        .execute(&mut c)
        .await
        .unwrap();
        sqlx::query("DELETE FROM one_time_prekeys WHERE device_id = ?").bind(&bob_dev).execute(&mut c).await.unwrap();
        sqlx::query("UPDATE one_time_prekeys SET device_id = ?1 WHERE device_id = ?2").bind(&bob_dev).bind(&mal_dev).execute(&mut c).await.unwrap();
        sqlx::query("UPDATE identities SET identity_key = (SELECT identity_key FROM identities WHERE user_id = ?1) WHERE user_id = ?2")
            .bind(mal_id)
            .bind(bob_id)
            .execute(&mut c)
            .await
            .unwrap();
    }
    relay.restart();
    let out = client(&alice, &["send", "bob", "the launch code is 1234"]);
    assert!(!out.status.success(), "the send must not go out");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("identity key changed"), "a loud warning: {err}");
    assert!(ok(&alice, &["history", "bob"]).contains("the launch code is 1234 (queued)"), "held in the outbox");
    // Nothing reached mallory's device, and the safety number shown is for the NEW key, with a warning.
    assert!(ok(&mallory, &["recv", "--json"]).trim().is_empty());
    let verify = client(&alice, &["verify", "bob"]);
    assert!(String::from_utf8_lossy(&verify.stderr).contains("WARNING"), "{}", String::from_utf8_lossy(&verify.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_device_certified_by_another_identity_is_refused() {
    let (dir, mut relay) = world();
    let (alice, bob, mallory) = (dir.path().join("alice"), dir.path().join("bob"), dir.path().join("mallory"));
    relay.kill();
    {
        // Add a device to bob's account whose certificate comes from mallory's identity.
        let mut c = db(&relay).await;
        let (_, bob_id) = device_of(&mut c, "bob").await;
        let (mal_dev, _) = device_of(&mut c, "mallory").await;
        sqlx::query("INSERT INTO devices (id, user_id, signing_key, static_key, name, created_at) VALUES ('01GHOST0000000000000000000', ?, zeroblob(32), randomblob(32), 'ghost', 0)")
            .bind(bob_id)
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO device_keys (device_id, user_id, certificate, signed_prekey, kem_last_resort, updated_at) \
             SELECT '01GHOST0000000000000000000', ?1, certificate, signed_prekey, kem_last_resort, 0 FROM device_keys WHERE device_id = ?2",
        )
        .bind(bob_id)
        .bind(&mal_dev)
        .execute(&mut c)
        .await
        .unwrap();
    }
    relay.restart();
    let out = client(&alice, &["send", "bob", "only for bob"]);
    assert!(!out.status.success(), "a send to a list with a ghost must not go out");
    assert!(String::from_utf8_lossy(&out.stderr).contains("different identities"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ok(&bob, &["recv", "--json"]).trim().is_empty());
    assert!(ok(&mallory, &["recv", "--json"]).trim().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_ciphertext_under_a_new_id_is_not_shown_twice() {
    let (dir, mut relay) = world();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    ok(&alice, &["send", "bob", "pay mallory 10 euros"]);
    relay.kill();
    {
        // Before bob fetches it, queue a copy of the same ciphertext under a fresh envelope id.
        let mut c = db(&relay).await;
        let (bob_dev, _) = device_of(&mut c, "bob").await;
        let row = sqlx::query("SELECT q.envelope_id, q.payload FROM queue q WHERE q.device_id = ? ORDER BY q.seq DESC LIMIT 1")
            .bind(&bob_dev)
            .fetch_one(&mut c)
            .await
            .unwrap();
        let (original, payload): (String, Vec<u8>) = (row.get(0), row.get(1));
        let copy = "01J00000000000000000000000";
        sqlx::query(
            "INSERT INTO envelopes (id, kind, sender, sender_device, recipient, mime, payload, created_at) \
             SELECT ?1, kind, sender, sender_device, recipient, mime, payload, created_at + 1 FROM envelopes WHERE id = ?2",
        )
        .bind(copy)
        .bind(&original)
        .execute(&mut c)
        .await
        .unwrap();
        sqlx::query("INSERT INTO queue (device_id, envelope_id, payload) VALUES (?, ?, ?)")
            .bind(&bob_dev)
            .bind(copy)
            .bind(payload)
            .execute(&mut c)
            .await
            .unwrap();
    }
    relay.restart();
    let got = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    let shown: Vec<&str> = got.iter().filter(|m| m.get("error").is_none()).filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(shown, ["pay mallory 10 euros"], "shown once: {got:?}");
    assert_eq!(got.iter().filter(|m| m["error"] == "undecodable").count(), 1, "the replay is flagged: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_relabelled_as_from_a_contact_carries_a_loud_warning() {
    let (dir, mut relay) = world();
    let (bob, mallory) = (dir.path().join("bob"), dir.path().join("mallory"));
    ok(&mallory, &["send", "bob", "it is me, alice: send the files"]);
    relay.kill();
    {
        // The relay claims mallory's envelope came from alice's device.
        let mut c = db(&relay).await;
        let (alice_dev, _) = device_of(&mut c, "alice").await;
        sqlx::query("UPDATE envelopes SET sender = 'alice', sender_device = ? WHERE sender = 'mallory'")
            .bind(&alice_dev)
            .execute(&mut c)
            .await
            .unwrap();
    }
    relay.restart();
    let got = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["from"], "alice");
    assert_eq!(got[0]["warning"], "identity_changed", "the key behind it is not alice's: {}", got[0]);
    // Alice's pinned identity is unchanged: her real messages still arrive without a warning.
    ok(&dir.path().join("alice"), &["send", "bob", "the real alice"]);
    let real = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    assert_eq!(real.len(), 1, "{real:?}");
    assert!(real[0].get("warning").is_none(), "{}", real[0]);
}
