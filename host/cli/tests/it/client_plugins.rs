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

    // What a plugin posts leaves as bob, so it passes bob's filters like what bob types: the probe echoes each
    // message ("seen …"); the filter masks the echo of one and refuses the echo of the other.
    let probe = dir.path().join(install_probe(dir.path(), "probe", "messaging = true"));
    ok(&alice, &["send", "bob", "the secret word", "forbidden fruit"]);
    let out = client(&bob, &["--plugin", filter, "--plugin", probe.to_str().unwrap(), "--grant", "messaging", "recv"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(bodies(&alice), ["seen the ****** word"], "only the filtered echo reached alice");
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused by a filter"), "bob's log says why the other was not sent");

    // incoming-message sees what a message replies to, and whom it mentions (outside code only).
    let first = ok(&alice, &["send", "bob", "first"]).trim().lines().last().expect("an id").to_owned();
    ok(&alice, &["reply", &first, "second @bob `ask @carol`"]);
    ok(&bob, &["--plugin", probe.to_str().unwrap(), "--grant", "messaging", "recv"]);
    assert_eq!(bodies(&alice), ["seen first".to_owned(), format!("seen second @bob `ask @carol` in reply to {first} mentioning bob")]);
}

/// Run `imfree client recv` for `home` with the probe plugin and `grants`; returns (stdout, stderr).
fn recv_with_probe(home: &std::path::Path, probe: &str, grants: &[&str], wait: Option<&str>) -> (String, String) {
    let mut args = vec!["--plugin", probe];
    for g in grants {
        args.extend(["--grant", g]);
    }
    args.push("recv");
    if let Some(secs) = wait {
        args.extend(["--wait", secs]);
    }
    let out = client_with(home, &args, "", &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "recv {args:?} failed: {stderr}\n{stdout}");
    (stdout, stderr)
}

/// Timers, outbound HTTP, kv and messaging in the client scope through `--grant`: a timer fires while `recv --wait`
/// waits and its post goes out as the user; a request reaches a loopback server only when its origin (and private
/// addresses) are granted; kv persists in the client's store between runs. Each is refused — the plugin gets the reason, the client's log names plugin, version and
/// capability — when the grant or the manifest lacks it. The probe runs a command for each received
/// `probe: NAME ARGS` and replies with the answer; it posts timer firings to the conversation "timers" (a user).
#[test]
fn client_plugins_get_timers_and_http_only_when_asked_for_and_granted() {
    let dir = tempdir();
    let http = LoopbackHttp::start();
    let origin = format!("http://127.0.0.1:{}", http.port);
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob, timers) = (dir.path().join("alice"), dir.path().join("bob"), dir.path().join("timers"));
    register(&relay, &alice, "alice", "alice-password");
    register(&relay, &bob, "bob", "bob-password-1");
    register(&relay, &timers, "timers", "timers-password");
    let probe = dir.path().join(install_probe(dir.path(), "probe", &format!("kv = true\nmessaging = true\ntimers = true\nhttp.outbound = [\"{origin}\"]")));
    let unasked = dir.path().join(install_probe(dir.path(), "probe-unasked", "messaging = true"));
    let (probe, unasked) = (probe.to_str().unwrap(), unasked.to_str().unwrap());
    let origin_grant = format!("http-outbound={origin}");
    let all = ["kv", "messaging", "timers", origin_grant.as_str(), "http-allow-private"];
    let replies = |what: &str, n: usize| -> Vec<String> {
        let mut got = Vec::new();
        wait_until(what, || {
            got.extend(bodies_from(&parse_json_lines(&ok(&alice, &["recv", "--json"])), "bob"));
            got.len() >= n
        });
        got
    };

    // Granted: the timer fires during the wait, the request reaches the server, kv keeps a value.
    ok(&alice, &["send", "bob", "probe: timer-once soon 1000", &format!("probe: http-get {origin}/from-bob"), "probe: kv-set colour blue"]);
    recv_with_probe(&bob, probe, &all, Some("6"));
    let got = replies("the probe's answers", 3);
    assert_eq!(got[0], "ok 1", "{got:?}");
    assert_eq!(got[1], "ok 200 x-echo=GET_/from-bob_HTTP/1.1 19 bytes: hello from loopback", "{got:?}");
    assert_eq!(got[2], "ok ()", "{got:?}");
    assert_eq!(http.hits(), 1);
    let fired = parse_json_lines(&ok(&timers, &["recv", "--json"]));
    assert_eq!(bodies_from(&fired, "bob"), ["fired 1 soon"], "the timer's post went out as bob: {fired:?}");

    // Loopback without http-allow-private: refused by the host after the origin check. (kv is in bob's local
    // store: the next run reads what the last one wrote.)
    ok(&alice, &["send", "bob", &format!("probe: http-get {origin}/private"), "probe: kv-get colour"]);
    let (_, log) = recv_with_probe(&bob, probe, &["kv", "messaging", &origin_grant], None);
    let got = replies("the refusal of loopback", 2);
    assert_eq!(got, ["err denied: the host refused the request: the name resolves to an address plugins may not reach", "ok Some(\"blue\")"]);
    assert!(log.lines().any(|l| l.contains("probe") && l.contains("http refused")), "{log}");

    // Not granted: the plugin gets the reason; the log names plugin, version and capability.
    ok(&alice, &["send", "bob", "probe: timer-once never 100", &format!("probe: http-get {origin}/not-granted"), "probe: kv-get colour"]);
    let (_, log) = recv_with_probe(&bob, probe, &["messaging"], None);
    let got = replies("the refusals of what is not granted", 3);
    assert_eq!(got[0], "err denied: capability timers is not granted by the administrator", "{got:?}");
    assert!(got[1].starts_with("err denied: the host refused the request"), "{got:?}");
    assert_eq!(got[2], "err denied: capability kv is not granted by the administrator", "{got:?}");
    assert!(log.lines().any(|l| ["probe", "1.2.3", "capability=kv", "not granted"].iter().all(|n| l.contains(n))), "{log}");
    assert!(log.lines().any(|l| ["probe", "1.2.3", "capability=timers", "not granted"].iter().all(|n| l.contains(n))), "{log}");
    assert!(log.lines().any(|l| ["probe", "1.2.3", "http refused", "not granted"].iter().all(|n| l.contains(n))), "{log}");

    // Not asked for in the manifest: everything granted, still refused.
    ok(&alice, &["send", "bob", "probe: timer-once never 100", &format!("probe: http-get {origin}/not-asked"), "probe: kv-get colour"]);
    let (_, log) = recv_with_probe(&bob, unasked, &all, None);
    let got = replies("the refusals of what is not asked for", 3);
    assert_eq!(got[0], "err denied: capability timers is not requested in this plugin's plugin.toml", "{got:?}");
    assert!(got[1].starts_with("err denied: the host refused the request"), "{got:?}");
    assert_eq!(got[2], "err denied: capability kv is not requested in this plugin's plugin.toml", "{got:?}");
    assert!(log.lines().any(|l| ["probe-unasked", "1.2.3", "capability=timers", "not requested"].iter().all(|n| l.contains(n))), "{log}");
    assert!(log.lines().any(|l| ["probe-unasked", "1.2.3", "http refused", "not requested"].iter().all(|n| l.contains(n))), "{log}");

    // Messaging not granted: the plugin's replies are refused and logged, nothing reaches alice.
    ok(&alice, &["send", "bob", "probe: kv-get colour"]);
    let (_, log) = recv_with_probe(&bob, probe, &["kv"], None);
    assert!(log.lines().any(|l| ["probe", "1.2.3", "capability=messaging", "not granted"].iter().all(|n| l.contains(n))), "{log}");
    assert!(bodies_from(&parse_json_lines(&ok(&alice, &["recv", "--json"])), "bob").is_empty(), "no reply without messaging");

    assert_eq!(http.hits(), 1, "no refused request reached the server");
    assert!(parse_json_lines(&ok(&timers, &["recv", "--json"])).is_empty(), "no refused timer fired");

    // A grant the client does not know is refused before anything runs.
    let out = client(&bob, &["--plugin", probe, "--grant", "sockets", "recv"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown grant \"sockets\""));
}

