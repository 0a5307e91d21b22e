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
