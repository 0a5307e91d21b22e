//! Client scope through real processes: `imfree client --plugin FILE` runs plugins in the user's own client — an
//! outgoing filter that refuses and rewrites before anything is queued, and an auto-reply that answers as the user.

use crate::common::*;

fn bodies(home: &std::path::Path) -> Vec<String> {
    parse_json_lines(&ok(home, &["recv", "--json"])).iter().map(|m| m["body"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn plugins_in_the_client_filter_what_leaves_and_answer_what_arrives() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password");
    register(&relay, &bob, "bob", "bob-password-1");
    let filter = dir.path().join(install_plugin(dir.path(), "filter"));
    let filter = filter.to_str().unwrap();

    // The filter refuses before anything is stored or sent, and masks a word in what it lets through.
    let refused = client(&alice, &["--plugin", filter, "send", "bob", "this is forbidden"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("not sent: filter: messages containing \"forbidden\""), "{why}");
    assert!(ok(&alice, &["history", "bob"]).trim().is_empty(), "nothing was queued");
    ok(&alice, &["--plugin", filter, "send", "bob", "my secret plan"]);
    assert_eq!(bodies(&bob), ["my ****** plan"], "bob gets only the filtered text");
    assert!(!ok(&alice, &["history", "bob"]).contains("secret"), "the original never reached alice's store either");

    // An auto-reply in bob's client answers as bob, end to end, and counts in bob's local kv.
    let auto = dir.path().join(install_plugin(dir.path(), "auto-reply"));
    let auto = auto.to_str().unwrap();
    ok(&alice, &["send", "bob", "ping?"]);
    let at_bob = ok(&bob, &["--plugin", auto, "--grant", "kv", "--grant", "messaging", "recv"]);
    assert!(at_bob.contains("ping?"), "{at_bob}");
    let got = parse_json_lines(&ok(&alice, &["recv", "--json"]));
    assert!(got.iter().any(|m| m["from"] == "bob" && m["body"] == "pong"), "{got:?}");

    // Without the grant the plugin's post is refused (the plugin logs it) and nothing is sent.
    ok(&alice, &["send", "bob", "ping again"]);
    ok(&bob, &["--plugin", auto, "--grant", "kv", "recv"]);
    assert!(parse_json_lines(&ok(&alice, &["recv", "--json"])).is_empty(), "no messaging grant, no reply");
}
