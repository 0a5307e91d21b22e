//! Filter: reject outgoing messages that contain the banned word, mask the sensitive one.

use imfree_plugin_sdk::types::{Message, Verdict};
use imfree_plugin_sdk::{Plugin, config, export_plugin};

struct Filter;

impl Plugin for Filter {
    fn outgoing_message(mut msg: Message) -> Verdict {
        let banned = config::get_or("banned", "forbidden");
        let masked = config::get_or("masked", "secret");
        let lower = msg.body.to_lowercase();
        if !banned.is_empty() && lower.contains(&banned.to_lowercase()) {
            return Verdict::Reject(format!("messages containing \"{banned}\" are not allowed here"));
        }
        if !masked.is_empty() && lower.contains(&masked.to_lowercase()) {
            msg.body = replace_ignore_case(&msg.body, &masked, &"*".repeat(masked.chars().count()));
            return Verdict::Modify(msg);
        }
        Verdict::Pass
    }
}

fn replace_ignore_case(text: &str, word: &str, with: &str) -> String {
    let (lower, needle) = (text.to_lowercase(), word.to_lowercase());
    if lower.len() != text.len() {
        return text.replace(word, with);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (i, _) in lower.match_indices(&needle) {
        out.push_str(&text[rest..i]);
        out.push_str(with);
        rest = i + needle.len();
    }
    out.push_str(&text[rest..]);
    out
}

export_plugin!(Filter);
