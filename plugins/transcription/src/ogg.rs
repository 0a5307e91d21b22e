//! Ogg Opus (RFC 3533 pages, RFC 7845 mapping): parse a voice message's pages, and cut it at page boundaries into
//! standalone Ogg Opus streams that a standard decoder (opusdec, libopusfile, ffmpeg) accepts on their own.
//!
//! Each part repeats the stream's header pages (OpusHead, then OpusTags) unchanged, then carries whole audio pages
//! with their sequence numbers renumbered, their granule positions shifted so that the part starts at zero (the
//! samples of the pages before it are subtracted), the end-of-stream flag on its last page, and fresh CRCs. A cut is
//! only made after a page whose last packet ends on it, so no packet is split across two parts. The stream's
//! pre-skip is kept: a decoder drops that many samples (6.5 ms at the usual 312) at the start of every part, which
//! also hides the decoder's warm-up after a cut.

use crate::split::{Boundary, choose_cuts};
use crate::{AudioError, Part};

/// Opus granule positions count 48 kHz samples whatever the input rate.
pub const OPUS_RATE: u64 = 48_000;

const CAPTURE: &[u8; 4] = b"OggS";
const FLAG_CONTINUED: u8 = 0x01;
const FLAG_BOS: u8 = 0x02;
const FLAG_EOS: u8 = 0x04;
const HEADER_LEN: usize = 27;
/// Packets on each side of a cut whose sizes measure how loud the audio is there (Opus VBR spends a few bytes on
/// a 20 ms frame of silence and tens to hundreds on speech).
const LOUDNESS_PACKETS: usize = 3;

/// One page as found in the stream.
#[derive(Debug, Clone)]
struct Page<'a> {
    /// The whole page (header, lacing values and data).
    raw: &'a [u8],
    header_type: u8,
    granule: i64,
    serial: u32,
    /// Sizes of the packets that end on this page (the first may have begun on an earlier one).
    completed: Vec<usize>,
    /// Whether the page's last packet goes on to the next page.
    open_packet: bool,
}

/// The CRC of Ogg pages: CRC-32 with polynomial 0x04c11db7, not reflected, initial value and final xor 0.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, entry) in t.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 { (r << 1) ^ 0x04c1_1db7 } else { r << 1 };
            }
            *entry = r;
        }
        t
    });
    data.iter().fold(0u32, |crc, &b| (crc << 8) ^ table[((crc >> 24) as u8 ^ b) as usize])
}

fn bad(why: impl Into<String>) -> AudioError {
    AudioError::Malformed(format!("Ogg: {}", why.into()))
}

/// Split `data` into pages, checking each page's CRC.
fn pages(data: &[u8]) -> Result<Vec<Page<'_>>, AudioError> {
    let mut pages = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < HEADER_LEN || &rest[..4] != CAPTURE {
            return Err(bad(format!("no page at byte {at}")));
        }
        if rest[4] != 0 {
            return Err(bad(format!("unknown page version {}", rest[4])));
        }
        let segments = rest[26] as usize;
        let lacing = rest.get(HEADER_LEN..HEADER_LEN + segments).ok_or_else(|| bad("truncated page header"))?;
        let body_len: usize = lacing.iter().map(|&l| l as usize).sum();
        let len = HEADER_LEN + segments + body_len;
        let raw = rest.get(..len).ok_or_else(|| bad("truncated page"))?;
        let stored = u32::from_le_bytes([raw[22], raw[23], raw[24], raw[25]]);
        let mut zeroed = raw.to_vec();
        zeroed[22..26].fill(0);
        if crc32(&zeroed) != stored {
            return Err(bad(format!("checksum mismatch in the page at byte {at}")));
        }
        let mut completed = Vec::new();
        let mut current = 0usize;
        for &l in lacing {
            current += l as usize;
            if l < 255 {
                completed.push(current);
                current = 0;
            }
        }
        let open_packet = lacing.last().is_some_and(|&l| l == 255);
        pages.push(Page {
            raw,
            header_type: raw[5],
            granule: i64::from_le_bytes(raw[6..14].try_into().map_err(|_| bad("truncated page header"))?),
            serial: u32::from_le_bytes(raw[14..18].try_into().map_err(|_| bad("truncated page header"))?),
            completed,
            open_packet,
        });
        at += len;
    }
    Ok(pages)
}

