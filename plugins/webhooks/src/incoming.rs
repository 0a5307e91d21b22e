//! Incoming hooks: secret URLs `<public-url>/plugins/webhooks/hooks/<id>/<secret>` that post into one
//! conversation as the bot. Only the SHA-256 of a secret is stored, and it is compared in constant time. This
//! module decides what a request means; the plugin does the kv look-up and the posting.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mrkdwn::{blocks_to_markdown, mrkdwn_to_markdown};
use crate::signing::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// A stored hook. The URL's secret is not in it, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// Public id (the first path segment after `/hooks/`).
    pub id: String,
    /// The creator's label.
    pub name: String,
    /// Where its messages go.
    pub conversation: String,
    /// SHA-256 (hex) of the URL's secret.
    pub secret_sha256: String,
    /// Key for `X-Imfree-Signature` when the hook was created with `--verify` (an HMAC needs the key itself).
    pub verify_secret: Option<String>,
    /// Who created it (an account, or the bot itself for the operator).
    pub created_by: String,
    /// When (ms since the epoch).
    pub created_ms: u64,
}

/// What the HTTP hook answers: status, and a short JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `{"ok": …}` or `{"error": …, "message": …}`.
    pub body: String,
    /// Extra headers (`allow` on a 405).
    pub headers: Vec<(String, String)>,
}

impl Answer {
    fn error(status: u16, code: &str, message: &str) -> Self {
        Answer { status, body: serde_json::json!({"error": code, "message": message}).to_string(), headers: Vec::new() }
    }
    /// The answer for a request whose message was posted.
    pub fn posted(message_id: &str) -> Self {
        Answer { status: 200, body: serde_json::json!({"ok": true, "id": message_id}).to_string(), headers: Vec::new() }
    }
    /// 404, the same for an unknown id, a wrong secret and a revoked hook, so that the answer says nothing about
    /// which hooks exist.
    pub fn not_found() -> Self {
        Answer::error(404, "not_found", "no such hook")
    }
    /// 503: the message could not be posted now.
    pub fn unavailable() -> Self {
        Answer::error(503, "unavailable", "the message could not be posted; try again later")
    }
}

/// `/hooks/<id>/<secret>` (the path below `/plugins/webhooks`).
pub fn parse_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/hooks/")?;
    let (id, secret) = rest.split_once('/')?;
    let ok = |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (ok(id) && ok(secret)).then_some((id, secret))
}

/// Whether `secret` is the one whose hash `hook` stores (constant time).
pub fn secret_matches(hook: &Hook, secret: &str) -> bool {
    signing::constant_time_eq(signing::sha256_hex(secret.as_bytes()).as_bytes(), hook.secret_sha256.as_bytes())
}

/// A request to a hook, as much of it as the checks need.
pub struct Request<'a> {
    /// Method, upper case.
    pub method: &'a str,
    /// Path below `/plugins/webhooks`.
    pub path: &'a str,
    /// Headers, names lower case.
    pub headers: &'a [(String, String)],
    /// Body.
    pub body: &'a [u8],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The limits the checks apply.
pub struct Limits {
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// How far a signed request's timestamp may be from now.
    pub signature_window_s: u64,
    /// Now, in Unix seconds.
    pub now_s: u64,
}

/// Check a request and turn its payload into the Markdown to post: `Ok((hook, markdown))`, or the answer to give
/// (405 wrong method, 404 unknown path/id/secret, 413 too large, 415 not JSON, 401 bad signature, 400 bad
/// payload). `lookup` finds a stored hook by id.
pub fn check(req: &Request<'_>, limits: &Limits, lookup: impl FnOnce(&str) -> Option<Hook>) -> Result<(Hook, String), Answer> {
    let Some((id, secret)) = parse_path(req.path) else {
        return Err(Answer::not_found());
    };
    if req.method != "POST" {
        let mut a = Answer::error(405, "method_not_allowed", "hooks take POST");
        a.headers.push(("allow".into(), "POST".into()));
        return Err(a);
    }
    if req.body.len() > limits.max_body_bytes {
        return Err(Answer::error(413, "payload_too_large", &format!("the body may be at most {} bytes", limits.max_body_bytes)));
    }
    let hook = lookup(id).filter(|h| secret_matches(h, secret)).ok_or_else(Answer::not_found)?;
    let json_type = req
        .header("content-type")
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(Answer::error(415, "unsupported_media_type", "send application/json"));
    }
    if let Some(key) = &hook.verify_secret {
        signing::verify(key.as_bytes(), req.header(TIMESTAMP_HEADER), req.header(SIGNATURE_HEADER), req.body, limits.now_s, limits.signature_window_s)
            .map_err(|e| Answer::error(401, "bad_signature", &e.to_string()))?;
    }
    let markdown = payload_to_markdown(req.body).map_err(|e| Answer::error(400, "bad_payload", e))?;
    Ok((hook, markdown))
}

