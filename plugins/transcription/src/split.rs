//! Where to cut long audio: the one rule both splitters (WAV frames, Ogg pages) follow. A recogniser given half a
//! word gets it wrong on both sides of the cut, so each cut goes to the quietest place the format allows in the
//! second half of the stretch (between half the limit and the limit); only when there is no place in that window
//! does it fall back to the latest one before the limit, or the first one after it.

/// A place the audio may be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boundary {
    /// What the format cuts at (a page index, a frame index).
    pub index: usize,
    /// Where it is, in the format's time unit (samples), from the start of the stream.
    pub at: u64,
    /// How loud the audio is around it (smaller is quieter; any unit, compared only with other boundaries).
    pub loudness: u64,
}

/// The cuts for audio of length `end` with `boundaries` (ascending by `at`), so that every part is at most `max`
/// long where the boundaries allow it.
pub fn choose_cuts(boundaries: &[Boundary], end: u64, max: u64) -> Vec<Boundary> {
    let max = max.max(1);
    let mut cuts = Vec::new();
    let mut start = 0u64;
    let mut from = 0usize;
    while end.saturating_sub(start) > max {
        // Boundaries after the current start, up to the limit.
        let ahead = &boundaries[from..];
        let skip = ahead.iter().take_while(|b| b.at <= start).count();
        let ahead = &ahead[skip..];
        let within = ahead.iter().take_while(|b| b.at - start <= max).count();
        let window = &ahead[..within];
        let preferred = window.iter().filter(|b| b.at - start >= max / 2);
        let chosen = preferred
            .min_by(|a, b| a.loudness.cmp(&b.loudness).then(b.at.cmp(&a.at)))
            .or_else(|| window.last())
            .or_else(|| ahead.first());
        let Some(&cut) = chosen else { break };
        cuts.push(cut);
        start = cut.at;
        from += skip + ahead.iter().position(|b| b.index == cut.index).map_or(0, |p| p + 1);
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(step: u64, n: usize, loud: impl Fn(usize) -> u64) -> Vec<Boundary> {
        (1..=n).map(|i| Boundary { index: i, at: step * i as u64, loudness: loud(i) }).collect()
    }

    #[test]
    fn short_audio_is_not_cut() {
        assert!(choose_cuts(&every(10, 9, |_| 1), 100, 100).is_empty());
        assert!(choose_cuts(&[], 1000, 100).is_empty());
    }

    #[test]
    fn cuts_at_the_quietest_place_in_the_second_half() {
        // Quiet at 30 (outside the window 50..=100) and at 70 (inside).
        let b = every(10, 19, |i| match i {
            3 => 0,
            7 => 1,
            _ => 9,
        });
        let cuts = choose_cuts(&b, 200, 100);
        assert_eq!(cuts[0].at, 70);
        assert!(cuts.windows(2).all(|w| w[1].at - w[0].at <= 100));
        assert!(200 - cuts.last().unwrap().at <= 100);
    }

    #[test]
    fn uniform_loudness_makes_long_parts() {
        let cuts = choose_cuts(&every(10, 29, |_| 5), 300, 100);
        assert_eq!(cuts.iter().map(|c| c.at).collect::<Vec<_>>(), vec![100, 200]);
    }

    #[test]
    fn sparse_boundaries_fall_back() {
        // Nothing in 50..=100 after 0: the latest before the limit (40); then nothing within 100 of 40: the first
        // after it (400).
        let b = [
            Boundary { index: 1, at: 40, loudness: 0 },
            Boundary { index: 2, at: 400, loudness: 0 },
            Boundary { index: 3, at: 450, loudness: 0 },
        ];
        let cuts: Vec<u64> = choose_cuts(&b, 500, 100).iter().map(|c| c.at).collect();
        assert_eq!(cuts, vec![40, 400]);
    }
}
