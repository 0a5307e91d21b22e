//! Group roles and permissions through the real relay and real clients: rename, topic, roles, permissions; what a
//! member without the right cannot do (refused by the relay, and by clients when a hostile relay lets it through).

use std::path::Path;
use std::time::Duration;

use imfree_crypto::identity::UserIdentity;
use imfree_crypto::membership::{GroupState, InfoKind, MembershipEntry, MembershipOp, info_commitment};
use imfree_proto::{ErrorCode, Frame, FrameBody, GroupAppend, Payload};
use sqlx::{Connection, SqliteConnection};

use crate::common::*;

async fn db(path: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("database")
}

async fn identity_of(home: &Path) -> UserIdentity {
    let mut c = db(&home.join("client.db")).await;
    let seed: Vec<u8> = sqlx::query_scalar("SELECT value FROM e2e_state WHERE name = 'identity'").fetch_one(&mut c).await.unwrap();
    UserIdentity::from_seed(&seed.try_into().unwrap())
}

/// The group's log as the relay stores it, replayed.
async fn relay_state(relay: &RelayProc, group: &str) -> GroupState {
    let mut c = db(&relay.data.join("relay.db")).await;
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT entry FROM group_log WHERE group_id = ? ORDER BY seq").bind(group).fetch_all(&mut c).await.unwrap();
    let entries: Vec<MembershipEntry> = rows.iter().map(|b| MembershipEntry::decode(b).unwrap()).collect();
    GroupState::replay(&entries, None).unwrap()
}

/// Append `entry` through the real relay from the client in `home` (what a modified client could send): the relay's
/// answer.
async fn append_raw(home: &Path, group: &str, entry: &MembershipEntry) -> Result<(), ErrorCode> {
    let client = imfree_client::Client::open(Some(home)).await.expect("open client");
    let mut session = client.connect().await.expect("connect");
    let id = imfree_client::engine::new_envelope_id();
    let frame = Frame::new(FrameBody::GroupAppend(GroupAppend { id: Some(id.clone()), group: group.parse().unwrap(), entry: Payload(entry.encode()) }));
    session.send_frame(&frame).await.expect("send");
    let answer = session
        .wait_for(Duration::from_secs(30), |e| match e {
            imfree_client::Event::Ok(Some(r)) => *r == id,
            imfree_client::Event::Refused(e) => e.reference.as_deref() == Some(&id),
            _ => false,
        })
        .await
        .expect("an answer");
    session.close().await;
    match answer {
        imfree_client::Event::Refused(e) => Err(e.code),
        _ => Ok(()),
    }
}

fn info(home: &Path, group: &str) -> serde_json::Value {
    serde_json::from_str(&ok(home, &["group", "info", group, "--json"])).unwrap()
}