/// What the OpusHead packet says that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusHead {
    /// Channels.
    pub channels: u8,
    /// Samples (at 48 kHz) the decoder drops at the start.
    pub pre_skip: u16,
}

fn parse_head(page: &Page<'_>) -> Result<OpusHead, AudioError> {
    let body = &page.raw[HEADER_LEN + page.raw[26] as usize..];
    if page.header_type & FLAG_BOS == 0 || page.completed.len() != 1 || page.open_packet {
        return Err(bad("the first page must begin the stream and hold only the OpusHead packet"));
    }
    if body.len() < 19 || &body[..8] != b"OpusHead" {
        return Err(AudioError::Unsupported("an Ogg stream that is not Opus".into()));
    }
    if body[8] >> 4 != 0 {
        return Err(bad(format!("unsupported OpusHead version {}", body[8])));
    }
    Ok(OpusHead { channels: body[9], pre_skip: u16::from_le_bytes([body[10], body[11]]) })
}

/// A parsed Ogg Opus stream.
#[derive(Debug)]
pub struct OpusStream<'a> {
    /// Its OpusHead.
    pub head: OpusHead,
    pages: Vec<Page<'a>>,
    /// Pages `0..audio_start` carry the two header packets.
    audio_start: usize,
}

impl<'a> OpusStream<'a> {
    /// Parse and check an Ogg Opus stream: one logical stream (not chained or multiplexed), OpusHead alone on the
    /// first page, OpusTags ending its last page, granule positions that never go backwards.
    pub fn parse(data: &'a [u8]) -> Result<OpusStream<'a>, AudioError> {
        let pages = pages(data)?;
        let first = pages.first().ok_or_else(|| bad("empty stream"))?;
        let head = parse_head(first)?;
        let serial = first.serial;
        if pages.iter().any(|p| p.serial != serial) {
            return Err(AudioError::Unsupported("Ogg with several logical streams (chained or multiplexed)".into()));
        }
        // OpusTags: the second packet, on one or more pages; audio starts on the page after the one it ends on.
        let mut audio_start = None;
        for (i, p) in pages.iter().enumerate().skip(1) {
            if !p.completed.is_empty() {
                if p.completed.len() != 1 || p.open_packet {
                    return Err(bad("audio data on the OpusTags page"));
                }
                audio_start = Some(i + 1);
                break;
            }
        }
        let audio_start = audio_start.ok_or_else(|| bad("no OpusTags header"))?;
        let tags_page = &pages[1];
        let tags_body = &tags_page.raw[HEADER_LEN + tags_page.raw[26] as usize..];
        if !tags_body.starts_with(b"OpusTags") {
            return Err(bad("the second header is not OpusTags"));
        }
        let mut last = 0i64;
        for (i, p) in pages.iter().enumerate().skip(audio_start) {
            if i + 1 < pages.len() && p.header_type & FLAG_EOS != 0 {
                return Err(AudioError::Unsupported("Ogg with data after the end of its stream (chained)".into()));
            }
            if p.granule == -1 {
                continue;
            }
            if p.granule < last {
                return Err(bad("granule positions go backwards"));
            }
            last = p.granule;
        }
        if pages.len() > audio_start && pages.last().is_some_and(|p| p.open_packet) {
            return Err(bad("the last packet is cut off"));
        }
        Ok(OpusStream { head, pages, audio_start })
    }

    /// The last granule position (48 kHz samples, pre-skip included).
    fn end_granule(&self) -> u64 {
        self.pages[self.audio_start..].iter().rev().find(|p| p.granule >= 0).map_or(0, |p| p.granule as u64)
    }

    /// Playing time in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.end_granule().saturating_sub(u64::from(self.head.pre_skip)) * 1000 / OPUS_RATE
    }

