//! Full-text search over this device's decrypted text messages (the SQLite FTS5 index of migration 0006).
//!
//! Owns: turning what a user types into a safe FTS5 MATCH expression ([`match_expression`]), the date bounds of a
//! search ([`parse_date`]), and the query itself ([`LocalStore::search`]). It never writes the index: the triggers of
//! migration 0006 keep it in step with the `messages` table, whoever writes that table.
//!
//! The index holds decrypted text at rest, like the `messages` table beside it, and is protected the same way (see
//! docs/architecture.md, "Local search"). Nothing here logs a query or a message.
//!
//! ```no_run
//! # async fn demo(store: &imfree_client::store::LocalStore) -> Result<(), imfree_client::ClientError> {
//! use imfree_client::search::SearchQuery;
//! let mut query = SearchQuery::new("\"quarterly report\" draft*")?;
//! query.from = Some("alice".into());
//! for hit in store.search(&query).await? {
//!     println!("{} {}: {}", hit.conversation, hit.from, hit.snippet.plain());
//! }
//! # Ok(()) }
//! ```

use sqlx::Row;

use crate::ClientError;
use crate::store::LocalStore;

/// At most this many terms (words or phrases) in one query: each costs an index lookup.
pub const MAX_TERMS: usize = 32;
/// At most this many characters in one query.
pub const MAX_QUERY_CHARS: usize = 1000;
/// Results returned when the caller does not say.
pub const DEFAULT_LIMIT: u32 = 20;
/// At most this many results in one search.
pub const MAX_LIMIT: u32 = 1000;
/// Words of context in a snippet (FTS5 allows 1 to 64).
const SNIPPET_TOKENS: u32 = 16;

/// Highlight marks of FTS5 snippets. The index's view blanks both in message text (migration 0006), so every mark
/// in a snippet was put there by FTS5.
const MARK_OPEN: char = '\u{2}';
const MARK_CLOSE: char = '\u{3}';

/// One term of a parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The words, as typed (a phrase when there are several).
    pub text: String,
    /// Matches words that start with the last word (typed as `word*` or `"a phrase"*`).
    pub prefix: bool,
}

/// Split what the user typed into terms: words separated by white space, `"quoted phrases"`, and a trailing `*` for
/// a prefix. Nothing in the input is FTS5 syntax: `AND`, `NEAR`, `:`, `^`, parentheses and quotes inside words are
/// plain text. Terms without a letter or digit (punctuation, emoji) are dropped, as the tokenizer would drop them.
pub fn parse_terms(input: &str) -> Result<Vec<Term>, ClientError> {
    if input.chars().count() > MAX_QUERY_CHARS {
        return Err(ClientError::Config(format!("the search query is too long (at most {MAX_QUERY_CHARS} characters)")));
    }
    // Control characters (NUL included) are separators: SQLite reads the expression as C text.
    let cleaned: String = input.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut terms = Vec::new();
    let mut chars = cleaned.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let (text, prefix) = if c == '"' {
            chars.next();
            // A phrase runs to the closing quote, or to the end of the input when it is not closed.
            let text: String = chars.by_ref().take_while(|&c| c != '"').collect();
            let mut prefix = false;
            while chars.next_if_eq(&'*').is_some() {
                prefix = true;
            }
            (text, prefix)
        } else {
            let mut word = String::new();
            while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && c != '"') {
                word.push(c);
            }
            let stem = word.trim_end_matches('*');
            let prefix = stem.len() < word.len();
            (stem.to_owned(), prefix)
        };
        if text.chars().any(char::is_alphanumeric) {
            terms.push(Term { text, prefix });
        }
    }
    if terms.is_empty() {
        return Err(ClientError::Config(if cleaned.trim().is_empty() {
            "the search query is empty: give words to look for".into()
        } else {
            "the search query has no letters or digits to look for".into()
        }));
    }
    if terms.len() > MAX_TERMS {
        return Err(ClientError::Config(format!("the search query has too many terms (at most {MAX_TERMS})")));
    }
    Ok(terms)
}

