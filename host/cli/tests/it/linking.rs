//! Device linking and revocation through real processes: a device that logged in with the password joins the
//! account's end-to-end identity only when a linked device approves it (the new device shows the code, the existing
//! one runs `devices approve CODE`); it reads messages sent after the link and none from before; a wrong code or a
//! QR payload naming another key links nothing; a revoked device is cut off, and a relay that serves an older
//! revocation list (its database rewritten between restarts) is refused by the contact's client.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sqlx::{Connection, Row, SqliteConnection};

use crate::common::*;

/// Log `home` in to an existing account (a new relay device without end-to-end keys), named `name`.
pub(crate) fn login(relay: &RelayProc, home: &Path, user: &str, password: &str, name: &str) {
    let out = client_with(
        home,
        &["login", "--server", &relay.url, "--user", user, "--password-stdin"],
        &format!("{password}\n"),
        &[("HOSTNAME", name)],
    );
    assert!(out.status.success(), "login {user}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("devices link"), "the user is told how to link");
}

/// `devices link` on the new device, running in the background: its stdout lines arrive on the channel.
struct Linking {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Linking {
    fn start(home: &Path, timeout_secs: u64) -> Linking {
        let mut child = Command::new(bin())
            .arg("client")
            .arg("--home")
            .arg(home)
            .args(["devices", "link", "--timeout", &timeout_secs.to_string()])
            .env("IMFREE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn devices link");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Linking { child, lines, seen: Vec::new() }
    }

    /// The value of the first line starting with `prefix`.
    fn field(&mut self, prefix: &str) -> String {
        loop {
            if let Some(v) = self.seen.iter().find_map(|l| l.strip_prefix(prefix)) {
                return v.trim().to_owned();
            }
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("`devices link` printed no {prefix:?}: {:?}", self.seen),
            }
        }
    }

    /// Wait for it to end: (success, stdout, stderr).
    fn finish(mut self) -> (bool, String, String) {
        let status = self.child.wait().expect("devices link exits");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        // The reader thread ends at EOF; collect what it has.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status.success(), self.seen.join("\n"), err)
    }
}

/// Link `new` (logged in, not linked) from `existing`; both commands must succeed.
pub(crate) fn link(new: &Path, existing: &Path) {
    let mut linking = Linking::start(new, 60);
    let code = linking.field("link code ");
    let fingerprint = linking.field("this device's fingerprint ");
    let approved = ok(existing, &["devices", "approve", &code, "--yes", "--timeout", "60"]);
    assert!(approved.contains(&fingerprint), "the approver is shown the new device's fingerprint: {approved}");
    let (success, out, err) = linking.finish();
    assert!(success, "devices link failed: {err}\n{out}");
    assert!(out.contains("linked: this device is"), "{out}");
}

/// Certificate ids of the account's active devices as `devices` lists them: (id, line).
pub(crate) fn device_rows(home: &Path) -> Vec<(String, String)> {
    ok(home, &["devices"])
        .lines()
        .skip(1)
        .filter(|l| l.contains("\tactive"))
        .map(|l| (l.split('\t').next().unwrap_or_default().to_owned(), l.to_owned()))
        .collect()
}

pub(crate) fn this_device_id(home: &Path) -> String {
    device_rows(home).into_iter().find(|(_, l)| l.contains("this device")).map(|(id, _)| id).expect("this device is listed")
}

fn bodies(home: &Path) -> Vec<String> {
    parse_json_lines(&ok(home, &["recv", "--json"])).iter().filter_map(|m| m["body"].as_str().map(str::to_owned)).collect()
}

#[test]
fn a_linked_device_reads_new_messages_but_not_history() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (a, b, bob) = (dir.path().join("alice-a"), dir.path().join("alice-b"), dir.path().join("bob"));
    register(&relay, &a, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-12");
    login(&relay, &b, "alice", "alice-password-1", "alice-phone");
    // Before the link B has no keys: it cannot send, and nothing sent now is encrypted for it.
    let out = client(&b, &["send", "bob", "from an unlinked device"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("devices link"), "{}", String::from_utf8_lossy(&out.stderr));
    ok(&bob, &["send", "alice", "sent before the link"]);
    assert_eq!(bodies(&a), ["sent before the link"]);

    link(&b, &a);
    ok(&bob, &["send", "alice", "sent after the link"]);
    assert_eq!(bodies(&a), ["sent after the link"]);
    assert_eq!(bodies(&b), ["sent after the link"], "the new device sees new messages, not history");
    assert!(!ok(&b, &["history", "bob"]).contains("before the link"));

    // Both devices list the same two devices, each marking itself; the names come from the relay.
    let (rows_a, rows_b) = (device_rows(&a), device_rows(&b));
    assert_eq!(rows_a.len(), 2, "{rows_a:?}");
    let ids = |rows: &[(String, String)]| {
        let mut v: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&rows_a), ids(&rows_b));
    assert_ne!(this_device_id(&a), this_device_id(&b));
    assert!(rows_a.iter().any(|(_, l)| l.contains("alice-phone")), "{rows_a:?}");

    // The linked device speaks for alice, and bob sees no identity warning.
    ok(&b, &["send", "bob", "hello from the phone"]);
    let got = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"], "hello from the phone");
    assert!(got[0].get("warning").is_none() && got[0].get("error").is_none(), "{}", got[0]);
    // Linking twice is refused.
    let again = client(&b, &["devices", "link", "--timeout", "5"]);
    assert!(!again.status.success());
    assert!(!relay.log().contains("panicked"));
}

#[test]
fn a_wrong_code_or_a_foreign_key_links_nothing() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (a, b) = (dir.path().join("alice-a"), dir.path().join("alice-b"));
    register(&relay, &a, "alice", "alice-password-1");
    login(&relay, &b, "alice", "alice-password-1", "alice-tablet");

    // Not a code at all: refused before anything is sent.
    let out = client(&a, &["devices", "approve", "not-a-code", "--yes"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid link code"), "{}", String::from_utf8_lossy(&out.stderr));

    // A mistyped code names another rendezvous: the two devices never meet and both give up cleanly.
    let mut linking = Linking::start(&b, 6);
    let code = linking.field("link code ");
    let mut typo: Vec<char> = code.chars().collect();
    typo[0] = if typo[0] == 'A' { 'B' } else { 'A' };
    let typo: String = typo.into_iter().collect();
    let out = client(&a, &["devices", "approve", &typo, "--yes", "--timeout", "6"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no device joined"), "{}", String::from_utf8_lossy(&out.stderr));
    let (success, _, err) = linking.finish();
    assert!(!success, "the new device gives up too");
    assert!(err.contains("no device joined"), "{err}");

    // The right code, but a QR payload naming another device's key: the approver refuses the device in the middle,
    // and the new device is told and stops.
    let mut linking = Linking::start(&b, 60);
    let code = imfree_crypto::linking::LinkCode::parse(&linking.field("link code ")).unwrap();
    let foreign = code.qr_payload(&imfree_crypto::device::DeviceKeys::generate().static_public());
    let out = client(&a, &["devices", "approve", &foreign, "--yes", "--timeout", "60"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("someone is in the middle"), "{}", String::from_utf8_lossy(&out.stderr));
    let (success, _, err) = linking.finish();
    assert!(!success);
    assert!(err.contains("nothing was linked"), "{err}");

    // Nothing was linked: one device on the account, and the new one still has no keys.
    assert_eq!(device_rows(&a).len(), 1);
    assert!(!client(&b, &["send", "alice", "still unlinked"]).status.success());
    // Declining at the prompt links nothing either.
    let mut linking = Linking::start(&b, 60);
    let code = linking.field("link code ");
    let out = client_with(&a, &["devices", "approve", &code, "--timeout", "60"], "n\n", &[]);
    assert!(!out.status.success(), "declined");
    let (success, _, err) = linking.finish();
    assert!(!success && err.contains("not approved"), "{err}");
    assert_eq!(device_rows(&a).len(), 1);
    assert!(!relay.log().contains("panicked"));
}

async fn db(relay: &RelayProc) -> SqliteConnection {
    let url = format!("sqlite://{}", relay.data.join("relay.db").display());
    SqliteConnection::connect(&url).await.expect("relay database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_cut_off_and_an_older_revocation_list_is_refused() {
    let dir = tempdir();
    let mut relay = RelayProc::start(&dir.path().join("relay"), None);
    let (a, b, c, bob) = (dir.path().join("alice-a"), dir.path().join("alice-b"), dir.path().join("alice-c"), dir.path().join("bob"));
    register(&relay, &a, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-12");
    login(&relay, &b, "alice", "alice-password-1", "alice-phone");
    login(&relay, &c, "alice", "alice-password-1", "alice-laptop");
    link(&b, &a);
    link(&c, &a);
    ok(&bob, &["send", "alice", "to all three"]);
    for home in [&a, &b, &c] {
        assert_eq!(bodies(home), ["to all three"]);
    }
    let (b_id, c_id) = (this_device_id(&b), this_device_id(&c));

    // A device cannot revoke itself.
    let out = client(&a, &["devices", "revoke", &this_device_id(&a)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot revoke itself"), "{}", String::from_utf8_lossy(&out.stderr));

    // Revoke C (list version 1): it is cut off, and bob's next message goes to A and B only.
    assert!(ok(&a, &["devices", "revoke", &c_id]).contains("version 1"));
    let out = client(&c, &["recv"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"), "{}", String::from_utf8_lossy(&out.stderr));
    ok(&bob, &["send", "alice", "after revoking C"]);
    assert_eq!(bodies(&a), ["after revoking C"]);
    assert_eq!(bodies(&b), ["after revoking C"]);
    let listed = ok(&b, &["devices"]);
    assert!(listed.contains(&format!("{c_id}\t-\t-\t-\trevoked at")), "{listed}");

    // What a hostile operator keeps: B's keys and the version-1 list, to bring B back after it is revoked.
    let (b_dev, keys, list_v1): (String, Vec<u8>, Vec<u8>) = {
        let mut conn = db(&relay).await;
        let row = sqlx::query(
            "SELECT k.device_id, k.certificate, l.list FROM device_keys k JOIN devices d ON d.id = k.device_id \
             JOIN revocation_lists l ON l.user_id = d.user_id WHERE d.name = 'alice-phone'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    let snapshot = dir.path().join("before-revoking-b.db");
    {
        let mut conn = db(&relay).await;
        sqlx::query("VACUUM INTO ?1").bind(snapshot.display().to_string()).execute(&mut conn).await.unwrap();
    }

    // Revoke B (version 2): bob's client sees (and pins) version 2 and sends to A only.
    assert!(ok(&a, &["devices", "revoke", &b_id]).contains("version 2"));
    ok(&bob, &["send", "alice", "after revoking B"]);
    assert_eq!(bodies(&a), ["after revoking B"]);
    let out = client(&b, &["recv"]);
    assert!(!out.status.success(), "a revoked device can no longer connect");
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"), "{}", String::from_utf8_lossy(&out.stderr));

    // The operator rolls the account back: version 1 of the list, B un-revoked with its keys and sessions.
    relay.kill();
    {
        let mut conn = db(&relay).await;
        sqlx::query("UPDATE revocation_lists SET list = ?1, version = 1").bind(&list_v1).execute(&mut conn).await.unwrap();
        sqlx::query("UPDATE devices SET revoked_at = NULL WHERE id = ?1").bind(&b_dev).execute(&mut conn).await.unwrap();
        sqlx::query("UPDATE sessions SET revoked_at = NULL WHERE device_id = ?1").bind(&b_dev).execute(&mut conn).await.unwrap();
        sqlx::query("ATTACH DATABASE ?1 AS old").bind(snapshot.display().to_string()).execute(&mut conn).await.unwrap();
        sqlx::query("INSERT INTO device_keys SELECT * FROM old.device_keys WHERE device_id = ?1").bind(&b_dev).execute(&mut conn).await.unwrap();
        sqlx::query("INSERT INTO one_time_prekeys SELECT * FROM old.one_time_prekeys WHERE device_id = ?1")
            .bind(&b_dev)
            .execute(&mut conn)
            .await
            .unwrap();
        let restored: Vec<u8> = sqlx::query_scalar("SELECT certificate FROM device_keys WHERE device_id = ?1").bind(&b_dev).fetch_one(&mut conn).await.unwrap();
        assert_eq!(restored, keys);
    }
    relay.restart();
    let out = client(&bob, &["send", "alice", "must not reach B"]);
    assert!(!out.status.success(), "bob's client refuses the rolled-back list");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rolled back"), "{err}");
    let on_b = bodies(&b);
    assert!(!on_b.iter().any(|m| m == "must not reach B" || m == "after revoking B"), "B never gets a readable copy: {on_b:?}");
    assert!(!relay.log().contains("panicked"));
}
