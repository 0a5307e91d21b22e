#![no_main]
//! What the speech server answers (a server on the network; a proxy in between): the transcript parser and the
//! judgement of status and Retry-After. None may panic; a transcript has no leading, trailing or doubled spaces.
use libfuzzer_sys::fuzz_target;
use transcription::request::{Outcome, judge, parse_transcript};

fuzz_target!(|data: &[u8]| {
    if let Some(text) = parse_transcript(data) {
        assert_eq!(text, text.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    let status = data.first().map_or(200, |b| 100 + u16::from(*b) * 2);
    let retry_after = std::str::from_utf8(data.get(1..8).unwrap_or_default()).ok();
    if let Outcome::Retry { after_ms: Some(ms), .. } = judge(status, retry_after, data) {
        assert_eq!(ms % 1000, 0);
    }
});