/// The status-change hook in the client scope: while bob's `recv --wait` runs with the probe, alice (a contact)
/// goes away; the probe reports the change to the conversation "status" (a user), as bob.
#[test]
fn a_client_plugin_sees_a_contact_change_presence() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob, status) = (dir.path().join("alice"), dir.path().join("bob"), dir.path().join("status"));
    register(&relay, &alice, "alice", "alice-password");
    register(&relay, &bob, "bob", "bob-password-1");
    register(&relay, &status, "status", "status-password");
    ok(&alice, &["send", "bob", "hello"]);
    ok(&bob, &["send", "alice", "hi"]);
    let probe = dir.path().join(install_probe(dir.path(), "probe", "messaging = true"));
    // Killed when the test ends, also when it fails.
    struct Waiting(std::process::Child);
    impl Drop for Waiting {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _waiting = Waiting(std::process::Command::new(bin())
        .arg("client")
        .arg("--home")
        .arg(&bob)
        .args(["--plugin", probe.to_str().unwrap(), "--grant", "messaging", "recv", "--wait", "60"])
        .env("IMFREE_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn bob's recv"));
    let mut seen = Vec::new();
    wait_until("alice's change to reach bob's plugin", || {
        ok(&alice, &["presence", "away"]);
        seen.extend(bodies_from(&parse_json_lines(&ok(&status, &["recv", "--json"])), "bob"));
        seen.iter().any(|b| b.starts_with("alice ") && b.ends_with("Away"))
    });
}

