//! The bundled `transcription` plugin (bot scope): it runs as the `transcription` bot account, a member of the
//! conversations it is added to. A voice message posted there (Ogg Opus or WAV; other audio formats and, when the
//! administrator allows it, plain audio files too) is sent to an OpenAI-compatible speech-to-text endpoint
//! (`POST <base-url>/v1/audio/transcriptions`: whisper.cpp server, faster-whisper-server, LocalAI, OpenAI) and
//! the transcript is posted as a reply to it, end-to-end encrypted like any member's message.
//!
//! - Long recordings are cut into parts of at most `max-chunk-seconds` ([`ogg`] at page boundaries into
//!   standalone Ogg Opus streams, [`wav`] at frames), in the quietest place near each limit ([`split`]), sent in
//!   order and joined.
//! - The incoming-message hook only queues (in kv, [`job`]); a timer does the requests, one part per call, and
//!   saves progress after each part (one request per call), so a slow recogniser never holds the bot's loop and a restart loses nothing.
//! - A failure worth retrying (no answer, 408, 429, 5xx) is retried with exponential backoff; the conversation is
//!   told once that the transcript is delayed. A permanent one (any other 4xx, an answer without a transcript, audio
//!   that cannot be read) gets one short apology as the reply, and the job is dropped.
//!
//! The pure logic builds natively and carries its unit tests; [`plugin`] is the glue to the host (wasm32 only).

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod audio;
pub mod job;
pub mod ogg;
pub mod request;
pub mod split;
pub mod wav;

#[cfg(target_arch = "wasm32")]
pub mod plugin;

/// One stretch of audio sent in one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// A complete file in its format (a standalone Ogg Opus stream, a WAV file, or the original bytes).
    pub data: Vec<u8>,
    /// Its MIME type for the multipart field.
    pub mime: String,
    /// Its file name extension (`ogg`, `wav`, `mp3`…).
    pub extension: &'static str,
    /// Its playing time in milliseconds (0 when unknown).
    pub duration_ms: u64,
}

/// Why audio cannot be transcribed. The message is safe to show (it never contains the audio).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioError {
    /// The bytes are not what their format requires.
    Malformed(String),
    /// A format or variant this plugin does not handle.
    Unsupported(String),
    /// No audio at all.
    Empty,
    /// Longer than the administrator allows.
    TooLong {
        /// The recording's length.
        duration_ms: u64,
        /// The limit (`max-duration-seconds`).
        max_ms: u64,
    },
}

impl std::fmt::Display for AudioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AudioError::Malformed(why) => write!(f, "the recording cannot be read ({why})"),
            AudioError::Unsupported(what) => write!(f, "{what} is not supported"),
            AudioError::Empty => write!(f, "the recording is empty"),
            AudioError::TooLong { duration_ms, max_ms } => {
                write!(f, "the recording is {} s long; at most {} s are transcribed", duration_ms.div_ceil(1000), max_ms / 1000)
            }
        }
    }
}

impl std::error::Error for AudioError {}
