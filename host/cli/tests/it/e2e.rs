//! End-to-end encryption through the real relay: what the relay stores and logs never contains the plaintext.

use base64::Engine as _;

use crate::common::*;

/// Every way the canary could appear in a file: as is, hex, and base64 at each of the three alignments.
fn encodings(canary: &str) -> Vec<Vec<u8>> {
    let mut out = vec![canary.as_bytes().to_vec(), hex_lower(canary.as_bytes()).into_bytes()];
    for skip in 0..3 {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&canary.as_bytes()[skip..]);
        // Drop the last, alignment-dependent characters: the middle of the encoding is what any copy contains.
        out.push(b64.as_bytes()[2..b64.len() - 4].to_vec());
    }
    out
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// No file of the relay's data dir, nor its log, holds `canary` as plain text, hex or base64.
pub(crate) fn assert_relay_never_saw(relay: &RelayProc, canary: &str) {
    let mut files = Vec::new();
    files_under(&relay.data, &mut files);
    files.push(relay.data.with_extension("log"));
    assert!(files.iter().any(|f| f.ends_with("relay.db")), "{files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for needle in encodings(canary) {
            assert!(
                memchr::memmem::find(&bytes, &needle).is_none(),
                "{} contains the canary as {:?}",
                file.display(),
                String::from_utf8_lossy(&needle)
            );
        }
    }
}

#[test]
fn a_canary_never_reaches_the_relays_disk_or_logs() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-12");

    let canary = "CANARY-7f3a9c1e-the-eagle-lands-at-dawn";
    // A short message, and a long one that the client compresses before encrypting.
    let long = format!("{canary} {}", "and again the canary sings ".repeat(200));
    ok(&alice, &["send", "bob", canary, &long]);
    // Bob is offline at first, so the relay holds the ciphertexts in its queue and WAL; then he reads and replies.
    let got = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["body"], canary, "bob reads the plaintext");
    assert_eq!(got[1]["body"].as_str().unwrap(), long);
    ok(&bob, &["send", "alice", &format!("re: {canary}")]);
    assert!(ok(&alice, &["recv"]).contains(canary));

    assert_relay_never_saw(&relay, canary);
    // The clients' own stores do hold it (that is where plaintext lives), which shows the search can find it.
    let bob_db = std::fs::read(bob.join("client.db")).unwrap_or_default();
    let bob_wal = std::fs::read(bob.join("client.db-wal")).unwrap_or_default();
    let found = [bob_db, bob_wal].iter().any(|b| b.windows(canary.len()).any(|w| w == canary.as_bytes()));
    assert!(found, "the search finds the canary where it is expected");
}

#[test]
fn an_unknown_recipient_fails_alone_and_a_note_to_self_is_kept() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password-1");
    register(&relay, &bob, "bob", "bob-password-12");

    let out = client(&alice, &["send", "nobody", "hello?"]);
    assert!(!out.status.success(), "a send to a user who does not exist fails");
    // The failed message does not block the outbox: the next send goes out.
    ok(&alice, &["send", "bob", "after the failure"]);
    let got = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"], "after the failure");

    // Alice has no other device: a note to herself is kept locally and nothing goes to the relay.
    ok(&alice, &["send", "alice", "remember the milk"]);
    assert!(ok(&alice, &["history", "alice"]).contains("remember the milk"));
    assert!(!relay.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passphrase_seals_every_key_the_device_holds() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    let pass = [("IMFREE_PASSPHRASE", "correct horse battery staple")];
    let out = client_with(&alice, &["register", "--server", &relay.url, "--user", "alice", "--password-stdin"], "alice-password\n", &pass);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    register(&relay, &bob, "bob", "bob-password-1");
    ok(&bob, &["send", "alice", "hello sealed alice"]);
    let run = |args: &[&str], env: &[(&str, &str)]| client_with(&alice, args, "", env);
    let got = run(&["recv"], &pass);
    assert!(String::from_utf8_lossy(&got.stdout).contains("hello sealed alice"), "{}", String::from_utf8_lossy(&got.stderr));
    assert!(run(&["send", "bob", "hello bob"], &pass).status.success());
    assert!(ok(&bob, &["recv"]).contains("hello bob"));

    // Without the passphrase, or with a wrong one, the home cannot be used.
    let locked = run(&["recv"], &[]);
    assert!(!locked.status.success() && String::from_utf8_lossy(&locked.stderr).contains("encrypted"), "{}", String::from_utf8_lossy(&locked.stderr));
    let wrong = run(&["recv"], &[("IMFREE_PASSPHRASE", "Tr0ub4dor&3")]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"), "{}", String::from_utf8_lossy(&wrong.stderr));

    // The secrets, read through the unlocked key store, appear nowhere on disk: not raw, not hex.
    let home = imfree_client::home::Home::open_with(Some(&alice), Some(pass[0].1), false).unwrap();
    let account = home.load().unwrap().unwrap();
    let store = imfree_client::store::LocalStore::open_sealed(&home.database(), home.vault().cloned()).await.unwrap();
    let identity = store.e2e_state("identity").await.unwrap().expect("the identity seed");
    store.close().await;
    let mut secrets: Vec<Vec<u8>> = vec![identity.clone(), hex_lower(&identity).into_bytes()];
    for h in [&account.signing_seed, &account.static_secret] {
        secrets.push(h.as_bytes().to_vec());
        secrets.push((0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect());
    }
    secrets.push(account.token.clone().unwrap().into_bytes());
    let mut files = Vec::new();
    files_under(&alice, &mut files);
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for s in &secrets {
            assert!(!bytes.windows(s.len()).any(|w| w == s.as_slice()), "{} holds a secret in the clear", file.display());
        }
    }
}
