//! Neutralising characters that a terminal (or a browser's bidi algorithm) would act on instead of showing.
//!
//! Every piece of message text that reaches either renderer passes through [`push_neutralised`]; nothing else in the
//! crate writes message text. The policy, and why (docs/formatting.md repeats it for users):
//!
//! - C0 controls (U+0000–U+001F) other than line feed, and DEL, are shown as their Unicode "control picture"
//!   (ESC as `␛`, BEL as `␇`, backspace as `␈`, a lone carriage return as `␍`): a reader sees that something odd was
//!   sent, and since ESC never reaches the terminal no CSI, OSC (title, OSC 8 links, OSC 52 clipboard) or DCS sequence
//!   can start. CR LF counts as one line feed. A tab becomes four spaces (a tab's width depends on the column).
//! - C1 controls (U+0080–U+009F, among them the 8-bit CSI U+009B and OSC U+009D that some terminals honour) become
//!   U+FFFD: they have no control picture and no place in text.
//! - Bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) are removed: they make text
//!   display in another order than it was written ("Trojan Source"), so a reader sees the logical order. The marks
//!   U+200E, U+200F and U+061C stay; they cannot reorder runs of text.

/// What [`push_neutralised`] does with one character.
enum Action {
    Keep,
    Replace(char),
    Tab,
    Drop,
}

fn action(c: char) -> Action {
    match c {
        '\n' => Action::Keep,
        '\t' => Action::Tab,
        // The control pictures block mirrors C0 one to one: U+2400 + code point.
        '\u{0}'..='\u{1f}' => Action::Replace(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}')),
        '\u{7f}' => Action::Replace('\u{2421}'),
        '\u{80}'..='\u{9f}' => Action::Replace('\u{fffd}'),
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => Action::Drop,
        _ => Action::Keep,
    }
}

/// Append `text` to `out` with every control character neutralised (see the module docs).
pub(crate) fn push_neutralised(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(pos) = rest.find(|c: char| !matches!(action(c), Action::Keep)) {
        out.push_str(&rest[..pos]);
        let c = rest[pos..].chars().next().unwrap_or('\u{fffd}');
        let mut next = pos + c.len_utf8();
        match action(c) {
            Action::Keep => out.push(c),
            Action::Tab => out.push_str("    "),
            Action::Drop => {}
            Action::Replace(_) if c == '\r' && rest[next..].starts_with('\n') => {
                out.push('\n');
                next += 1;
            }
            Action::Replace(r) => out.push(r),
        }
        rest = &rest[next..];
    }
    out.push_str(rest);
}

/// `text` with every control character neutralised (see [`sanitize_plain`]).
pub(crate) fn neutralised(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_neutralised(&mut out, text);
    out
}

/// A `text/plain` message made safe to print on a terminal, as is: line feeds stay, every other control character is
/// shown as a visible symbol (ESC as `␛`), C1 controls become U+FFFD and bidirectional overrides are removed, so the
/// text can neither move the cursor, set the window title, write the clipboard nor overwrite other lines.
///
/// ```
/// let shown = imfree_markdown::sanitize_plain("hi\x1b]52;c;cHduZWQ=\x07\rfake\u{202e}txt");
/// assert_eq!(shown, "hi␛]52;c;cHduZWQ=␇␍faketxt");
/// ```
pub fn sanitize_plain(text: &str) -> String {
    neutralised(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_is_visible_or_gone() {
        for c in (0u32..0x20).chain(0x7f..0xa0).chain(0x202a..0x202f).chain(0x2066..0x206a) {
            let c = char::from_u32(c).unwrap();
            let shown = sanitize_plain(&format!("a{c}b"));
            if c == '\n' {
                assert_eq!(shown, "a\nb");
                continue;
            }
            assert!(!shown.chars().any(|s| s == c), "{:?} survived: {shown:?}", c);
            assert!(!shown.chars().any(|s| s.is_control() && s != '\n'), "{shown:?}");
        }
    }

    #[test]
    fn crlf_is_one_line_feed_and_lone_cr_is_shown() {
        assert_eq!(sanitize_plain("a\r\nb\rc"), "a\nb␍c");
        assert_eq!(sanitize_plain("\r"), "␍");
        assert_eq!(sanitize_plain("a\tb"), "a    b");
    }

    #[test]
    fn ordinary_text_is_untouched() {
        let text = "héllo — 日本語 🎉 مرحبا \u{200f}";
        assert_eq!(sanitize_plain(text), text);
    }
}
