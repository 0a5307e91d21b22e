//! Auto-reply: when a message contains the configured keyword, reply with the configured text as the bot.

use imfree_plugin_sdk::types::{Command, Message};
use imfree_plugin_sdk::{HostErrorExt, Plugin, config, export_plugin, kv, log, messaging};

struct AutoReply;

impl Plugin for AutoReply {
    fn init() -> Result<(), String> {
        log::info("auto-reply ready");
        Ok(())
    }

    fn incoming_message(msg: Message) {
        let keyword = config::get_or("keyword", "ping").to_lowercase();
        if keyword.is_empty() || !msg.body.to_lowercase().contains(&keyword) {
            return;
        }
        match messaging::reply(&msg.conversation, &msg.id, &config::get_or("reply", "pong")) {
            Ok(_) => {
                let _ = kv::increment("replies", 1);
            }
            Err(e) => log::warn(&format!("could not reply: {}", e.describe())),
        }
    }

    fn command(_cmd: Command) -> Option<String> {
        let n = kv::get_string("replies").ok().flatten().unwrap_or_else(|| "0".into());
        Some(format!("auto-reply answered {n} times"))
    }
}

export_plugin!(AutoReply);