/// Largest message the bot posts from a hook (characters).
pub const MAX_MESSAGE_CHARS: usize = 40_000;

/// A Slack-compatible payload (`text`, `blocks`) or a generic one (`markdown` or `text`, optional `title`) as the
/// Markdown message to post. With `blocks`, `text` is Slack's notification fallback and is not repeated.
pub fn payload_to_markdown(body: &[u8]) -> Result<String, &'static str> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "the body is not valid JSON")?;
    let obj = value.as_object().ok_or("the body must be a JSON object")?;
    let field = |k: &str| -> Result<Option<&str>, &'static str> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err("text, markdown and title must be strings"),
        }
    };
    let content = if let Some(blocks) = obj.get("blocks").filter(|b| !b.is_null()) {
        let blocks = blocks.as_array().ok_or("blocks must be a list")?;
        let md = blocks_to_markdown(blocks);
        if md.trim().is_empty() { field("text")?.map(mrkdwn_to_markdown).unwrap_or_default() } else { md }
    } else if let Some(md) = field("markdown")? {
        md.to_owned()
    } else {
        field("text")?.map(mrkdwn_to_markdown).unwrap_or_default()
    };
    let content = match field("title")?.map(str::trim).filter(|t| !t.is_empty()) {
        Some(title) if !content.trim().is_empty() => format!("**{}**\n\n{content}", title.replace('\n', " ")),
        Some(title) => format!("**{}**", title.replace('\n', " ")),
        None => content,
    };
    if content.trim().is_empty() {
        return Err("nothing to post: give text, markdown or blocks");
    }
    if content.chars().count() > MAX_MESSAGE_CHARS {
        return Err("the message is too long");
    }
    Ok(content)
}

/// What `/webhook …` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subcommand {
    /// `create [CONV] [NAME…] [--verify]` (CONV only when the operator asks).
    Create {
        /// Conversation (operator only; a member's hook posts where the command was typed).
        conversation: Option<String>,
        /// Label.
        name: String,
        /// Also require signed requests.
        verify: bool,
    },
    /// `list`.
    List,
    /// `revoke ID`.
    Revoke(String),
    /// Anything else: the usage text.
    Help,
}

/// Parse the arguments of `/webhook`; `operator` takes the conversation as the first argument of `create`.
pub fn parse_command(args: &str, operator: bool) -> Subcommand {
    let mut words = args.split_whitespace();
    match words.next() {
        Some("create") => {
            let mut verify = false;
            let mut rest: Vec<&str> = Vec::new();
            for w in words {
                if w == "--verify" { verify = true } else { rest.push(w) }
            }
            let conversation = if operator {
                if rest.is_empty() {
                    return Subcommand::Help;
                }
                Some(rest.remove(0).to_owned())
            } else {
                None
            };
            let name = rest.join(" ");
            Subcommand::Create { conversation, name: if name.is_empty() { "webhook".into() } else { name.chars().take(64).collect() }, verify }
        }
        Some("list") => Subcommand::List,
        Some("revoke") => match words.next() {
            Some(id) => Subcommand::Revoke(id.to_owned()),
            None => Subcommand::Help,
        },
        _ => Subcommand::Help,
    }
}

