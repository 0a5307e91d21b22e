//! The OpenAI-compatible request (`POST <base-url>/v1/audio/transcriptions`, multipart/form-data with `file`,
//! `model`, optional `language` and `response_format=json`) and what its answer means: the transcript, a failure
//! worth retrying (408, 429, 5xx, no answer) or one that is not (any other status, an answer without a transcript).

use serde::Deserialize;

/// The path under the base URL.
pub const PATH: &str = "/v1/audio/transcriptions";

/// The endpoint for a base URL given with or without a trailing slash, or already ending in `/v1`.
pub fn endpoint(base_url: &str) -> String {
    let base = base_url.trim().trim_end_matches('/');
    match base.strip_suffix("/v1") {
        Some(root) => format!("{root}{PATH}"),
        None => format!("{base}{PATH}"),
    }
}

/// What one request carries.
#[derive(Debug, Clone)]
pub struct Form<'a> {
    /// The audio part.
    pub audio: &'a [u8],
    /// Its file name (the servers tell the format by its extension as well as by its type).
    pub filename: &'a str,
    /// Its MIME type.
    pub mime: &'a str,
    /// The `model` field.
    pub model: &'a str,
    /// The `language` field (ISO 639-1), omitted when empty.
    pub language: &'a str,
}

/// The body and its `content-type` header value. `boundary` must not occur in the audio: the caller draws a
/// random one and [`body_contains`] checks it.
pub fn multipart(form: &Form<'_>, boundary: &str) -> (Vec<u8>, String) {
    let mut body = Vec::with_capacity(form.audio.len() + 512);
    let mut field = |name: &str, value: &str| {
        body.extend_from_slice(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    };
    field("model", form.model);
    if !form.language.is_empty() {
        field("language", form.language);
    }
    field("response_format", "json");
    let filename: String = form.filename.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).collect();
    body.extend_from_slice(
        format!("--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\ncontent-type: {}\r\n\r\n", form.mime)
            .as_bytes(),
    );
    body.extend_from_slice(form.audio);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

/// Whether `needle` occurs in `haystack`.
pub fn body_contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[derive(Deserialize)]
struct Transcription {
    text: String,
}

/// The transcript in a 2xx answer: a JSON object with a string `text` (extra fields, as `verbose_json` servers
/// send, are ignored), trimmed. `None` for anything else.
pub fn parse_transcript(body: &[u8]) -> Option<String> {
    let t: Transcription = serde_json::from_slice(body).ok()?;
    Some(t.text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// What an answer means for the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The part's transcript.
    Text(String),
    /// Try again later, no earlier than `after_ms` if the server named a time.
    Retry {
        /// `Retry-After` (seconds, as a number) in milliseconds.
        after_ms: Option<u64>,
        /// For the log: the status, or what failed.
        why: String,
    },
    /// The server will not take it: report and give up.
    Permanent {
        /// For the log and the reply: the status, or what was wrong.
        why: String,
    },
}

/// Judge an answer: its status, `Retry-After` header and body.
pub fn judge(status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    match status {
        200..=299 => match parse_transcript(body) {
            Some(text) => Outcome::Text(text),
            None => Outcome::Permanent { why: format!("HTTP {status} without a transcript") },
        },
        408 | 429 | 500..=599 => Outcome::Retry {
            after_ms: retry_after.and_then(|v| v.trim().parse::<u64>().ok()).map(|s| s.saturating_mul(1000)),
            why: format!("HTTP {status}"),
        },
        _ => Outcome::Permanent { why: format!("HTTP {status}") },
    }
}

/// The wait after `attempt` failed attempts (`attempt ≥ 1`): `min(cap, base · 2^(attempt−1))` plus up to a quarter
/// of that as jitter (`jitter` in `[0, 1)`), capped; at least `retry_after_ms` (capped too) when the server asked.
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, retry_after_ms: Option<u64>, jitter: f64) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(40)).min(cap_ms);
    let wait = exp.saturating_add((exp as f64 * 0.25 * jitter.clamp(0.0, 1.0)) as u64).min(cap_ms);
    retry_after_ms.map_or(wait, |r| wait.max(r.min(cap_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("http://127.0.0.1:8080"), "http://127.0.0.1:8080/v1/audio/transcriptions");
        assert_eq!(endpoint("https://api.example/ "), "https://api.example/v1/audio/transcriptions");
        assert_eq!(endpoint("https://api.example/v1/"), "https://api.example/v1/audio/transcriptions");
        assert_eq!(endpoint("https://h/proxy/whisper"), "https://h/proxy/whisper/v1/audio/transcriptions");
    }

    #[test]
    fn multipart_form() {
        let form = Form { audio: b"\x00OggS\r\n--x", filename: "part-1.ogg\"\r\n", mime: "audio/ogg", model: "whisper-1", language: "en" };
        let (body, ct) = multipart(&form, "b0undary");
        assert_eq!(ct, "multipart/form-data; boundary=b0undary");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("--b0undary\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"));
        assert!(text.contains("name=\"language\"\r\n\r\nen\r\n"));
        assert!(text.contains("name=\"response_format\"\r\n\r\njson\r\n"));
        assert!(text.contains("name=\"file\"; filename=\"part-1.ogg\"\r\ncontent-type: audio/ogg\r\n\r\n\x00OggS\r\n--x\r\n--b0undary--\r\n"));
        let no_language = Form { language: "", ..form };
        assert!(!String::from_utf8_lossy(&multipart(&no_language, "b").0).contains("language"));
        assert!(body_contains(&body, b"--x"));
        assert!(!body_contains(b"abc", b""));
        assert!(!body_contains(b"ab", b"abc"));
    }

    #[test]
    fn answers() {
        assert_eq!(judge(200, None, br#"{"text":"  hello   world \n"}"#), Outcome::Text("hello world".into()));
        assert_eq!(judge(200, None, br#"{"text":"","segments":[],"language":"en"}"#), Outcome::Text(String::new()));
        assert!(matches!(judge(200, None, b"hello"), Outcome::Permanent { .. }));
        assert!(matches!(judge(200, None, br#"{"text":5}"#), Outcome::Permanent { .. }));
        assert_eq!(judge(500, None, b"boom"), Outcome::Retry { after_ms: None, why: "HTTP 500".into() });
        assert_eq!(judge(429, Some(" 7 "), b""), Outcome::Retry { after_ms: Some(7000), why: "HTTP 429".into() });
        assert!(matches!(judge(408, Some("soon"), b""), Outcome::Retry { after_ms: None, .. }));
        assert_eq!(judge(400, Some("5"), br#"{"error":{"message":"bad"}}"#), Outcome::Permanent { why: "HTTP 400".into() });
        assert!(matches!(judge(401, None, b""), Outcome::Permanent { .. }));
        assert!(matches!(judge(302, None, b""), Outcome::Permanent { .. }));
    }

    #[test]
    fn backoff() {
        assert_eq!(backoff_ms(1, 1000, 60_000, None, 0.0), 1000);
        assert_eq!(backoff_ms(3, 1000, 60_000, None, 0.0), 4000);
        assert_eq!(backoff_ms(3, 1000, 60_000, None, 0.999), 4999);
        assert_eq!(backoff_ms(50, 1000, 60_000, None, 0.5), 60_000);
        assert_eq!(backoff_ms(1, 1000, 60_000, Some(30_000), 0.0), 30_000);
        assert_eq!(backoff_ms(1, 1000, 60_000, Some(u64::MAX), 0.0), 60_000);
    }
}
