//! WAV (RIFF WAVE): parse the `fmt ` and `data` chunks, and cut the samples at frame boundaries into standalone WAV
//! files, each with the original `fmt ` chunk and a `data` chunk of its own, cut in the quietest 20 ms the rule in
//! [`crate::split`] allows.

use crate::split::{Boundary, choose_cuts};
use crate::{AudioError, Part};

/// Loudness is measured in windows of 1/50 s (20 ms); cuts fall on window edges.
const WINDOWS_PER_SECOND: u64 = 50;

/// The highest sample rate accepted (studio recorders go to 384 kHz; more is a damaged header).
const MAX_RATE: u32 = 384_000;

const FORMAT_PCM: u16 = 1;
const FORMAT_FLOAT: u16 = 3;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

fn bad(why: impl Into<String>) -> AudioError {
    AudioError::Malformed(format!("WAV: {}", why.into()))
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A parsed WAV file.
#[derive(Debug)]
pub struct Wav<'a> {
    /// The `fmt ` chunk's body, copied into every part.
    fmt: &'a [u8],
    /// Sample frames per second.
    pub rate: u32,
    /// Channels.
    pub channels: u16,
    /// Bytes per frame (all channels).
    block_align: usize,
    bits: u16,
    float: bool,
    /// The samples (whole frames only).
    samples: &'a [u8],
}

impl<'a> Wav<'a> {
    /// Parse `data`: RIFF/WAVE with a `fmt ` chunk (PCM, IEEE float or extensible) before its `data` chunk. A
    /// `data` size of 0 or 0xFFFFFFFF (a recorder that streamed the file) means "to the end of the file"; a size
    /// past the end is cut to it; a trailing partial frame is ignored.
    pub fn parse(data: &'a [u8]) -> Result<Wav<'a>, AudioError> {
        if data.len() < 12 || &data[..4] != b"RIFF" || &data[8..12] != b"WAVE" {
            return Err(bad("not a RIFF WAVE file"));
        }
        let mut at = 12usize;
        let mut fmt: Option<&[u8]> = None;
        while at + 8 <= data.len() {
            let id = &data[at..at + 4];
            let size = le32(data, at + 4).ok_or_else(|| bad("truncated chunk header"))? as usize;
            let body_start = at + 8;
            if id == b"data" {
                let fmt = fmt.ok_or_else(|| bad("the data chunk comes before fmt"))?;
                let available = data.len() - body_start;
                let len = if size == 0 || size == u32::MAX as usize { available } else { size.min(available) };
                return Self::with_format(fmt, &data[body_start..body_start + len]);
            }
            // Checked: on wasm32 a chunk size near 4 GiB would wrap a plain sum.
            let body_end = body_start.checked_add(size).filter(|&e| e <= data.len()).ok_or_else(|| bad("truncated chunk"))?;
            if id == b"fmt " {
                fmt = Some(&data[body_start..body_end]);
            }
            at = body_end + (size & 1);
        }
        Err(bad("no data chunk"))
    }

    fn with_format(fmt: &'a [u8], samples: &'a [u8]) -> Result<Wav<'a>, AudioError> {
        let short = || bad("fmt chunk too short");
        let mut tag = le16(fmt, 0).ok_or_else(short)?;
        let channels = le16(fmt, 2).ok_or_else(short)?;
        let rate = le32(fmt, 4).ok_or_else(short)?;
        let block_align = le16(fmt, 12).ok_or_else(short)? as usize;
        let bits = le16(fmt, 14).ok_or_else(short)?;
        if tag == FORMAT_EXTENSIBLE {
            // The sub-format GUID's first two bytes are the format tag.
            tag = le16(fmt, 24).ok_or_else(|| bad("extensible fmt chunk too short"))?;
        }
        let float = match (tag, bits) {
            (FORMAT_PCM, 8 | 16 | 24 | 32) => false,
            (FORMAT_FLOAT, 32 | 64) => true,
            _ => return Err(AudioError::Unsupported(format!("WAV format {tag} with {bits}-bit samples (use PCM or float)"))),
        };
        if channels == 0 || !(1..=MAX_RATE).contains(&rate) || block_align != channels as usize * (bits as usize / 8) {
            return Err(bad(format!("inconsistent format: {channels} channel(s), {rate} Hz, {block_align} bytes per frame")));
        }
        let whole = samples.len() / block_align * block_align;
        Ok(Wav { fmt, rate, channels, block_align, bits, float, samples: &samples[..whole] })
    }

