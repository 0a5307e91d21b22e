#![no_main]
//! A voice message's bytes (anything a member sends) through the splitters: Ogg Opus pages and WAV chunks, with
//! limits taken from the input so that short and long parts are both tried. None may panic; every part must be
//! within the byte limit and parse again, an Ogg part as one stream that needs no further cut, and the WAV parts
//! together must hold exactly the original's frames.
use libfuzzer_sys::fuzz_target;
use transcription::audio::{Limits, prepare};
use transcription::ogg::OpusStream;
use transcription::wav::Wav;

fuzz_target!(|data: &[u8]| {
    let Some((&knob, audio)) = data.split_first() else { return };
    let limits = Limits { max_chunk_ms: 20 + u64::from(knob) * 40, max_chunk_bytes: 4096 + usize::from(knob) * 64, max_duration_ms: 3_600_000 };
    let mime = if knob & 1 == 0 { "audio/ogg; codecs=opus" } else { "audio/mpeg" };
    let Ok(parts) = prepare(audio, mime, Some(1000), &limits) else { return };
    let opus = audio.starts_with(b"OggS") && audio.get(28..36) == Some(b"OpusHead");
    let wav = audio.starts_with(b"RIFF") && audio.get(8..12) == Some(b"WAVE");
    let mut frames = 0;
    for part in &parts {
        assert!(part.data.len() <= limits.max_chunk_bytes, "{} bytes", part.data.len());
        if opus {
            let again = OpusStream::parse(&part.data).expect("an Ogg part parses again");
            assert_eq!(again.split(u64::MAX / 1000).map(|p| p.len()).ok(), Some(1));
        }
        if wav {
            frames += Wav::parse(&part.data).expect("a WAV part parses again").frames();
        }
    }
    if wav {
        assert_eq!(frames, Wav::parse(audio).map(|w| w.frames()).unwrap_or(0));
    }
});
