//! Which messages are transcribed, and the queue of transcriptions in kv: one record per voice message under
//! `q/<queued ms, zero-padded>-<message id>` (so keys sort oldest first) with its progress (the transcripts of the
//! parts done so far), attempts and next due time, so that a restart or a trap loses nothing and a long
//! recording is worked through over several timer calls.

use serde::{Deserialize, Serialize};

/// kv prefix of the queue.
pub const PREFIX: &str = "q/";

/// The JSON summary a file message carries as its body (content type `application/vnd.imfree.file+json`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FileSummary {
    /// File name as the sender gave it.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Declared MIME type.
    pub mime: String,
    /// Sent as a voice message.
    pub voice: bool,
    /// Playing time the sender's client measured.
    pub duration_ms: Option<u64>,
}

/// Whether a file message is one to transcribe: every voice message; an audio file sent as a plain file only when
/// the administrator turned `audio-files` on.
pub fn wanted(summary: &FileSummary, audio_files: bool) -> bool {
    summary.voice || (audio_files && summary.mime.trim().to_ascii_lowercase().starts_with("audio/"))
}

/// Parse a file message's body; `None` if it is not a summary.
pub fn parse_summary(body: &str) -> Option<FileSummary> {
    serde_json::from_str(body).ok()
}

/// One voice message waiting to be (fully) transcribed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The voice message (what the reply answers).
    pub message: String,
    /// Its conversation.
    pub conversation: String,
    /// Its declared MIME type and duration (only used for formats sent whole).
    pub mime: String,
    /// Duration the sender declared.
    pub declared_ms: Option<u64>,
    /// Transcripts of the parts done so far, in order.
    pub done: Vec<String>,
    /// Failed attempts at the current part.
    pub attempts: u32,
    /// Not before this time (ms since the epoch).
    pub due_ms: u64,
    /// When it was queued.
    pub queued_ms: u64,
    /// Whether the conversation was told that the transcript is delayed (said once per message).
    pub told_delay: bool,
}

/// The kv key of a job.
pub fn key(queued_ms: u64, message: &str) -> String {
    format!("{PREFIX}{queued_ms:016}-{message}")
}

/// The reply for a finished transcription: the parts joined, at most `max_chars` characters (cut at a word, with
/// an ellipsis), or a note when nothing was recognised.
pub fn reply_text(parts: &[String], max_chars: usize) -> String {
    let joined = parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" ");
    if joined.is_empty() {
        return "(no speech recognised)".into();
    }
    if joined.chars().count() <= max_chars {
        return joined;
    }
    let cut: String = joined.chars().take(max_chars.saturating_sub(1)).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > cut.len() / 2 => &cut[..i],
        _ => &cut[..],
    };
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_files() {
        let voice = parse_summary(r#"{"id":"f1","name":"v.ogg","size":10,"mime":"audio/ogg; codecs=opus","sha256":"00","voice":true,"duration_ms":1200}"#).unwrap();
        assert!(voice.voice && voice.duration_ms == Some(1200) && voice.name == "v.ogg" && voice.size == 10);
        assert!(wanted(&voice, false));
        let song = parse_summary(r#"{"name":"s.mp3","mime":"Audio/MPEG","voice":false}"#).unwrap();
        assert!(!wanted(&song, false));
        assert!(wanted(&song, true));
        let pdf = parse_summary(r#"{"name":"a.pdf","mime":"application/pdf"}"#).unwrap();
        assert!(!wanted(&pdf, true));
        assert!(parse_summary("not json").is_none());
        assert!(parse_summary(r#"{"voice":"yes"}"#).is_none());
    }

    #[test]
    fn keys_sort_and_records_round_trip() {
        assert!(key(999, "b") < key(1000, "a"));
        let j = Job {
            message: "m".into(),
            conversation: "c".into(),
            mime: "audio/wav".into(),
            declared_ms: None,
            done: vec!["a".into()],
            attempts: 1,
            due_ms: 5,
            queued_ms: 1,
            told_delay: false,
        };
        assert_eq!(serde_json::from_slice::<Job>(&serde_json::to_vec(&j).unwrap()).unwrap(), j);
    }

    #[test]
    fn replies() {
        assert_eq!(reply_text(&["hello world".into(), " ".into(), "good bye".into()], 100), "hello world good bye");
        assert_eq!(reply_text(&[], 100), "(no speech recognised)");
        assert_eq!(reply_text(&["one two three four".into()], 12), "one two…");
        assert_eq!(reply_text(&["ééééééééé".into()], 5), "éééé…");
    }
}
