//! From a voice message's bytes to the parts sent to the recogniser: the format is told by the bytes (the
//! declared MIME type only names formats that are sent whole), Ogg Opus and WAV are split, and anything longer than
//! the administrator allows is refused before a request is made.

use crate::ogg::OpusStream;
use crate::wav::Wav;
use crate::{AudioError, Part};

/// Limits on one recording.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest part sent in one request (milliseconds).
    pub max_chunk_ms: u64,
    /// Largest part sent in one request (bytes); a format that cannot be split must fit in it whole.
    pub max_chunk_bytes: usize,
    /// Longest recording transcribed at all (milliseconds).
    pub max_duration_ms: u64,
}

/// The file extension and MIME type of an audio format sent as it is (the recogniser decodes it), by declared type.
fn passthrough(mime: &str) -> Option<(&'static str, &'static str)> {
    let base = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    Some(match base.as_str() {
        "audio/mpeg" | "audio/mp3" => ("mp3", "audio/mpeg"),
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" | "audio/aac" => ("m4a", "audio/mp4"),
        "audio/webm" => ("webm", "audio/webm"),
        "audio/flac" | "audio/x-flac" => ("flac", "audio/flac"),
        "audio/ogg" | "audio/vorbis" => ("ogg", "audio/ogg"),
        _ => return None,
    })
}

/// The parts to transcribe, in order. `declared_ms` is the duration the sender's client declared (used only for a
/// format that is sent whole, where it cannot be measured here).
pub fn prepare(data: &[u8], mime: &str, declared_ms: Option<u64>, limits: &Limits) -> Result<Vec<Part>, AudioError> {
    let too_long = |ms: u64| AudioError::TooLong { duration_ms: ms, max_ms: limits.max_duration_ms };
    let parts = if data.starts_with(b"OggS") && data.get(28..36) == Some(b"OpusHead") {
        let stream = OpusStream::parse(data)?;
        if stream.duration_ms() > limits.max_duration_ms {
            return Err(too_long(stream.duration_ms()));
        }
        stream.split(limits.max_chunk_ms)?
    } else if data.starts_with(b"RIFF") && data.get(8..12) == Some(b"WAVE") {
        let wav = Wav::parse(data)?;
        if wav.duration_ms() > limits.max_duration_ms {
            return Err(too_long(wav.duration_ms()));
        }
        wav.split(limits.max_chunk_ms)?
    } else if let Some((extension, mime)) = passthrough(mime) {
        if data.is_empty() {
            return Err(AudioError::Empty);
        }
        let duration_ms = declared_ms.unwrap_or(0);
        if duration_ms > limits.max_duration_ms {
            return Err(too_long(duration_ms));
        }
        if data.len() > limits.max_chunk_bytes {
            return Err(AudioError::Unsupported(format!("{mime} longer than one request allows (only Ogg Opus and WAV are split)")));
        }
        vec![Part { data: data.to_vec(), mime: mime.into(), extension, duration_ms }]
    } else {
        return Err(AudioError::Unsupported(format!("audio of type {mime:?}")));
    };
    // Parts cut by time may still be too large in bytes (a high bit rate): cut those again, shorter.
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        if part.data.len() <= limits.max_chunk_bytes {
            out.push(part);
            continue;
        }
        if part.duration_ms == 0 {
            return Err(AudioError::Unsupported(format!("a stretch of {} bytes that cannot be cut smaller", part.data.len())));
        }
        let ratio = part.data.len().div_ceil(limits.max_chunk_bytes.max(1)) as u64 + 1;
        let shorter = (part.duration_ms / ratio).max(1);
        let again = match part.extension {
            "ogg" => OpusStream::parse(&part.data)?.split(shorter)?,
            _ => Wav::parse(&part.data)?.split(shorter)?,
        };
        if let Some(big) = again.iter().find(|p| p.data.len() > limits.max_chunk_bytes) {
            return Err(AudioError::Unsupported(format!("a stretch of {} bytes that cannot be cut smaller", big.data.len())));
        }
        out.extend(again);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ogg::tests::stream;
    use crate::wav::tests::wav16;

    const LIMITS: Limits = Limits { max_chunk_ms: 4000, max_chunk_bytes: 1 << 20, max_duration_ms: 60_000 };

    #[test]
    fn formats_are_told_by_their_bytes() {
        let ogg = stream(10, 50, |_| 20);
        let parts = prepare(&ogg, "application/octet-stream", None, &LIMITS).unwrap();
        assert!(parts.len() >= 3 && parts.iter().all(|p| p.extension == "ogg" && p.mime == "audio/ogg"));
        let wav = wav16(8000, &vec![100; 8000 * 9]);
        let parts = prepare(&wav, "audio/ogg; codecs=opus", None, &LIMITS).unwrap();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.extension == "wav"));
        let mp3 = prepare(b"ID3\x04fake", "audio/mpeg", Some(3000), &LIMITS).unwrap();
        assert_eq!((mp3.len(), mp3[0].extension, mp3[0].duration_ms), (1, "mp3", 3000));
        assert!(matches!(prepare(b"%PDF-1.4", "application/pdf", None, &LIMITS), Err(AudioError::Unsupported(_))));
        assert!(matches!(prepare(b"", "audio/mpeg", None, &LIMITS), Err(AudioError::Empty)));
    }

    #[test]
    fn too_long_and_too_big() {
        let wav = wav16(8000, &vec![100; 8000 * 70]);
        assert!(matches!(prepare(&wav, "audio/wav", None, &LIMITS), Err(AudioError::TooLong { duration_ms: 70_000, .. })));
        assert!(matches!(prepare(b"ID3", "audio/mpeg", Some(61_000), &LIMITS), Err(AudioError::TooLong { .. })));
        let small = Limits { max_chunk_bytes: 4, ..LIMITS };
        assert!(matches!(prepare(b"ID3\x04fake", "audio/mpeg", None, &small), Err(AudioError::Unsupported(_))));
        // A WAV part over the byte limit is cut shorter.
        let limits = Limits { max_chunk_bytes: 20_000, ..LIMITS };
        let parts = prepare(&wav16(8000, &vec![100; 8000 * 4]), "audio/wav", None, &limits).unwrap();
        assert!(parts.len() >= 4 && parts.iter().all(|p| p.data.len() <= 20_000), "{:?}", parts.iter().map(|p| p.data.len()).collect::<Vec<_>>());
    }
}
