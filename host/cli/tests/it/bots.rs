//! Bot scope through real processes: the relay runs the auto-reply plugin as its own account; people talk to it
//! 1:1 and in a group like to anyone; its keys, what it decrypts and its kv stay in its own home.

use crate::common::*;
use crate::e2e::assert_relay_never_saw;

fn recv_until(home: &std::path::Path, what: &str, mut done: impl FnMut(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    wait_until(what, || {
        seen.extend(parse_json_lines(&ok(home, &["recv", "--json"])));
        done(&seen)
    });
    seen
}

fn from_bot(messages: &[serde_json::Value]) -> Vec<String> {
    messages.iter().filter(|m| m["from"] == "auto-reply").map(|m| m["body"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn a_bot_answers_in_private_and_in_a_group_end_to_end() {
    let dir = tempdir();
    let wasm = install_plugin(dir.path(), "auto-reply");
    let poll = install_plugin(dir.path(), "poll");
    let bots = dir.path().join("bots");
    let config = dir.path().join("imfree.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[plugin_host]
bots_dir = "{}"

[plugins.auto-reply]
path = "{wasm}"
grants = {{ kv = true, messaging = true }}
settings = {{ keyword = "ping", reply = "pong" }}

[plugins.poll]
path = "{poll}"
grants = {{ kv = true, messaging = true }}
"#,
            bots.display()
        ),
    )
    .unwrap();
    let relay = RelayProc::start(&dir.path().join("relay"), Some(&config));
    wait_until("the bots to register", || relay.log().matches("bot running").count() == 2);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    register(&relay, &alice, "alice", "alice-password");
    register(&relay, &bob, "bob", "bob-password-1");

    // 1:1: the keyword gets the reply, threaded to the message; other text gets nothing.
    let canary = "CANARY-bot-8c2e-ping-the-heron-waits";
    ok(&alice, &["send", "auto-reply", "nothing to see", canary]);
    let got = recv_until(&alice, "the bot's reply", |m| !from_bot(m).is_empty());
    assert_eq!(from_bot(&got), ["pong"], "one reply, to the message with the keyword: {got:?}");

    // A group: the bot is added like any member and answers there, where everyone reads it.
    let g = ok(&alice, &["group", "create", "with a bot"]).trim().to_owned();
    ok(&alice, &["group", "add", &g, "bob"]);
    ok(&alice, &["group", "add", &g, "auto-reply"]);
    assert!(ok(&alice, &["group", "info", &g]).contains("auto-reply"), "the bot is visible in the member list");
    ok(&alice, &["send", &g, "ping everyone"]);
    let at_bob = recv_until(&bob, "the bot's reply in the group", |m| from_bot(m).contains(&"pong".to_owned()));
    let reply = at_bob.iter().find(|m| m["from"] == "auto-reply").unwrap();
    assert_eq!(reply["group"].as_str().map(|id| format!("group:{id}")), Some(g.clone()), "{reply}");

    // A command, answered only to whoever typed it; the count comes from the plugin's kv.
    ok(&alice, &["send", "auto-reply", "/auto-reply"]);
    let got = recv_until(&alice, "the command's answer", |m| from_bot(m).iter().any(|b| b.contains("answered")));
    assert!(from_bot(&got).iter().any(|b| b == "auto-reply answered 2 times"), "{got:?}");

    // Cards and buttons: the poll bot posts a card in the group; bob presses a button; the press reaches the bot
    // as an action and its tally comes back into the group.
    ok(&alice, &["group", "add", &g, "poll"]);
    ok(&alice, &["send", &g, "/poll Lunch? | pizza | sushi"]);
    let at_bob = recv_until(&bob, "the poll card", |m| m.iter().any(|m| m["from"] == "poll" && m["mime"] == "application/vnd.imfree.card+json"));
    let card = at_bob.iter().find(|m| m["from"] == "poll" && m["mime"] == "application/vnd.imfree.card+json").unwrap();
    let card_body: serde_json::Value = serde_json::from_str(card["body"].as_str().unwrap()).unwrap();
    assert_eq!(card_body["title"], "Lunch?");
    assert_eq!(card_body["buttons"][1]["label"], "sushi");
    let card_id = card["id"].as_str().unwrap();
    assert!(ok(&bob, &["history", &g]).contains(&format!("imfree client press {card_id} BUTTON")), "the terminal shows the card");
    let refused = client(&bob, &["press", card_id, "o9"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no button \"o9\""));
    ok(&bob, &["press", card_id, "o1"]);
    let at_alice = recv_until(&alice, "the tally", |m| m.iter().any(|m| m["from"] == "poll" && m["body"].as_str().unwrap_or("").contains("bob voted sushi")));
    assert!(at_alice.iter().any(|m| m["body"] == "bob voted sushi. pizza: 0, sushi: 1"), "{at_alice:?}");

    // The bot's keys, what it decrypted and its kv are in its own home, not the relay's.
    let bot_db = std::fs::read(bots.join("auto-reply/client.db")).unwrap();
    let bot_wal = std::fs::read(bots.join("auto-reply/client.db-wal")).unwrap_or_default();
    assert!([bot_db, bot_wal].iter().any(|b| b.windows(canary.len()).any(|w| w == canary.as_bytes())), "the bot decrypted it");
    assert_relay_never_saw(&relay, canary);
}

/// Timers (once and repeating), outbound HTTP to a loopback server, the status-change hook and the bot's own
/// outgoing-message filter, through a real relay and real clients — and each capability refused, with the reason
/// in the bot's answer and a log line naming plugin, version and capability, when the grant or the manifest lacks
/// it. The probe posts timer firings to the conversation "timers" and presence changes to "status": in bot scope
/// those are users, so two real clients of those names read them.
#[test]
fn a_bot_uses_timers_http_and_presence_only_when_asked_for_and_granted() {
    let dir = tempdir();
    let http = LoopbackHttp::start();
    let origin = format!("http://127.0.0.1:{}", http.port);
    let probe = install_probe(dir.path(), "probe", &format!("messaging = true\ntimers = true\nhttp.outbound = [\"{origin}\"]"));
    // Asks for messaging and timers (not granted) and not for kv or HTTP (granted): each refused, for either reason.
    let denied = install_probe(dir.path(), "probe-denied", "messaging = true\ntimers = true");
    let config = bot_config(
        dir.path(),
        &format!(
            r#"[plugins.probe]
path = "{probe}"
grants = {{ messaging = true, timers = true, http-outbound = ["{origin}"], http-allow-private = true }}

[plugins.probe-denied]
path = "{denied}"
grants = {{ kv = true, http-outbound = ["{origin}"], http-allow-private = true }}
"#
        ),
    );
    let relay = RelayProc::start(&dir.path().join("relay"), Some(&config));
    wait_until("the bots to register", || relay.log().matches("bot running").count() == 2);
    let (alice, timers, status) = (dir.path().join("alice"), dir.path().join("timers"), dir.path().join("status"));
    register(&relay, &alice, "alice", "alice-password");
    register(&relay, &timers, "timers", "timers-password");
    register(&relay, &status, "status", "status-password");
    let answer = |bot: &str, command: &str| -> String {
        ok(&alice, &["send", bot, command]);
        let got = recv_until(&alice, &format!("{bot}'s answer to {command}"), |m| !bodies_from(m, bot).is_empty());
        let answers = bodies_from(&got, bot);
        assert_eq!(answers.len(), 1, "one answer to {command}: {got:?}");
        answers[0].clone()
    };

    // Timers: once, then repeating; each firing reaches the timer hook, whose post a real client reads.
    let once = answer("probe", "/timer-once soon 300");
    assert!(once.starts_with("ok "), "{once}");
    let once_id = once.trim_start_matches("ok ");
    recv_until(&timers, "the one-shot timer to fire", |m| bodies_from(m, "probe").contains(&format!("fired {once_id} soon")));
    let every = answer("probe", "/timer-every tick 1000");
    assert!(every.starts_with("ok "), "{every}");
    let every_id = every.trim_start_matches("ok ").to_owned();
    let tick = format!("fired {every_id} tick");
    recv_until(&timers, "the repeating timer to fire twice", |m| bodies_from(m, "probe").iter().filter(|b| **b == tick).count() >= 2);
    assert_eq!(answer("probe", &format!("/timer-cancel {every_id}")), "ok true");

    // Outbound HTTP to the granted loopback origin reaches the server and its answer comes back to the bot.
    let got = answer("probe", &format!("/http-get {origin}/from-the-bot"));
    assert_eq!(got, "ok 200 x-echo=GET_/from-the-bot_HTTP/1.1 19 bytes: hello from loopback");
    assert_eq!(http.hits(), 1);

    // Refusals: messaging and timers asked for but not granted; kv and HTTP granted but not asked for. Nothing is
    // posted, scheduled, stored or sent, and the log names the plugin, its version and the capability. (A command's
    // answer is the hook's return value, not a post: it needs no messaging.)
    let refused = answer("probe-denied", "/timer-once never 100");
    assert_eq!(refused, "err denied: capability timers is not granted by the administrator");
    let refused = answer("probe-denied", "/post alice never");
    assert_eq!(refused, "err denied: capability messaging is not granted by the administrator");
    let refused = answer("probe-denied", "/kv-set never 1");
    assert_eq!(refused, "err denied: capability kv is not requested in this plugin's plugin.toml");
    let refused = answer("probe-denied", &format!("/http-get {origin}/refused"));
    assert!(refused.starts_with("err denied: the host refused the request"), "{refused}");
    assert_eq!(http.hits(), 1, "the refused request never reached the server");
    let log = relay.log();
    let logged = |needles: &[&str]| log.lines().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(logged(&["probe-denied", "1.2.3", "capability=timers", "not granted by the administrator"]), "{log}");
    assert!(logged(&["probe-denied", "1.2.3", "capability=messaging", "not granted by the administrator"]), "{log}");
    assert!(logged(&["probe-denied", "1.2.3", "capability=kv", "not requested"]), "{log}");
    assert!(logged(&["probe-denied", "1.2.3", "http refused", "not requested"]), "{log}");

    // The bot's own outgoing-message filter sees what it posts: the probe upper-cases "upper" (and tries to move it
    // elsewhere, which the host undoes) and refuses "reject".
    ok(&alice, &["send", "probe", "/post alice reject"]);
    ok(&alice, &["send", "probe", "/post alice upper"]);
    let got = recv_until(&alice, "the filtered post", |m| {
        bodies_from(m, "probe").contains(&"UPPER".to_owned()) && bodies_from(m, "probe").iter().filter(|b| b.starts_with("ok ")).count() == 2
    });
    assert!(!bodies_from(&got, "probe").iter().any(|b| b.contains("reject")), "the refused post was never sent: {got:?}");

    // Status changes: alice has written to the bots, so they see her presence; going away reaches the hook.
    ok(&alice, &["presence", "away"]);
    recv_until(&status, "the status-change hook", |m| bodies_from(m, "probe").iter().any(|b| b.starts_with("alice ") && b.ends_with("Away")));
    let at_timers = parse_json_lines(&ok(&timers, &["recv", "--json"]));
    assert!(bodies_from(&at_timers, "probe-denied").is_empty(), "no timer of the refused bot fired: {at_timers:?}");
    let at_alice = parse_json_lines(&ok(&alice, &["recv", "--json"]));
    assert!(!bodies_from(&at_alice, "probe-denied").contains(&"never".to_owned()), "the refused post was not sent: {at_alice:?}");
}

/// Files in bot scope: the probe describes and reads what it is sent (decrypted by its own client, which checks the
/// file's hash) and sends it back; a voice message says so; a file over the administrator's limit is refused before
/// anything is fetched; a bot without the grant is refused. The relay holds only ciphertext throughout.
#[test]
fn a_bot_reads_and_sends_files_within_its_limit_end_to_end() {
    let dir = tempdir();
    let probe = install_probe(dir.path(), "probe", "messaging = true\nfiles = true");
    let denied = install_probe(dir.path(), "probe-denied", "messaging = true\nfiles = true");
    let config = bot_config(
        dir.path(),
        &format!(
            r#"[plugins.probe]
path = "{probe}"
grants = {{ messaging = true, files = true }}
limits = {{ files-max-bytes = 100000, wall-ms-per-call = 30000, cpu-ms-per-call = 2000 }}

[plugins.probe-denied]
path = "{denied}"
grants = {{ messaging = true }}
"#
        ),
    );
    let relay = RelayProc::start(&dir.path().join("relay"), Some(&config));
    wait_until("the bots to register", || relay.log().matches("bot running").count() == 2);
    let alice = dir.path().join("alice");
    register(&relay, &alice, "alice", "alice-password");
    // Everything alice received, across reads (`recv` hands each message out once).
    let seen = std::cell::RefCell::new(Vec::<serde_json::Value>::new());
    let wait_for = |what: &str, found: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        wait_until(what, || {
            seen.borrow_mut().extend(parse_json_lines(&ok(&alice, &["recv", "--json"])));
            seen.borrow().iter().any(found)
        });
        seen.borrow().iter().find(|m| found(m)).cloned().unwrap()
    };
    let reply_to = |bot: &str, id: &str| -> String {
        let reply = wait_for(&format!("{bot}'s reply to {id}"), &|m| m["from"] == bot && m["reply_to"] == id);
        reply["body"].as_str().unwrap().to_owned()
    };

    // A text file with a canary: read by the bot, sent back, byte for byte.
    let canary = "bot-file-canary-7c1e";
    let notes = dir.path().join("notes.txt");
    let content: String = (0..2000).map(|i| format!("{canary} line {i}\n")).collect::<String>()[..60_000].to_owned();
    std::fs::write(&notes, &content).unwrap();
    let id = crate::files::sent_id(&ok(&alice, &["file", "send", "probe", notes.to_str().unwrap()]));
    assert_eq!(reply_to("probe", &id), "file notes.txt text/plain 60000 bytes read, voice false from alice; echo sent");
    let echo = wait_for("the echoed file", &|m| m["from"] == "probe" && m["file"]["name"] == "echo-notes.txt");
    assert_eq!(echo["file"]["mime"], "text/plain");
    let out = dir.path().join("downloads");
    std::fs::create_dir_all(&out).unwrap();
    ok(&alice, &["file", "get", echo["id"].as_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("echo-notes.txt")).unwrap(), content);

    // A voice message is one.
    let memo = dir.path().join("memo.wav");
    std::fs::write(&memo, crate::files::wav(1200)).unwrap();
    let id = crate::files::sent_id(&ok(&alice, &["voice", "send", "probe", memo.to_str().unwrap()]));
    let expected = format!("file memo.wav audio/wav {} bytes read, voice true from alice; echo sent", crate::files::wav(1200).len());
    assert_eq!(reply_to("probe", &id), expected);

    // Over the limit: refused by size, before any download.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 150_000]).unwrap();
    let id = crate::files::sent_id(&ok(&alice, &["file", "send", "probe", big.to_str().unwrap()]));
    let refused = reply_to("probe", &id);
    assert_eq!(refused, "file refused: quota exceeded: a file of 150000 bytes exceeds this plugin's limit of 100000 bytes (files-max-bytes)");
    assert!(!dir.path().join("bots/probe/files/").join(&id).exists());

    // Not granted.
    let id = crate::files::sent_id(&ok(&alice, &["file", "send", "probe-denied", notes.to_str().unwrap()]));
    assert_eq!(reply_to("probe-denied", &id), "file refused: denied: capability files is not granted by the administrator");

    // The bot downloaded into its own home and kept nothing there; the relay never saw the plaintext.
    let kept: Vec<_> = std::fs::read_dir(dir.path().join("bots/probe/files")).unwrap().flatten().collect();
    assert!(kept.is_empty(), "downloads are removed once read: {kept:?}");
    assert_relay_never_saw(&relay, canary);
}
