//! Poll: a bot that posts polls as cards and counts the votes from button presses.
//!
//! `/poll Question | option | option …` (in a conversation the bot is in) posts a card with one button per option.
//! A press comes back as an action; each person's vote counts once (a second press changes it), and the bot
//! answers in the conversation with the current tally. Votes live in the bot's kv.

use imfree_plugin_sdk::messaging::CardBuilder;
use imfree_plugin_sdk::types::{Action, ButtonStyle, Command};
use imfree_plugin_sdk::{HostErrorExt, Plugin, config, export_plugin, kv, messaging};

struct Poll;

fn options_of(poll: &str) -> Vec<String> {
    kv::get_string(&format!("poll:{poll}:options")).ok().flatten().map(|o| o.split('\n').map(str::to_owned).collect()).unwrap_or_default()
}

fn tally(poll: &str, options: &[String]) -> String {
    let voters = kv::list_keys(&format!("vote:{poll}:")).unwrap_or_default();
    let mut counts = vec![0usize; options.len()];
    for key in voters {
        if let Ok(Some(choice)) = kv::get_string(&key)
            && let Some(i) = options.iter().position(|o| *o == choice)
        {
            counts[i] += 1;
        }
    }
    options.iter().zip(counts).map(|(o, n)| format!("{o}: {n}")).collect::<Vec<_>>().join(", ")
}

impl Plugin for Poll {
    fn command(cmd: Command) -> Option<String> {
        if cmd.name != "poll" {
            return None;
        }
        let mut parts = cmd.args.split('|').map(str::trim).filter(|p| !p.is_empty());
        let question = parts.next()?.to_owned();
        let options: Vec<String> = parts.map(str::to_owned).collect();
        let max = config::parsed::<usize>("max_options").unwrap_or(10);
        if options.len() < 2 || options.len() > max {
            return Some(format!("usage: /poll Question | option | option … (2 to {max} options)"));
        }
        let mut card = CardBuilder::new(&question).text(&format!("asked by {}", cmd.sender));
        for (i, o) in options.iter().enumerate() {
            card = card.button(&format!("o{i}"), o, if i == 0 { ButtonStyle::Primary } else { ButtonStyle::Default });
        }
        match messaging::post_card(&cmd.conversation, &card.build()) {
            Ok(id) => match kv::set_string(&format!("poll:{id}:options"), &options.join("\n")) {
                Ok(()) => Some(format!("poll posted ({} options)", options.len())),
                Err(e) => Some(format!("the poll could not be saved: {}", e.describe())),
            },
            Err(e) => Some(format!("the poll could not be posted: {}", e.describe())),
        }
    }

    fn action(act: Action) {
        let options = options_of(&act.message_id);
        let Some(choice) = act.button.strip_prefix('o').and_then(|i| i.parse::<usize>().ok()).and_then(|i| options.get(i)) else {
            return;
        };
        if kv::set_string(&format!("vote:{}:{}", act.message_id, act.user), choice).is_err() {
            return;
        }
        let text = format!("{} voted {choice}. {}", act.user, tally(&act.message_id, &options));
        let _ = messaging::reply(&act.conversation, &act.message_id, &text);
    }
}

export_plugin!(Poll);