    /// Sample frames.
    pub fn frames(&self) -> u64 {
        (self.samples.len() / self.block_align) as u64
    }

    /// Playing time in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.frames() * 1000 / u64::from(self.rate)
    }

    /// The first channel of frame `i` as a magnitude on a 16-bit scale.
    fn magnitude(&self, i: usize) -> u64 {
        let at = i * self.block_align;
        let s = &self.samples[at..at + self.bits as usize / 8];
        let value: i64 = match (self.float, self.bits) {
            (false, 8) => (i64::from(s[0]) - 128) << 8,
            // Little-endian: the two most significant bytes are the last two.
            (false, _) => i64::from(i16::from_le_bytes([s[s.len() - 2], s[s.len() - 1]])),
            (true, 32) => (f32::from_le_bytes([s[0], s[1], s[2], s[3]]).clamp(-1.0, 1.0) * 32767.0) as i64,
            (true, _) => (f64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]).clamp(-1.0, 1.0) * 32767.0) as i64,
        };
        value.unsigned_abs()
    }

    /// Cut into standalone WAV files of at most `max_ms` each.
    pub fn split(&self, max_ms: u64) -> Result<Vec<Part>, AudioError> {
        let frames = self.frames();
        if frames == 0 {
            return Err(AudioError::Empty);
        }
        let max_frames = (max_ms.max(1).saturating_mul(u64::from(self.rate)) / 1000).max(1);
        let window = (u64::from(self.rate) / WINDOWS_PER_SECOND).max(1);
        let mut boundaries = Vec::new();
        if frames > max_frames {
            // Loudness of each window; a boundary between two windows is as loud as the two together.
            let energies: Vec<u64> = (0..frames.div_ceil(window))
                .map(|w| {
                    let from = w * window;
                    let to = (from + window).min(frames);
                    (from..to).map(|i| self.magnitude(i as usize)).sum()
                })
                .collect();
            for w in 1..energies.len() {
                let at = w as u64 * window;
                boundaries.push(Boundary { index: at as usize, at, loudness: energies[w - 1] + energies[w] });
            }
        }
        let cuts = choose_cuts(&boundaries, frames, max_frames);
        let mut edges = vec![0u64];
        edges.extend(cuts.iter().map(|c| c.at));
        edges.push(frames);
        Ok(edges.windows(2).map(|w| self.part(w[0], w[1])).collect())
    }

    fn part(&self, from: u64, to: u64) -> Part {
        let body = &self.samples[from as usize * self.block_align..to as usize * self.block_align];
        let fmt_padded = self.fmt.len() + (self.fmt.len() & 1);
        let riff_len = 4 + 8 + fmt_padded + 8 + body.len() + (body.len() & 1);
        let mut out = Vec::with_capacity(8 + riff_len);
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(riff_len as u32).to_le_bytes());
        out.extend_from_slice(b"WAVE");
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&(self.fmt.len() as u32).to_le_bytes());
        out.extend_from_slice(self.fmt);
        if self.fmt.len() & 1 == 1 {
            out.push(0);
        }
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        if body.len() & 1 == 1 {
            out.push(0);
        }
        Part { data: out, mime: "audio/wav".into(), extension: "wav", duration_ms: (to - from) * 1000 / u64::from(self.rate) }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 16-bit mono WAV at `rate` of `samples`.
    pub(crate) fn wav16(rate: u32, samples: &[i16]) -> Vec<u8> {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&FORMAT_PCM.to_le_bytes());
        fmt.extend_from_slice(&1u16.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * 2).to_le_bytes());
        fmt.extend_from_slice(&2u16.to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&((4 + 8 + 16 + 8 + data.len()) as u32).to_le_bytes());
        out.extend_from_slice(b"WAVE");
        out.extend_from_slice(b"LIST\x03\0\0\0abc\0"); // an odd-sized chunk to skip, with its pad byte
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&fmt);
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    /// `seconds` of a loud tone, with silence in `quiet` (seconds, half-open).
    fn speech_like(rate: u32, seconds: u32, quiet: &[(f64, f64)]) -> Vec<i16> {
        (0..rate * seconds)
            .map(|i| {
                let t = i as f64 / rate as f64;
                if quiet.iter().any(|&(a, b)| t >= a && t < b) { 0 } else if i % 20 < 10 { 8000 } else { -8000 }
            })
            .collect()
    }

    #[test]
    fn parses_and_measures() {
        let data = wav16(16_000, &vec![0; 16_000 * 3]);
        let w = Wav::parse(&data).unwrap();
        assert_eq!((w.rate, w.channels, w.frames(), w.duration_ms()), (16_000, 1, 48_000, 3000));
    }

    #[test]
    fn short_files_stay_whole() {
        let data = wav16(8000, &speech_like(8000, 2, &[]));
        let parts = Wav::parse(&data).unwrap().split(5000).unwrap();
        assert_eq!(parts.len(), 1);
        let again = Wav::parse(&parts[0].data).unwrap();
        assert_eq!(again.samples, Wav::parse(&data).unwrap().samples);
    }

    #[test]
    fn cuts_in_the_silences_and_keeps_every_sample() {
        let samples = speech_like(8000, 10, &[(3.2, 3.5), (6.6, 7.0)]);
        let data = wav16(8000, &samples);
        let parts = Wav::parse(&data).unwrap().split(4000).unwrap();
        assert_eq!(parts.len(), 3);
        let mut joined = Vec::new();
        for p in &parts {
            let w = Wav::parse(&p.data).unwrap();
            assert!(w.duration_ms() <= 4000);
            joined.extend_from_slice(w.samples);
        }
        assert_eq!(joined, data[data.len() - samples.len() * 2..]);
        let first = Wav::parse(&parts[0].data).unwrap();
        let cut = first.frames() as f64 / 8000.0;
        assert!((3.2..=3.5).contains(&cut), "first cut at {cut} s");
        let second = Wav::parse(&parts[1].data).unwrap();
        let cut = cut + second.frames() as f64 / 8000.0;
        assert!((6.6..=7.0).contains(&cut), "second cut at {cut} s");
    }

    #[test]
    fn streamed_sizes_and_other_sample_formats() {
        let mut data = wav16(8000, &[1000; 800]);
        let at = data.len() - 1600 - 4;
        data[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Wav::parse(&data).unwrap().frames(), 800);
        data.push(7); // a partial frame
        assert_eq!(Wav::parse(&data).unwrap().frames(), 800);
        // 8-bit unsigned stereo: magnitude of the first channel.
        let mut w = wav16(8000, &[]);
        let fmt_at = w.windows(4).position(|c| c == b"fmt ").unwrap() + 8;
        w[fmt_at + 2..fmt_at + 4].copy_from_slice(&2u16.to_le_bytes());
        w[fmt_at + 12..fmt_at + 14].copy_from_slice(&2u16.to_le_bytes());
        w[fmt_at + 14..fmt_at + 16].copy_from_slice(&8u16.to_le_bytes());
        w.extend_from_slice(&[255, 128, 128, 0]);
        let len = w.len();
        w[len - 8..len - 4].copy_from_slice(&4u32.to_le_bytes());
        let parsed = Wav::parse(&w).unwrap();
        assert_eq!((parsed.frames(), parsed.magnitude(0), parsed.magnitude(1)), (2, 127 << 8, 0));
    }

    #[test]
    fn refuses_bad_files() {
        assert!(matches!(Wav::parse(b"RIFF\0\0\0\0WAVE"), Err(AudioError::Malformed(_))));
        assert!(matches!(Wav::parse(b"OggS"), Err(AudioError::Malformed(_))));
        let mut data = wav16(8000, &[0; 10]);
        let fmt_at = data.windows(4).position(|c| c == b"fmt ").unwrap() + 8;
        data[fmt_at..fmt_at + 2].copy_from_slice(&2u16.to_le_bytes()); // ADPCM
        assert!(matches!(Wav::parse(&data), Err(AudioError::Unsupported(_))));
        let mut data = wav16(8000, &[0; 10]);
        data[fmt_at + 12..fmt_at + 14].copy_from_slice(&3u16.to_le_bytes());
        assert!(matches!(Wav::parse(&data), Err(AudioError::Malformed(_))));
        // A rate from a damaged header (found by the fuzzer: every part measured 0 ms, so none was cut smaller).
        let mut data = wav16(8000, &[0; 10]);
        data[fmt_at + 4..fmt_at + 8].copy_from_slice(&0x8000_1f40u32.to_le_bytes());
        assert!(matches!(Wav::parse(&data), Err(AudioError::Malformed(_))));
        let data = wav16(8000, &[]);
        assert!(matches!(Wav::parse(&data).unwrap().split(1000), Err(AudioError::Empty)));
    }
}