    /// Cut into standalone streams of at most `max_ms` each where the pages allow (a single page longer than that
    /// stays whole), preferring the quietest page boundary in the second half of each stretch.
    pub fn split(&self, max_ms: u64) -> Result<Vec<Part>, AudioError> {
        let audio = &self.pages[self.audio_start..];
        if audio.is_empty() {
            return Err(AudioError::Empty);
        }
        let max_samples = max_ms.max(1).saturating_mul(OPUS_RATE) / 1000;
        // A boundary after page i: allowed where the page ends its last packet and has a granule position.
        let mut boundaries = Vec::new();
        for (i, p) in audio.iter().enumerate().take(audio.len() - 1) {
            if p.open_packet || p.granule < 0 {
                continue;
            }
            let before: usize = p.completed.iter().rev().take(LOUDNESS_PACKETS).sum();
            let after: usize = audio[i + 1].completed.iter().take(LOUDNESS_PACKETS).sum();
            boundaries.push(Boundary { index: i + 1, at: p.granule as u64, loudness: (before + after) as u64 });
        }
        let cuts = choose_cuts(&boundaries, self.end_granule(), max_samples);
        let mut starts = vec![0usize];
        starts.extend(cuts.iter().map(|&b| b.index));
        let headers: Vec<u8> = self.pages[..self.audio_start].iter().flat_map(|p| p.raw.iter().copied()).collect();
        let mut parts = Vec::with_capacity(starts.len());
        for (n, &start) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(audio.len());
            let base = if start == 0 { 0 } else { audio[start - 1].granule as u64 };
            let mut out = headers.clone();
            for (k, page) in audio[start..end].iter().enumerate() {
                let mut raw = page.raw.to_vec();
                let mut flags = page.header_type & FLAG_CONTINUED;
                if start + k + 1 == end {
                    flags |= FLAG_EOS;
                }
                raw[5] = flags;
                if page.granule >= 0 {
                    raw[6..14].copy_from_slice(&((page.granule as u64 - base) as i64).to_le_bytes());
                }
                let sequence = (self.audio_start + k) as u32;
                raw[18..22].copy_from_slice(&sequence.to_le_bytes());
                raw[22..26].fill(0);
                let crc = crc32(&raw);
                raw[22..26].copy_from_slice(&crc.to_le_bytes());
                out.extend_from_slice(&raw);
            }
            let last = audio[start..end].iter().rev().find(|p| p.granule >= 0).map_or(base, |p| p.granule as u64);
            let pre_skip = if start == 0 { u64::from(self.head.pre_skip) } else { 0 };
            let duration_ms = (last - base).saturating_sub(pre_skip) * 1000 / OPUS_RATE;
            parts.push(Part { data: out, mime: "audio/ogg".into(), extension: "ogg", duration_ms });
        }
        Ok(parts)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One Ogg page around `packets` (each ending on this page unless `open` and last).
    pub(crate) fn page(flags: u8, granule: i64, seq: u32, packets: &[Vec<u8>], open: bool) -> Vec<u8> {
        let mut lacing = Vec::new();
        let mut body = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let mut left = p.len();
            loop {
                let l = left.min(255);
                lacing.push(l as u8);
                left -= l;
                if l < 255 {
                    break;
                }
                if left == 0 {
                    if !(open && i + 1 == packets.len()) {
                        lacing.push(0);
                    }
                    break;
                }
            }
            body.extend_from_slice(p);
        }
        let mut raw = b"OggS".to_vec();
        raw.push(0);
        raw.push(flags);
        raw.extend_from_slice(&granule.to_le_bytes());
        raw.extend_from_slice(&7u32.to_le_bytes());
        raw.extend_from_slice(&seq.to_le_bytes());
        raw.extend_from_slice(&[0; 4]);
        raw.push(lacing.len() as u8);
        raw.extend_from_slice(&lacing);
        raw.extend_from_slice(&body);
        let crc = crc32(&raw);
        raw[22..26].copy_from_slice(&crc.to_le_bytes());
        raw
    }

    pub(crate) fn opus_head() -> Vec<u8> {
        let mut h = b"OpusHead".to_vec();
        h.extend_from_slice(&[1, 1]);
        h.extend_from_slice(&312u16.to_le_bytes());
        h.extend_from_slice(&16_000u32.to_le_bytes());
        h.extend_from_slice(&[0, 0, 0]);
        h
    }

    /// A synthetic stream: pages of `frames` 20 ms packets each (960 samples), sized by `loud(page)`.
    pub(crate) fn stream(pages: usize, frames: usize, loud: impl Fn(usize) -> usize) -> Vec<u8> {
        let mut out = page(FLAG_BOS, 0, 0, &[opus_head()], false);
        out.extend(page(0, 0, 1, &[b"OpusTags\0\0\0\0\0\0\0\0".to_vec()], false));
        let mut granule = 0i64;
        for i in 0..pages {
            let packets: Vec<Vec<u8>> = (0..frames).map(|_| vec![0x08; loud(i)]).collect();
            granule += 960 * frames as i64;
            let flags = if i + 1 == pages { FLAG_EOS } else { 0 };
            out.extend(page(flags, granule, 2 + i as u32, &packets, false));
        }
        out
    }

    #[test]
    fn crc_matches_the_ogg_reference() {
        // Polynomial 0x04c11db7, not reflected, initial value 0, no final xor: CRC-32/POSIX (cksum) without its
        // final inversion, whose check value over "123456789" is 0x765e7680.
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn parses_and_measures() {
        let data = stream(10, 50, |_| 40);
        let s = OpusStream::parse(&data).unwrap();
        assert_eq!(s.head, OpusHead { channels: 1, pre_skip: 312 });
        assert_eq!(s.duration_ms(), (10 * 50 * 960 - 312) * 1000 / 48_000);
    }

    #[test]
    fn short_streams_stay_whole_and_unchanged_but_for_flags() {
        let data = stream(3, 50, |_| 40);
        let parts = OpusStream::parse(&data).unwrap().split(10_000).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].data, data);
    }

    #[test]
    fn splits_at_the_quietest_boundary_into_valid_streams() {
        // 1 s pages; page 5 is silence: with 8 s parts the cut goes after page 5 or 6 (both boundaries touch it).
        let data = stream(14, 50, |i| if i == 5 { 3 } else { 60 });
        let s = OpusStream::parse(&data).unwrap();
        let parts = s.split(8_000).unwrap();
        assert_eq!(parts.len(), 2);
        let mut total = 0;
        for (n, part) in parts.iter().enumerate() {
            let p = OpusStream::parse(&part.data).unwrap_or_else(|e| panic!("part {n}: {e}"));
            let audio = &p.pages[p.audio_start..];
            // Starts at zero: the first page's granule is its own samples.
            assert_eq!(audio[0].granule, 50 * 960);
            assert!(audio.last().unwrap().header_type & FLAG_EOS != 0);
            assert!(audio[..audio.len() - 1].iter().all(|p| p.header_type & FLAG_EOS == 0));
            let seqs: Vec<u32> = pages(&part.data).unwrap().iter().map(|p| u32::from_le_bytes(p.raw[18..22].try_into().unwrap())).collect();
            assert_eq!(seqs, (0..seqs.len() as u32).collect::<Vec<_>>());
            total += audio.len();
            assert!(part.duration_ms <= 8_000);
        }
        assert_eq!(total, 14);
        let first = OpusStream::parse(&parts[0].data).unwrap();
        assert!(matches!(first.pages.len() - first.audio_start, 5 | 6), "cut next to the silent page");
    }

    #[test]
    fn a_real_opusenc_stream_splits_into_streams_that_start_at_zero() {
        // "Hello world." spoken by flite and encoded by opusenc 0.2 (the fuzz seed, after its one-byte knob).
        let data = &include_bytes!("../fuzz/corpus/audio/hello-world.ogg")[1..];
        let s = OpusStream::parse(data).unwrap();
        assert_eq!(s.head.pre_skip, 312);
        assert!((1000..2000).contains(&s.duration_ms()), "{} ms", s.duration_ms());
        let audio_pages = s.pages.len() - s.audio_start;
        let parts = s.split(100).unwrap();
        assert_eq!(parts.len(), audio_pages, "one page per part at a limit shorter than a page");
        let mut ms = 0;
        for part in &parts {
            let p = OpusStream::parse(&part.data).unwrap();
            assert_eq!(p.pages[..p.audio_start].iter().map(|p| p.raw).collect::<Vec<_>>(), s.pages[..s.audio_start].iter().map(|p| p.raw).collect::<Vec<_>>(), "headers repeated");
            let first = &p.pages[p.audio_start];
            let samples: u64 = first.completed.len() as u64 * 960;
            assert!(first.granule as u64 <= samples, "starts at zero: granule {} for {samples} samples", first.granule);
            ms += part.duration_ms;
        }
        assert!(ms.abs_diff(s.duration_ms()) <= 10 * parts.len() as u64, "{ms} vs {}", s.duration_ms());
    }

    #[test]
    fn long_pages_still_split() {
        let data = stream(6, 250, |_| 50); // 5 s pages, 2 s limit: one page per part
        let parts = OpusStream::parse(&data).unwrap().split(2_000).unwrap();
        assert_eq!(parts.len(), 6);
    }

    #[test]
    fn refuses_what_is_not_ogg_opus() {
        let mut data = stream(2, 5, |_| 10);
        assert!(matches!(OpusStream::parse(b"RIFF...."), Err(AudioError::Malformed(_))));
        assert!(matches!(OpusStream::parse(&data[..data.len() - 3]), Err(AudioError::Malformed(_))));
        let last = data.len() - 1;
        data[last] ^= 1;
        assert!(matches!(OpusStream::parse(&data), Err(AudioError::Malformed(_))), "bad CRC");
        let vorbis = page(FLAG_BOS, 0, 0, &[b"\x01vorbis\0\0\0\0\x01\x44\xac\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec()], false);
        assert!(matches!(OpusStream::parse(&vorbis), Err(AudioError::Unsupported(_))));
        // Granules going backwards.
        let mut out = page(FLAG_BOS, 0, 0, &[opus_head()], false);
        out.extend(page(0, 0, 1, &[b"OpusTags".to_vec()], false));
        out.extend(page(0, 9600, 2, &[vec![1; 10]], false));
        out.extend(page(FLAG_EOS, 960, 3, &[vec![1; 10]], false));
        assert!(matches!(OpusStream::parse(&out), Err(AudioError::Malformed(_))));
    }

    #[test]
    fn packets_spanning_pages_are_never_cut() {
        let mut out = page(FLAG_BOS, 0, 0, &[opus_head()], false);
        out.extend(page(0, 0, 1, &[b"OpusTags".to_vec()], false));
        // Page 2 ends in the middle of a 300-byte packet: no cut may follow it.
        out.extend(page(0, 48_000, 2, &[vec![1; 20], vec![2; 255]], true));
        out.extend(page(FLAG_CONTINUED, 96_000, 3, &[vec![2; 45]], false));
        out.extend(page(FLAG_EOS, 144_000, 4, &[vec![3; 20]], false));
        let parts = OpusStream::parse(&out).unwrap().split(500).unwrap();
        assert_eq!(parts.len(), 2);
        let first = OpusStream::parse(&parts[0].data).unwrap();
        assert_eq!(first.pages.len() - first.audio_start, 2);
    }
}