#[test]
fn a_command_typed_in_the_client_goes_to_its_plugin_and_a_press_on_its_card_comes_back_to_it() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password");
    register(&relay, &bob, "bob", "bob-password-1");
    let probe = dir.path().join(install_probe(dir.path(), "probe", "kv = true\nmessaging = true"));
    let with_probe = |args: &[&str]| {
        let mut all = vec!["--plugin", probe.to_str().unwrap(), "--grant", "kv", "--grant", "messaging"];
        all.extend_from_slice(args);
        ok(&alice, &all)
    };

    // A command is answered to alice alone: nothing reaches bob.
    let answer = with_probe(&["send", "bob", "/kv-set colour blue"]);
    assert!(answer.contains("probe: ok ()"), "{answer}");
    assert_eq!(with_probe(&["send", "bob", "/kv-get colour"]).lines().next(), Some("probe: ok Some(\"blue\")"));
    assert!(bodies(&bob).is_empty(), "commands are not messages");
    // A slash no plugin takes goes out as typed.
    with_probe(&["send", "bob", "/shrug"]);
    assert_eq!(bodies(&bob), ["/shrug"]);

    // The plugin posts a card as alice; bob presses a button; alice's client hands the press to that plugin.
    with_probe(&["send", "bob", "/card bob"]);
    let got = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    let card = got.iter().find(|m| m["mime"].as_str().is_some_and(|t| t.contains("card"))).unwrap_or_else(|| panic!("a card: {got:?}"));
    let card_id = card["id"].as_str().unwrap().to_owned();
    ok(&bob, &["press", &card_id, "yes"]);
    with_probe(&["recv"]);
    assert_eq!(bodies(&bob), [format!("bob pressed yes on {card_id}")]);
    // A press on a button the card does not have never reaches the plugin (bob's client refuses to send it).
    assert!(!client(&bob, &["press", &card_id, "maybe"]).status.success());
}