/// The FTS5 MATCH expression for what the user typed: every term quoted (quotes inside doubled), a prefix as
/// `"word"*`, all terms required. Whatever the input, the result is valid FTS5 syntax.
pub fn match_expression(input: &str) -> Result<String, ClientError> {
    let terms = parse_terms(input)?;
    let quoted: Vec<String> =
        terms.iter().map(|t| format!("\"{}\"{}", t.text.replace('"', "\"\""), if t.prefix { "*" } else { "" })).collect();
    Ok(quoted.join(" "))
}

/// Which end of a day a bare date (`YYYY-MM-DD`) stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateEdge {
    /// Its first millisecond (for `--since`).
    Start,
    /// Its last millisecond (for `--until`: the whole day is included).
    End,
}

const DAY_MS: i64 = 86_400_000;

/// A point in time for a search bound, in Unix milliseconds: RFC 3339 (`2026-11-27T14:05:00Z`, any offset) as
/// given, or a date `YYYY-MM-DD` as the start or the end of that day in UTC.
pub fn parse_date(input: &str, edge: DateEdge) -> Result<i64, ClientError> {
    let text = input.trim();
    let unusable = || ClientError::Config(format!("{input:?} is not a date: use YYYY-MM-DD (a UTC day) or RFC 3339 (2026-11-27T14:05:00Z)"));
    if let Ok(at) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| unusable());
    }
    let mut parts = text.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else { return Err(unusable()) };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
        return Err(unusable());
    }
    let year: i32 = y.parse().map_err(|_| unusable())?;
    let month: u8 = m.parse().map_err(|_| unusable())?;
    let day: u8 = d.parse().map_err(|_| unusable())?;
    let month = time::Month::try_from(month).map_err(|_| unusable())?;
    let date = time::Date::from_calendar_date(year, month, day).map_err(|_| unusable())?;
    let start = date.midnight().assume_utc().unix_timestamp() * 1000;
    Ok(match edge {
        DateEdge::Start => start,
        DateEdge::End => start + DAY_MS - 1,
    })
}

/// A search: the words, and filters that narrow it.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// The words' FTS5 expression (always built by [`match_expression`], so always valid).
    expression: String,
    /// Only messages sent by this user (yourself included).
    pub from: Option<String>,
    /// Only this conversation: the other user's name, or `group:<id>`.
    pub conversation: Option<String>,
    /// Only messages at or after this time (Unix ms; see [`parse_date`]).
    pub since: Option<i64>,
    /// Only messages at or before this time (Unix ms).
    pub until: Option<i64>,
    /// At most this many results (1 to [`MAX_LIMIT`]).
    pub limit: u32,
}

impl SearchQuery {
    /// A search for what the user typed (see [`parse_terms`] for the syntax), without filters.
    pub fn new(input: &str) -> Result<Self, ClientError> {
        Ok(SearchQuery { expression: match_expression(input)?, from: None, conversation: None, since: None, until: None, limit: DEFAULT_LIMIT })
    }

    /// The FTS5 MATCH expression this search runs: the words in the message text, and the sender and conversation
    /// filters as their indexed tokens (see migration 0006).
    pub fn expression(&self) -> Result<String, ClientError> {
        let mut expression = format!("body : ({})", self.expression);
        if let Some(conversation) = self.conversation_key()? {
            expression.push_str(&format!(" AND conversation : \"{}\"", hex::encode_upper(conversation)));
        }
        if let Some(from) = self.from.as_deref().map(str::trim) {
            expression.push_str(&format!(" AND sender : \"{}\"", hex::encode_upper(from)));
        }
        Ok(expression)
    }