fn refusal(out: std::process::Output) -> String {
    assert!(!out.status.success(), "expected a refusal: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_permissions_are_enforced_by_relay_and_clients() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let home = |u: &str| dir.path().join(u);
    for user in ["alice", "bob", "carol", "dave"] {
        register(&relay, &home(user), user, &format!("{user}-password-1"));
    }
    let (alice, bob, carol, dave) = (home("alice"), home("bob"), home("carol"), home("dave"));
    let to = ok(&alice, &["group", "create", "first name"]).trim().to_owned();
    let g = to.strip_prefix("group:").unwrap().to_owned();
    for user in ["bob", "carol", "dave"] {
        ok(&alice, &["group", "add", &to, user]);
    }

    // Roles: alice owns the group; bob becomes an admin, dave read-only.
    ok(&alice, &["group", "role", &to, "bob", "admin"]);
    ok(&alice, &["group", "role", &to, "dave", "read-only"]);
    let roles = info(&carol, &to)["roles"].clone();
    assert_eq!(roles, serde_json::json!([["alice", "owner"], ["bob", "admin"], ["carol", "member"], ["dave", "read_only"]]), "{roles}");

    // Rename and topic: members see the verified texts; the relay never sees them.
    let secret_name = "CANARY-name-5e1f-the-fox-dreams";
    ok(&bob, &["group", "rename", &to, secret_name]);
    ok(&alice, &["group", "topic", &to, "launch on friday"]);
    for home in [&carol, &dave, &alice] {
        ok(home, &["recv"]);
        let i = info(home, &to);
        assert_eq!((i["name"].as_str(), i["topic"].as_str()), (Some(secret_name), Some("launch on friday")), "{i}");
    }
    crate::e2e::assert_relay_never_saw(&relay, secret_name);

    // A plain member may not rename, add, remove, or change roles: the client says so before sending anything…
    for args in [
        vec!["group", "rename", &to, "carol's group"],
        vec!["group", "add", &to, "alice"],
        vec!["group", "remove", &to, "dave"],
        vec!["group", "role", &to, "dave", "member"],
        vec!["group", "permissions", &to, "--post", "read-only"],
    ] {
        let why = refusal(client(&carol, &args));
        assert!(why.contains("does not allow") || why.contains("already a member"), "{args:?}: {why}");
    }
    // …and a modified client that sends the entry anyway is refused by the relay.
    let carol_key = identity_of(&carol).await;
    let state = relay_state(&relay, &g).await;
    let member = |name: &str, state: &GroupState| state.members().find(|(m, _)| m.user == name).map(|(m, _)| m.clone()).unwrap();
    let carol_member = member("carol", &state);
    let commitment = info_commitment(state.group_id(), InfoKind::Name, &[1; 16], "carol's group");
    for (op, subject, data) in [
        (MembershipOp::SetName, carol_member.clone(), commitment.to_vec()),
        (MembershipOp::Remove, member("dave", &state), vec![]),
        (MembershipOp::SetRole, member("dave", &state), vec![1]),
        (MembershipOp::SetRole, carol_member.clone(), vec![3]),
    ] {
        let entry = state.next_entry_with(&carol_key, op, subject, 1, data);
        assert_eq!(append_raw(&carol, &g, &entry).await, Err(ErrorCode::GroupRejected), "{op:?}");
    }
    // An admin may not demote the owner either.
    let bob_key = identity_of(&bob).await;
    let entry = state.next_entry_with(&bob_key, MembershipOp::SetRole, member("alice", &state), 1, vec![1]);
    assert_eq!(append_raw(&bob, &g, &entry).await, Err(ErrorCode::GroupRejected));

    // Read-only dave cannot post: the relay refuses.
    let why = refusal(client(&dave, &["send", &to, "can I?"]));
    assert!(why.contains("not_allowed") || why.contains("read-only"), "{why}");
    ok(&carol, &["send", &to, "members post"]);

    // The owner opens renaming to members; then carol may.
    ok(&alice, &["group", "permissions", &to, "--edit-info", "member"]);
    assert!(ok(&carol, &["group", "permissions", &to]).contains("edit-info  member"));
    ok(&carol, &["group", "rename", &to, "carol's group"]);
    ok(&bob, &["recv"]);
    assert_eq!(info(&bob, &to)["name"], "carol's group");

    // Every change is in the relay's audit log, with who did it.
    let out = std::process::Command::new(bin()).args(["admin", "--data"]).arg(&relay.data).args(["audit", "--json", "--conv", &to]).output().unwrap();
    let log = parse_json_lines(&String::from_utf8_lossy(&out.stdout));
    let actions: Vec<(String, String)> = log.iter().rev().map(|e| (e["action"].as_str().unwrap().to_owned(), e["actor"].as_str().unwrap().to_owned())).collect();
    let want = [
        ("group.create", "alice"),
        ("group.add", "alice"),
        ("group.add", "alice"),
        ("group.add", "alice"),
        ("group.set_role.admin", "alice"),
        ("group.set_role.read_only", "alice"),
        ("group.rename", "bob"),
        ("group.set_topic", "alice"),
        ("group.set_permissions", "alice"),
        ("group.rename", "carol"),
    ];
    assert_eq!(actions, want.map(|(a, u)| (a.to_owned(), u.to_owned())), "{log:?}");

    // A hostile relay writes a change no one allowed to make into the log (dave, read-only, renames): every client
    // refuses the group rather than trust it.
    let state = relay_state(&relay, &g).await;
    let dave_key = identity_of(&dave).await;
    let dave_member = member("dave", &state);
    let forged = state.next_entry_with(&dave_key, MembershipOp::SetName, dave_member, 1, info_commitment(state.group_id(), InfoKind::Name, &[2; 16], "dave's").to_vec());
    let mut c = db(&relay.data.join("relay.db")).await;
    sqlx::query("INSERT INTO group_log (group_id, seq, entry, created_at) VALUES (?, ?, ?, 0)")
        .bind(&g)
        .bind(forged.seq as i64)
        .bind(forged.encode())
        .execute(&mut c)
        .await
        .unwrap();
    let i = info(&bob, &to);
    assert!(i["status"].as_str().unwrap().starts_with("refused"), "{i}");
    assert!(i["status"].as_str().unwrap().contains("not allowed"), "{i}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_link_admits_whoever_holds_it_until_it_is_closed() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let home = |u: &str| dir.path().join(u);
    for user in ["alice", "bob", "carol", "erin"] {
        register(&relay, &home(user), user, &format!("{user}-password-1"));
    }
    let (alice, bob, carol, erin) = (home("alice"), home("bob"), home("carol"), home("erin"));
    let to = ok(&alice, &["group", "create", "open door"]).trim().to_owned();
    ok(&alice, &["group", "add", &to, "bob"]);
    ok(&bob, &["send", &to, "before carol"]);

    // Bob, a plain member, may not open a link; alice may.
    assert!(refusal(client(&bob, &["group", "invite-link", &to])).contains("does not allow"));
    let link = ok(&alice, &["group", "invite-link", &to]).trim().to_owned();
    assert!(link.starts_with("imfree-invite:"), "{link}");
    // Without the link, carol can neither read the log nor join.
    let (group, _) = imfree_client::groups::parse_invite_link(&link).unwrap();
    let forged = format!("imfree-invite:{group}:{}", "A".repeat(43));
    assert!(!client(&carol, &["group", "join", &forged]).status.success(), "a made-up key admits nobody");

    // With it, carol joins; she reads what is sent from now on, not before, and the others see her join.
    assert_eq!(ok(&carol, &["group", "join", &link]).trim(), to);
    let names: Vec<String> = info(&alice, &to)["roles"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    ok(&bob, &["send", &to, "welcome carol"]);
    let at_carol = parse_json_lines(&ok(&carol, &["recv", "--json"]));
    let readable: Vec<&str> = at_carol.iter().filter(|m| m.get("event").is_none() && m.get("error").is_none()).filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(readable, ["welcome carol"], "{at_carol:?}");
    let at_alice = parse_json_lines(&ok(&alice, &["recv", "--json"]));
    assert!(at_alice.iter().any(|m| m["body"].as_str().is_some_and(|b| b.contains("carol joined through an invite link"))), "{at_alice:?}");

    // Closed, the link admits nobody more.
    ok(&alice, &["group", "invite-link", &to, "--close", &link]);
    let why = refusal(client(&erin, &["group", "join", &link]));
    assert!(why.contains("not_a_member") || why.contains("invite"), "{why}");
    let out = std::process::Command::new(bin()).args(["admin", "--data"]).arg(&relay.data).args(["audit", "--json", "--conv", &to]).output().unwrap();
    let actions: Vec<String> = parse_json_lines(&String::from_utf8_lossy(&out.stdout)).iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(&actions[..3], ["group.close_invite_link", "group.join_by_invite", "group.open_invite_link"]);
}
