//! `imfree client reply|edit|delete|react|history`: answering and changing messages, and a conversation as it stands.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use imfree_client::store::{ChangeAction, StoredMessage};
use imfree_client::Client;

/// Options shared by the commands that send text.
#[derive(Debug, Args)]
pub(crate) struct TextArgs {
    /// The text ("-" reads it from standard input).
    text: String,
    /// Send as Markdown (text/markdown) instead of plain text.
    #[arg(long)]
    markdown: bool,
}

impl TextArgs {
    fn read(&self) -> anyhow::Result<(&'static str, String)> {
        let text = if self.text == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        } else {
            self.text.clone()
        };
        Ok((if self.markdown { imfree_proto::mime::MARKDOWN } else { imfree_proto::mime::TEXT }, text))
    }
}

/// Reply to message `id` in its conversation.
pub(crate) async fn reply(home: Option<&Path>, id: &str, text: &TextArgs) -> anyhow::Result<ExitCode> {
    let client = crate::client::open_client(home).await?;
    let (mime, body) = text.read()?;
    let sent = client.reply(id, mime, &body).await?;
    let to = conversation_of(&client, &sent).await?;
    crate::client::push_out(&client, &to, &[sent]).await
}

/// Edit this user's message `id`.
pub(crate) async fn edit(home: Option<&Path>, id: &str, text: &TextArgs) -> anyhow::Result<ExitCode> {
    let client = crate::client::open_client(home).await?;
    let (mime, body) = text.read()?;
    let sent = client.edit(id, mime, &body).await?;
    let to = conversation_of(&client, &sent).await?;
    crate::client::push_out(&client, &to, &[sent]).await
}

/// Delete message `id`.
pub(crate) async fn delete(home: Option<&Path>, id: &str) -> anyhow::Result<ExitCode> {
    let client = crate::client::open_client(home).await?;
    let sent = client.delete(id).await?;
    let to = conversation_of(&client, &sent).await?;
    crate::client::push_out(&client, &to, &[sent]).await
}

/// React to message `id` (or take the reaction back).
pub(crate) async fn react(home: Option<&Path>, id: &str, emoji: &str, remove: bool) -> anyhow::Result<ExitCode> {
    let client = crate::client::open_client(home).await?;
    let sent = client.react(id, emoji, remove).await?;
    let to = conversation_of(&client, &sent).await?;
    crate::client::push_out(&client, &to, &[sent]).await
}

async fn conversation_of(client: &Client, id: &str) -> anyhow::Result<String> {
    let m = client.store().message(id).await?.ok_or_else(|| anyhow::anyhow!("message {id} vanished from the local store"))?;
    Ok(m.to)
}

/// What a change row says, for a human (`None` for an ordinary message). Whatever came in the message is rendered
/// or neutralised by crate::render.
pub(crate) fn describe_change(m: &StoredMessage) -> Option<String> {
    use crate::render::{plain, text_body};
    if m.status == "refused" {
        return Some(plain(&format!("[refused a change of a message: {}]", String::from_utf8_lossy(&m.body))));
    }
    let change = m.change.as_ref()?;
    Some(match change.action {
        ChangeAction::Edit => format!("✎ edited {}: {}", change.target, text_body(&m.mime, &m.body)),
        ChangeAction::Delete if change.by_admin => format!("✗ deleted {} (as a group admin)", change.target),
        ChangeAction::Delete => format!("✗ deleted {}", change.target),
        ChangeAction::React => match imfree_proto::content::Reaction::decode(&m.body) {
            Ok(r) if r.remove => plain(&format!("took back {} on {}", r.emoji, change.target)),
            Ok(r) => plain(&format!("reacted {} to {}", r.emoji, change.target)),
            Err(_) => "[a reaction that could not be read]".into(),
        },
    })
}

/// The JSON fields a change, reply or mention adds to a message line of `recv --json`.
pub(crate) fn json_fields(m: &StoredMessage, v: &mut serde_json::Value) {
    if let Some(reply_to) = &m.reply_to {
        v["reply_to"] = reply_to.as_str().into();
    }
    if !m.mentions.is_empty() {
        v["mentions"] = m.mentions.clone().into();
    }
    if m.status == "refused" {
        v["refused"] = String::from_utf8_lossy(&m.body).into_owned().into();
        return;
    }
    if let Some(change) = &m.change {
        match change.action {
            ChangeAction::Edit => v["edit_of"] = change.target.as_str().into(),
            ChangeAction::Delete => {
                v["delete_of"] = change.target.as_str().into();
                if change.by_admin {
                    v["by_admin"] = true.into();
                }
            }
            ChangeAction::React => {
                if let Ok(r) = imfree_proto::content::Reaction::decode(&m.body) {
                    v["reaction"] = serde_json::json!({ "to": change.target, "emoji": r.emoji, "remove": r.remove });
                }
            }
        }
    }
}

/// Show a conversation as it stands: edits applied (marked), deletions as tombstones, reactions counted; with
/// `versions`, every earlier version of an edited message under it.
pub(crate) async fn history(home: Option<&Path>, conv: &str, limit: i64, versions: bool, json: bool) -> anyhow::Result<()> {
    let client = crate::client::open_client(home).await?;
    for m in client.store().history(conv, limit).await? {
        let reactions = client.store().reactions(&m.id).await?;
        let earlier = if versions || json { client.store().versions(&m.id).await? } else { Vec::new() };
        if json {
            let mut v = serde_json::json!({
                "id": m.id, "from": m.from, "to": m.to, "ts": m.ts, "mime": m.mime, "status": m.status,
                "body": if m.deleted { String::new() } else { String::from_utf8_lossy(&m.body).into_owned() },
                "edited": m.edited_at.is_some(), "deleted": m.deleted,
                "reactions": reactions.iter().map(|(emoji, users)| serde_json::json!({"emoji": emoji, "count": users.len(), "users": users})).collect::<Vec<_>>(),
            });
            if let Some(at) = m.edited_at {
                v["edited_at"] = at.into();
            }
            if versions {
                v["versions"] = earlier
                    .iter()
                    .map(|e| serde_json::json!({"id": e.envelope_id, "ts": e.ts, "body": String::from_utf8_lossy(&e.body)}))
                    .collect::<Vec<_>>()
                    .into();
            }
            json_fields(&m, &mut v);
            println!("{v}");
            continue;
        }
        let receipts = client.store().receipts_of(&m.id).await?;
        let mark = if m.outgoing {
            if receipts.iter().any(|(_, k)| k == "read") {
                " ✓✓ read"
            } else if m.status == "pending" {
                " (queued)"
            } else if m.status == "failed" {
                " (failed)"
            } else {
                " ✓"
            }
        } else {
            ""
        };
        let reply = m.reply_to.as_deref().map(|r| format!("↳ {r} ")).unwrap_or_default();
        if m.deleted {
            println!("[{}] {}: {reply}[message deleted]{mark}", m.ts, m.from);
        } else {
            let edited = if m.edited_at.is_some() { " (edited)" } else { "" };
            println!("[{}] {}: {reply}{}{edited}{mark}", m.ts, m.from, crate::client::body_text(&m));
        }
        if !reactions.is_empty() {
            let line: Vec<String> = reactions.iter().map(|(emoji, users)| format!("{emoji} {} ({})", users.len(), users.join(", "))).collect();
            println!("    {}", crate::render::plain(&line.join("  ")));
        }
        if versions && earlier.len() > 1 {
            for e in &earlier[..earlier.len() - 1] {
                println!("    was [{}]: {}", e.ts, crate::render::text_body(&e.mime, &e.body));
            }
        }
    }
    Ok(())
}