    fn conversation_key(&self) -> Result<Option<String>, ClientError> {
        match self.conversation.as_deref().map(str::trim) {
            None => Ok(None),
            Some(c) if c.starts_with(crate::groups::GROUP_PREFIX) => {
                Ok(Some(format!("{}{}", crate::groups::GROUP_PREFIX, crate::groups::parse_group(c)?)))
            }
            Some(c) => Ok(Some(c.to_owned())),
        }
    }
}

/// A part of a snippet: message text, highlighted where it matched. Control characters (terminal escape sequences
/// among them) and bidirectional overrides are blanked, so a snippet is safe to print.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnippetPart {
    /// The text.
    pub text: String,
    /// Whether it matched the query.
    pub matched: bool,
}

/// Text around the best match of a message, with the matching words marked.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Snippet {
    /// The parts, in order.
    pub parts: Vec<SnippetPart>,
}

impl Snippet {
    /// Split FTS5 snippet text at its marks, and blank what must not reach a terminal.
    fn from_marked(marked: &str) -> Self {
        let mut parts: Vec<SnippetPart> = Vec::new();
        let mut matched = false;
        let mut text = String::new();
        for c in marked.chars() {
            match c {
                MARK_OPEN | MARK_CLOSE => {
                    if !text.is_empty() {
                        parts.push(SnippetPart { text: std::mem::take(&mut text), matched });
                    }
                    matched = c == MARK_OPEN;
                }
                c if unsafe_to_show(c) => {
                    // Runs of blanked characters (a newline, an escape sequence's introducer) become one space.
                    if !text.ends_with(' ') {
                        text.push(' ');
                    }
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(SnippetPart { text, matched });
        }
        Snippet { parts }
    }

    /// The text without marks.
    pub fn plain(&self) -> String {
        self.parts.iter().map(|p| p.text.as_str()).collect()
    }

    /// The text with each match between `open` and `close`.
    pub fn marked(&self, open: &str, close: &str) -> String {
        let mut out = String::new();
        for p in &self.parts {
            if p.matched {
                out.push_str(open);
                out.push_str(&p.text);
                out.push_str(close);
            } else {
                out.push_str(&p.text);
            }
        }
        out
    }

    /// The matched words, in order.
    pub fn matches(&self) -> Vec<&str> {
        self.parts.iter().filter(|p| p.matched).map(|p| p.text.as_str()).collect()
    }
}

/// `text` with control characters (terminal escape sequences among them) and bidirectional overrides blanked: safe
/// to print, like a snippet.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if unsafe_to_show(c) { ' ' } else { c }).collect()
}

/// A message time (Unix ms) as `YYYY-MM-DD HH:MM:SSZ` in UTC, the zone `--since` and `--until` dates are read in.
pub fn utc_time(ts_ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000) {
        Ok(t) => format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second()),
        Err(_) => format!("@{ts_ms}ms"),
    }
}

