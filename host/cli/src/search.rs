//! `imfree client search`: full-text search of this device's messages, offline (the local index; nothing is asked of
//! the relay, which could not read the messages anyway). The query language and the index live in
//! `imfree_client::search`; this module parses the flags and prints.

use std::io::{IsTerminal, Write};
use std::path::Path;

use clap::Args;
use imfree_client::search::{self, DateEdge, SearchHit, SearchQuery};

#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// Words to find (all of them), "an exact phrase" in quotes, and `word*` for words starting so. Case and
    /// accents do not matter; nothing else is special.
    #[arg(allow_hyphen_values = true)]
    query: String,
    /// Only messages sent by this user (your own name for what you sent).
    #[arg(long, value_name = "USER")]
    from: Option<String>,
    /// Only this conversation: the other user's name, or `group:<id>`.
    #[arg(long = "in", value_name = "CONV")]
    conversation: Option<String>,
    /// Only messages from this time on: YYYY-MM-DD (from the start of that UTC day), RFC 3339, or an age (24h, 7d).
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// Only messages up to this time: YYYY-MM-DD (to the end of that UTC day), RFC 3339, or an age.
    #[arg(long, value_name = "DATE")]
    until: Option<String>,
    /// At most this many results, best first.
    #[arg(long, default_value_t = search::DEFAULT_LIMIT, value_parser = clap::value_parser!(u32).range(1..=i64::from(search::MAX_LIMIT)))]
    limit: u32,
    /// One JSON object per line: id, conversation, from, to, ts, mime, outgoing, score, snippet, matches.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(home: Option<&Path>, args: SearchArgs) -> anyhow::Result<()> {
    let mut query = SearchQuery::new(&args.query)?;
    query.from = args.from;
    query.conversation = args.conversation;
    let now = imfree_client::now_ms();
    query.since = args.since.as_deref().map(|d| crate::when::parse_time(d, now, DateEdge::Start)).transpose()?;
    query.until = args.until.as_deref().map(|d| crate::when::parse_time(d, now, DateEdge::End)).transpose()?;
    query.limit = args.limit;
    let client = crate::client::open_client(home).await?;
    let hits = client.store().search(&query).await?;
    client.store().close().await;
    let mut out = std::io::stdout().lock();
    if args.json {
        for hit in &hits {
            writeln!(out, "{}", json(hit))?;
        }
    } else if hits.is_empty() {
        eprintln!("imfree: no message matches");
    } else {
        // Matches in bold on a terminal, in brackets otherwise (pipes, files).
        let (open, close) = if out.is_terminal() { ("\x1b[1m", "\x1b[0m") } else { ("[", "]") };
        for hit in &hits {
            writeln!(
                out,
                "{}  {}  {}: {}  ({})",
                search::utc_time(hit.ts),
                search::printable(&hit.conversation),
                search::printable(&hit.from),
                hit.snippet.marked(open, close),
                search::printable(&hit.id)
            )?;
        }
    }
    Ok(())
}

fn json(hit: &SearchHit) -> serde_json::Value {
    serde_json::json!({
        "id": hit.id,
        "conversation": hit.conversation,
        "from": hit.from,
        "to": hit.to,
        "ts": hit.ts,
        "mime": hit.mime,
        "outgoing": hit.outgoing,
        "score": hit.score,
        "snippet": hit.snippet.plain(),
        "matches": hit.snippet.matches(),
    })
}