/// The usage text.
pub const USAGE: &str = "usage: /webhook create [NAME] [--verify] | /webhook list | /webhook revoke ID";

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(verify: Option<&str>) -> Hook {
        Hook {
            id: "h1".into(),
            name: "ci".into(),
            conversation: "group:g".into(),
            secret_sha256: signing::sha256_hex(b"s3cret"),
            verify_secret: verify.map(str::to_owned),
            created_by: "alice".into(),
            created_ms: 0,
        }
    }

    fn json_headers() -> Vec<(String, String)> {
        vec![("content-type".into(), "application/json; charset=utf-8".into())]
    }

    const LIMITS: Limits = Limits { max_body_bytes: 100, signature_window_s: 300, now_s: 10_000 };

    #[test]
    fn statuses() {
        let headers = json_headers();
        let req = |method, path, body: &'static [u8]| Request { method, path, headers: &headers, body };
        let found = |id: &str| (id == "h1").then(|| hook(None));
        let (h, md) = check(&req("POST", "/hooks/h1/s3cret", br#"{"text":"*hi*"}"#), &LIMITS, found).unwrap();
        assert_eq!((h.conversation.as_str(), md.as_str()), ("group:g", "**hi**"));
        let status = |r: Result<(Hook, String), Answer>| r.err().map(|a| a.status);
        assert_eq!(status(check(&req("GET", "/hooks/h1/s3cret", b""), &LIMITS, found)), Some(405));
        assert_eq!(status(check(&req("POST", "/hooks/h1/wrong", b"{}"), &LIMITS, found)), Some(404));
        assert_eq!(status(check(&req("POST", "/hooks/h2/s3cret", b"{}"), &LIMITS, found)), Some(404));
        assert_eq!(status(check(&req("POST", "/hooks/h1", b"{}"), &LIMITS, found)), Some(404));
        assert_eq!(status(check(&req("POST", "/hooks/h1/s3cret/x", b"{}"), &LIMITS, found)), Some(404));
        assert_eq!(status(check(&req("POST", "/hooks/h1/s3cret", &[b'x'; 101]), &LIMITS, found)), Some(413));
        assert_eq!(status(check(&req("POST", "/hooks/h1/s3cret", b"{nope"), &LIMITS, found)), Some(400));
        assert_eq!(status(check(&req("POST", "/hooks/h1/s3cret", br#"{"text":""}"#), &LIMITS, found)), Some(400));
        let plain = vec![("content-type".to_owned(), "text/plain".to_owned())];
        let r = Request { method: "POST", path: "/hooks/h1/s3cret", headers: &plain, body: b"{}" };
        assert_eq!(status(check(&r, &LIMITS, found)), Some(415));
        let a = check(&req("PUT", "/hooks/h1/s3cret", b""), &LIMITS, found).unwrap_err();
        assert_eq!(a.headers, [("allow".to_owned(), "POST".to_owned())]);
        assert!(a.body.contains("method_not_allowed"));
    }

    #[test]
    fn signed_hooks() {
        let found = |_: &str| Some(hook(Some("vkey")));
        let body = br#"{"text":"x"}"#;
        let sig = signing::sign(b"vkey", 10_000, body);
        let mut headers = json_headers();
        headers.push((TIMESTAMP_HEADER.into(), "10000".into()));
        headers.push((SIGNATURE_HEADER.into(), sig));
        assert!(check(&Request { method: "POST", path: "/hooks/h1/s3cret", headers: &headers, body }, &LIMITS, found).is_ok());
        let tampered = br#"{"text":"y"}"#;
        let r = Request { method: "POST", path: "/hooks/h1/s3cret", headers: &headers, body: tampered };
        assert_eq!(check(&r, &LIMITS, found).unwrap_err().status, 401);
        let r = Request { method: "POST", path: "/hooks/h1/s3cret", headers: &headers, body };
        let late = Limits { now_s: 10_301, ..LIMITS };
        assert_eq!(check(&r, &late, found).unwrap_err().status, 401);
        let unsigned = json_headers();
        let r = Request { method: "POST", path: "/hooks/h1/s3cret", headers: &unsigned, body };
        assert_eq!(check(&r, &LIMITS, found).unwrap_err().status, 401);
    }

    #[test]
    fn payloads() {
        assert_eq!(payload_to_markdown(br#"{"markdown":"**x**","title":"T"}"#).unwrap(), "**T**\n\n**x**");
        assert_eq!(payload_to_markdown(br#"{"text":"a <https://x.example|b>"}"#).unwrap(), "a [b](https://x.example)");
        assert_eq!(
            payload_to_markdown(br#"{"text":"fallback","blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*b*"}}]}"#).unwrap(),
            "**b**"
        );
        assert_eq!(payload_to_markdown(br#"{"text":"fallback","blocks":[{"type":"actions"}]}"#).unwrap(), "fallback");
        assert!(payload_to_markdown(b"[]").is_err());
        assert!(payload_to_markdown(br#"{"text":5}"#).is_err());
        assert!(payload_to_markdown(br#"{"blocks":{}}"#).is_err());
        assert!(payload_to_markdown(br#"{}"#).is_err());
        assert_eq!(payload_to_markdown(br#"{"title":"only"}"#).unwrap(), "**only**");
    }

    #[test]
    fn commands() {
        assert_eq!(parse_command("create deploys bot --verify", false), Subcommand::Create { conversation: None, name: "deploys bot".into(), verify: true });
        assert_eq!(parse_command("create", false), Subcommand::Create { conversation: None, name: "webhook".into(), verify: false });
        assert_eq!(parse_command("create group:x ci", true), Subcommand::Create { conversation: Some("group:x".into()), name: "ci".into(), verify: false });
        assert_eq!(parse_command("create", true), Subcommand::Help);
        assert_eq!(parse_command("list", false), Subcommand::List);
        assert_eq!(parse_command("revoke abc", false), Subcommand::Revoke("abc".into()));
        assert_eq!(parse_command("revoke", false), Subcommand::Help);
        assert_eq!(parse_command("", false), Subcommand::Help);
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("/hooks/ab12/x-Y_z"), Some(("ab12", "x-Y_z")));
        for bad in ["/hooks/", "/hooks//x", "/hooks/a/", "/hooks/a/b/c", "/hook/a/b", "/hooks/a/b%20", "hooks/a/b"] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }
}