/// Control characters, and the bidirectional controls that can make printed text read otherwise than it is.
fn unsafe_to_show(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A message that matched a search.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchHit {
    /// Envelope id.
    pub id: String,
    /// The conversation: the other user, or `group:<id>`.
    pub conversation: String,
    /// Sender.
    pub from: String,
    /// Recipient (a user, or `group:<id>`).
    pub to: String,
    /// Relay acceptance time (Unix ms).
    pub ts: i64,
    /// Content type (text/plain or text/markdown).
    pub mime: String,
    /// Sent by this user.
    pub outgoing: bool,
    /// BM25 relevance (lower is better; FTS5's sign convention).
    pub score: f64,
    /// The best-matching passage, marked.
    pub snippet: Snippet,
}

/// How many of the newest matching messages (after the filters) are ranked by relevance. BM25 costs a few
/// microseconds per matching row, so a word found in most of 100,000 messages would take hundreds of milliseconds
/// to rank in full; ranking the newest 2,000 keeps every search within tens of milliseconds and, for so common a
/// word, loses little (BM25 barely tells its matches apart). A search with fewer matches is ranked in full.
pub const RANK_WINDOW: u32 = 2_000;

/// The newest [`RANK_WINDOW`] matches that pass the filters, read from the index newest first (no sort), ranked
/// by relevance and, among equally relevant hits, newest first (in the order this device stored them); snippets
/// are cut for the rows kept only. Sender and conversation are part of the MATCH expression; the message row is
/// read only for a date filter and for the rows returned.
const SEARCH_SQL: &str = "
WITH recent AS (
    SELECT rowid AS seq, bm25(message_search, 1.0, 0.0, 0.0) AS score
    FROM message_search
    WHERE message_search MATCH ?1
      AND (?2 IS NULL AND ?3 IS NULL
           OR (SELECT ts FROM messages WHERE seq = message_search.rowid)
              BETWEEN coalesce(?2, -9223372036854775808) AND coalesce(?3, 9223372036854775807))
    ORDER BY rowid DESC
    LIMIT ?4
), ranked AS (
    SELECT seq, score FROM recent ORDER BY score, seq DESC LIMIT ?5
)
SELECT m.id, m.peer, m.from_user, m.to_user, m.ts, m.mime, m.outgoing, ranked.score AS score,
       snippet(message_search, 0, char(2), char(3), '…', ?6) AS snippet
FROM ranked
JOIN message_search ON message_search.rowid = ranked.seq
JOIN messages m ON m.seq = ranked.seq
WHERE message_search MATCH ?1
ORDER BY ranked.score, ranked.seq DESC";

impl LocalStore {
    /// Search the decrypted text messages of this device.
    pub async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, ClientError> {
        if query.limit == 0 || query.limit > MAX_LIMIT {
            return Err(ClientError::Config(format!("the result limit is 1 to {MAX_LIMIT}")));
        }
        if let (Some(since), Some(until)) = (query.since, query.until)
            && since > until
        {
            return Err(ClientError::Config("the search's start (--since) is after its end (--until)".into()));
        }
        let rows = sqlx::query(SEARCH_SQL)
            .bind(query.expression()?)
            .bind(query.since)
            .bind(query.until)
            .bind(RANK_WINDOW.max(query.limit))
            .bind(i64::from(query.limit))
            .bind(SNIPPET_TOKENS)
            .fetch_all(self.pool())
            .await
            .map_err(index_error)?;
        Ok(rows
            .iter()
            .map(|r| SearchHit {
                id: r.get("id"),
                conversation: r.get("peer"),
                from: r.get("from_user"),
                to: r.get("to_user"),
                ts: r.get("ts"),
                mime: r.get("mime"),
                outgoing: r.get::<i64, _>("outgoing") != 0,
                score: r.get("score"),
                snippet: Snippet::from_marked(&r.get::<Option<String>, _>("snippet").unwrap_or_default()),
            })
            .collect())
    }

    /// Rebuild the search index from the messages (a repair; the triggers keep it current otherwise).
    pub async fn rebuild_search_index(&self) -> Result<(), ClientError> {
        sqlx::query("INSERT INTO message_search (message_search) VALUES ('rebuild')").execute(self.pool()).await.map_err(index_error)?;
        Ok(())
    }

    /// Bytes the search index takes in the database file.
    pub async fn search_index_bytes(&self) -> Result<u64, ClientError> {
        // The FTS5 shadow tables (message_search_data, _idx, _docsize, _config), page by page.
        let pages: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name LIKE 'message\\_search\\_%' ESCAPE '\\'")
            .fetch_one(self.pool())
        .await
        .map_err(index_error)?;
        Ok(pages.max(0) as u64)
    }
}

fn index_error(e: sqlx::Error) -> ClientError {
    ClientError::Store(format!("search: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_phrases_and_prefixes_are_quoted() {
        let table: &[(&str, &str)] = &[
            ("hello", "\"hello\""),
            ("  hello   world ", "\"hello\" \"world\""),
            ("\"exact phrase\"", "\"exact phrase\""),
            ("\"exact phrase\"* tail", "\"exact phrase\"* \"tail\""),
            ("wor*", "\"wor\"*"),
            ("wor***", "\"wor\"*"),
            ("a*b", "\"a*b\""),
            ("AND OR NOT NEAR", "\"AND\" \"OR\" \"NOT\" \"NEAR\""),
            ("NEAR(a b)", "\"NEAR(a\" \"b)\""),
            ("body:secret", "\"body:secret\""),
            ("^start", "\"^start\""),
            ("-minus +plus", "\"-minus\" \"+plus\""),
            ("it's", "\"it's\""),
            ("say\"hi\"there", "\"say\" \"hi\" \"there\""),
            ("\"unclosed phrase", "\"unclosed phrase\""),
            ("\"a \"\" b\"", "\"a \" \" b\""),
            ("x\u{0}y", "\"x\" \"y\""),
            ("line\nbreak\ttab", "\"line\" \"break\" \"tab\""),
            ("\u{1b}[31mred", "\"[31mred\""),
            ("café", "\"café\""),
            ("日本語", "\"日本語\""),
            ("!!! word ???", "\"word\""),
            ("😀 smile", "\"smile\""),
            ("c++", "\"c++\""),
            ("\"quote\"\"inside\"", "\"quote\" \"inside\""),
        ];
        for (input, expected) in table {
            assert_eq!(match_expression(input).unwrap_or_else(|e| panic!("{input:?}: {e}")), *expected, "input {input:?}");
        }
    }

    #[test]
    fn empty_and_wordless_queries_are_refused_with_a_reason() {
        for input in ["", "   ", "\u{0}\u{1}", "\t\n"] {
            let e = match_expression(input).expect_err(input).to_string();
            assert!(e.contains("empty"), "{input:?}: {e}");
        }
        for input in ["!!!", "\"\"", "\"   \"", "*", "\"...\"*", "😀", "- + *", "()"] {
            let e = match_expression(input).expect_err(input).to_string();
            assert!(e.contains("no letters or digits"), "{input:?}: {e}");
        }
        let long = "a ".repeat(MAX_QUERY_CHARS);
        assert!(match_expression(&long).expect_err("too long").to_string().contains("too long"));
        let many = "w ".repeat(MAX_TERMS + 1);
        assert!(match_expression(&many).expect_err("too many").to_string().contains("too many terms"));
    }

    #[test]
    fn dates_are_rfc3339_or_whole_utc_days() {
        assert_eq!(parse_date("2026-11-27", DateEdge::Start).ok(), Some(1_795_737_600_000));
        assert_eq!(parse_date("2026-11-27", DateEdge::End).ok(), Some(1_795_737_600_000 + DAY_MS - 1));
        assert_eq!(parse_date("2026-11-27T00:00:00Z", DateEdge::End).ok(), Some(1_795_737_600_000));
        assert_eq!(parse_date("2026-11-27T01:00:00.250+01:00", DateEdge::Start).ok(), Some(1_795_737_600_250));
        assert_eq!(parse_date(" 1970-01-01 ", DateEdge::Start).ok(), Some(0));
        for bad in ["", "yesterday", "2026-13-01", "2026-02-30", "2026-1-5", "26-11-27", "2026-11-27T14:05", "2026/11/27", "+2026-11-27", "２０２６-11-27"] {
            let e = parse_date(bad, DateEdge::Start).expect_err(bad).to_string();
            assert!(e.contains("YYYY-MM-DD"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn snippets_split_at_marks_and_blank_terminal_controls() {
        let s = Snippet::from_marked("say \u{2}hello\u{3} to \u{1b}[2J\u{1b}]0;title\u{7}the\n\nworld\u{202e}");
        assert_eq!(s.matches(), ["hello"]);
        assert_eq!(s.plain(), "say hello to [2J ]0;title the world ");
        assert!(!s.plain().chars().any(unsafe_to_show));
        assert_eq!(s.marked("[", "]"), "say [hello] to [2J ]0;title the world ");
        assert_eq!(Snippet::from_marked(""), Snippet::default());
        assert_eq!(printable("bob\u{1b}[2J\u{202e}"), "bob [2J ");
        assert_eq!(utc_time(1_795_737_600_000 + 3_723_000), "2026-11-27 01:02:03Z");
        assert_eq!(utc_time(i64::MAX), format!("@{}ms", i64::MAX));
    }

    fn message(id: &str, from: &str, to: &str, ts: i64, mime: &str, body: &str) -> crate::store::StoredMessage {
        crate::store::StoredMessage {
            seq: 0,
            id: id.into(),
            outgoing: from == "me",
            from: from.into(),
            from_device: "d1".into(),
            to: to.into(),
            ts,
            mime: mime.into(),
            body: body.as_bytes().to_vec(),
            status: "received".into(),
            reply_to: None,
            change: None,
            edited_at: None,
            deleted: false,
            mentions: Vec::new(),
        }
    }

    async fn open(dir: &tempfile::TempDir) -> LocalStore {
        LocalStore::open(&dir.path().join("client.db")).await.expect("store")
    }

    async fn ids(store: &LocalStore, input: &str) -> Vec<String> {
        let query = SearchQuery::new(input).expect("query");
        let mut ids: Vec<String> = store.search(&query).await.expect("search").into_iter().map(|h| h.id).collect();
        ids.sort();
        ids
    }

    async fn exec(store: &LocalStore, sql: &'static str) {
        sqlx::query(sql).execute(store.pool()).await.expect(sql);
    }

    #[tokio::test]
    async fn only_text_messages_are_indexed_and_edits_and_deletions_follow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir).await;
        let group = format!("{}01JDZQ3N7V5X9R2M4K6P8T0W1Y", crate::groups::GROUP_PREFIX);
        let mut undecodable = message("u", "bob", "me", 5, "text/plain", "[undecodable message: apple]");
        undecodable.status = "undecodable".into();
        let mut event = message("e", "bob", &group, 6, "text/plain", "bob added apple");
        event.status = "event".into();
        store
            .insert_incoming(
                &[
                    message("a", "bob", "me", 1, "text/plain", "an apple a day"),
                    message("b", "bob", "me", 2, "Text/Markdown; charset=utf-8", "**apple** pie"),
                    message("c", "bob", "me", 3, "application/vnd.imfree.reaction+json", "{\"emoji\":\"apple\"}"),
                    message("d", "bob", "me", 4, "text/html", "<b>apple</b>"),
                    undecodable,
                    event,
                ],
                "me",
            )
            .await
            .expect("insert");
        assert_eq!(ids(&store, "apple").await, ["a", "b"]);

        // An edit replaces the indexed text.
        exec(&store, "UPDATE messages SET body = CAST('a pear a day' AS BLOB) WHERE id = 'a'").await;
        assert_eq!(ids(&store, "apple").await, ["b"]);
        assert_eq!(ids(&store, "pear").await, ["a"]);
        // Status changes that keep the text searchable (pending -> sent) keep it in the index.
        exec(&store, "UPDATE messages SET status = 'sent', ts = 9 WHERE id = 'a'").await;
        assert_eq!(ids(&store, "pear").await, ["a"]);
        // A change row (an edit's text, carried by its own row) is not indexed; the edited row is.
        exec(&store, "INSERT INTO messages (id, outgoing, peer, from_user, from_device, to_user, ts, mime, body, status, ref_action, ref_id) SELECT 'edit1', 0, 'bob', 'bob', 'd1', 'me', 8, 'text/plain', CAST('a quince a day' AS BLOB), 'received', 'edit', 'a'").await;
        assert!(ids(&store, "quince").await.is_empty());
        // Deleted as the edits code does it (deleted = 1 and an empty body), or by the flag alone.
        exec(&store, "UPDATE messages SET deleted = 1 WHERE id = 'a'").await;
        assert!(ids(&store, "pear").await.is_empty());
        exec(&store, "UPDATE messages SET deleted = 0 WHERE id = 'a'").await;
        assert_eq!(ids(&store, "pear").await, ["a"]);
        // A tombstone (status 'deleted', or an emptied body) leaves the index; a deleted row too.
        exec(&store, "UPDATE messages SET status = 'deleted' WHERE id = 'a'").await;
        assert!(ids(&store, "pear").await.is_empty());
        exec(&store, "UPDATE messages SET body = x'' WHERE id = 'b'").await;
        assert!(ids(&store, "apple").await.is_empty());
        exec(&store, "UPDATE messages SET body = CAST('apple again' AS BLOB), status = 'received' WHERE id = 'b'").await;
        assert_eq!(ids(&store, "apple").await, ["b"]);
        exec(&store, "DELETE FROM messages WHERE id = 'b'").await;
        assert!(ids(&store, "apple").await.is_empty());
        // INSERT OR REPLACE deletes the old row first: with recursive triggers on, the index forgets it.
        exec(&store, "INSERT OR REPLACE INTO messages (id, outgoing, peer, from_user, from_device, to_user, ts, mime, body, status) SELECT 'c', 0, 'bob', 'bob', 'd1', 'me', 3, 'text/plain', CAST('plum' AS BLOB), 'received'").await;
        assert_eq!(ids(&store, "plum").await, ["c"]);
        assert!(ids(&store, "apple").await.is_empty());

        // Old words are removed from the index's pages, not masked (FTS5 secure-delete).
        let secure: i64 = sqlx::query_scalar("SELECT v FROM message_search_config WHERE k = 'secure-delete'").fetch_one(store.pool()).await.expect("config");
        assert_eq!(secure, 1);
        // The index agrees with its content, row for row.
        exec(&store, "INSERT INTO message_search (message_search, rank) VALUES ('integrity-check', 1)").await;
    }

    #[tokio::test]
    async fn a_store_from_before_the_index_is_indexed_when_it_is_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("client.db");
        {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.expect("pool");
            sqlx::migrate!("./migrations").run_to(4, &pool).await.expect("migrations up to 0004");
            for (id, mime, body) in [("old1", "text/plain", "legacy walrus"), ("old2", "application/octet-stream", "walrus bytes")] {
                sqlx::query(
                    "INSERT INTO messages (id, outgoing, peer, from_user, from_device, to_user, ts, mime, body, status) VALUES (?, 0, 'bob', 'bob', 'd', 'me', 1, ?, ?, 'received')",
                )
                .bind(id)
                .bind(mime)
                .bind(body.as_bytes())
                .execute(&pool)
                .await
                .expect("insert");
            }
            pool.close().await;
        }
        let store = LocalStore::open(&path).await.expect("migrated store");
        assert_eq!(ids(&store, "walrus").await, ["old1"]);
        assert!(store.search_index_bytes().await.expect("size") > 0);
        #[cfg(unix)]
        for suffix in ["", "-wal", "-shm"] {
            use std::os::unix::fs::PermissionsExt;
            let file = format!("{}{suffix}", path.display());
            let mode = std::fs::metadata(&file).expect(&file).permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}: the decrypted messages and their index are the owner's alone");
        }
    }

    #[tokio::test]
    async fn filters_ranking_and_snippets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir).await;
        let group = format!("{}01JDZQ3N7V5X9R2M4K6P8T0W1Y", crate::groups::GROUP_PREFIX);
        store
            .insert_incoming(
                &[
                    message("1", "bob", "me", 1_000, "text/plain", "the quarterly report is late"),
                    message("2", "me", "bob", 2_000, "text/plain", "report report report"),
                    message("3", "carol", &group, 3_000, "text/plain", "draft of the quarterly report attached"),
                    message("4", "carol", "me", 4_000, "text/plain", "reporting from the field: the reporter reports"),
                    message("5", "bob", &group, 5_000, "text/plain", "report \u{1b}[31m red\u{1b}[0m\nnext line"),
                ],
                "me",
            )
            .await
            .expect("insert");
        let search = |input: &str, edit: &dyn Fn(&mut SearchQuery)| {
            let mut q = SearchQuery::new(input).expect("query");
            edit(&mut q);
            let store = store.clone();
            async move { store.search(&q).await.expect("search").into_iter().map(|h| h.id).collect::<Vec<_>>() }
        };
        // Relevance first (three occurrences beat one, a short message beats a longer one), then the newest.
        assert_eq!(search("report", &|_| {}).await, ["2", "1", "5", "3"]);
        assert_eq!(search("\"quarterly report\"", &|_| {}).await.len(), 2);
        assert_eq!(search("\"report quarterly\"", &|_| {}).await, Vec::<String>::new());
        let mut prefixed = search("report*", &|_| {}).await;
        prefixed.sort();
        assert_eq!(prefixed, ["1", "2", "3", "4", "5"]);
        assert_eq!(search("report", &|q| q.from = Some("bob".into())).await, ["1", "5"]);
        assert_eq!(search("report", &|q| q.from = Some("me".into())).await, ["2"]);
        assert_eq!(search("report", &|q| q.conversation = Some(group.clone())).await, ["5", "3"]);
        assert_eq!(search("report", &|q| q.conversation = Some("bob".into())).await, ["2", "1"]);
        assert_eq!(search("report", &|q| q.since = Some(2_000)).await, ["2", "5", "3"]);
        assert_eq!(search("report", &|q| q.until = Some(2_000)).await, ["2", "1"]);
        assert_eq!(search("report", &|q| (q.since, q.until) = (Some(2_001), Some(4_999))).await, ["3"]);
        assert_eq!(search("report", &|q| q.limit = 1).await, ["2"]);
        assert_eq!(search("QUARTERLY Réport", &|_| {}).await.len(), 2, "case and diacritics are folded");

        let mut q = SearchQuery::new("red").expect("query");
        q.conversation = Some(group.clone());
        let hits = store.search(&q).await.expect("search");
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].conversation.as_str(), hits[0].from.as_str(), hits[0].ts), (group.as_str(), "bob", 5_000));
        assert_eq!(hits[0].snippet.matches(), ["red"]);
        assert_eq!(hits[0].snippet.plain(), "report [31m red [0m next line");

        q.limit = 0;
        assert!(store.search(&q).await.is_err());
        q.limit = 5;
        (q.since, q.until) = (Some(10), Some(5));
        assert!(store.search(&q).await.expect_err("since after until").to_string().contains("--since"));
        q.since = None;
        q.conversation = Some("group:not-an-id".into());
        assert!(store.search(&q).await.is_err());
    }

    /// Inputs built from the characters that matter to FTS5 and to the parser: every one either parses into an
    /// expression that SQLite accepts, or is refused with a message. Never a panic, never an FTS5 syntax error.
    #[tokio::test]
    async fn no_input_makes_an_invalid_fts5_expression() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(&dir.path().join("client.db")).await.expect("store");
        let alphabet: Vec<char> = "ab \"*()':^-+.,;{}[]\\/\u{0}\u{1b}\n\té日😀ANDORNTE_0#@~`!?|&<>=".chars().collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let input: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let Ok(query) = SearchQuery::new(&input) else { continue };
            accepted += 1;
            store.search(&query).await.unwrap_or_else(|e| panic!("{input:?} -> {:?}: {e}", query.expression));
        }
        assert!(accepted > 5_000, "the generator mostly makes searchable input ({accepted})");
    }
}
