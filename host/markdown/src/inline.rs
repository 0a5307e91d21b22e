//! Splitting a run of message text (outside code) into plain text, `:shortcode:` emoji and `@user` mentions. Both
//! renderers and [`crate::mentions`] use this one scanner, so what is highlighted is exactly what is extracted.
//!
//! Linear: each `:` looks ahead at most [`MAX_SHORTCODE_LEN`] characters and each `@` at most one user name.

use crate::emoji::{MAX_SHORTCODE_LEN, is_shortcode_char};

/// A piece of text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    Text(&'a str),
    Emoji(&'static str),
    /// A mention, the user name without `@`.
    Mention(&'a str),
}

/// The characters of a user name (imfree_proto::validate_user_name).
fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

/// The mention starting at `text[at]` (an `@`), as the name and the byte length of `@name`.
fn mention_at(text: &str, at: usize) -> Option<(&str, usize)> {
    // `a@b`, `x.@b` are addresses or words, not mentions.
    if let Some(prev) = text[..at].chars().next_back()
        && (prev.is_alphanumeric() || matches!(prev, '.' | '_' | '-' | '@' | '+'))
    {
        return None;
    }
    let limits = imfree_proto::Limits::default();
    let rest = &text[at + 1..];
    let run = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
    if run > limits.max_name_len + 1 {
        return None;
    }
    // `@bobX`, `@bob日本` are not the user bob.
    if rest[run..].chars().next().is_some_and(char::is_alphanumeric) {
        return None;
    }
    // A trailing dot ends the sentence ("thanks @bob.").
    let name = rest[..run].trim_end_matches('.');
    imfree_proto::validate_user_name(name, &limits).ok()?;
    Some((name, 1 + name.len()))
}

/// The emoji of the shortcode starting at `text[at]` (a `:`), and the byte length of `:name:`.
fn emoji_at(text: &str, at: usize) -> Option<(&'static str, usize)> {
    let rest = &text[at + 1..];
    let run = rest.find(|c: char| !is_shortcode_char(c)).unwrap_or(rest.len());
    if run == 0 || run > MAX_SHORTCODE_LEN || !rest[run..].starts_with(':') {
        return None;
    }
    Some((crate::shortcode(&rest[..run])?, run + 2))
}

/// Call `f` with the segments of `text` in order. Adjacent plain text is passed as one segment.
pub(crate) fn segments<'a>(text: &'a str, mut f: impl FnMut(Segment<'a>)) {
    let mut plain_from = 0;
    let mut pos = 0;
    while let Some(found) = text[pos..].find([':', '@']) {
        let at = pos + found;
        let special = if text.as_bytes()[at] == b':' {
            emoji_at(text, at).map(|(emoji, len)| (Segment::Emoji(emoji), len))
        } else {
            mention_at(text, at).map(|(name, len)| (Segment::Mention(name), len))
        };
        match special {
            Some((segment, len)) => {
                if plain_from < at {
                    f(Segment::Text(&text[plain_from..at]));
                }
                f(segment);
                pos = at + len;
                plain_from = pos;
            }
            None => pos = at + 1,
        }
    }
    if plain_from < text.len() {
        f(Segment::Text(&text[plain_from..]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<Segment<'_>> {
        let mut out = Vec::new();
        segments(text, |s| out.push(s));
        out
    }

    #[test]
    fn shortcodes_become_emoji_and_unknown_ones_stay() {
        use Segment::*;
        assert_eq!(split(":tada:"), [Emoji("🎉")]);
        assert_eq!(split("a :+1: b :thumbsup:"), [Text("a "), Emoji("👍"), Text(" b "), Emoji("👍")]);
        assert_eq!(split(":nope: :tada"), [Text(":nope: :tada")]);
        assert_eq!(split("10:30:tada:"), [Text("10:30"), Emoji("🎉")]);
        assert_eq!(split("::"), [Text("::")]);
    }

    #[test]
    fn mentions_follow_the_user_name_syntax() {
        use Segment::*;
        assert_eq!(split("hi @bob."), [Text("hi "), Mention("bob"), Text(".")]);
        assert_eq!(split("@a.b_c-d!"), [Mention("a.b_c-d"), Text("!")]);
        assert_eq!(split("mail a@b.example"), [Text("mail a@b.example")]);
        assert_eq!(split("@Bob @bobX @_x @"), [Text("@Bob @bobX @_x @")]);
        assert_eq!(split("(@bob)"), [Text("("), Mention("bob"), Text(")")]);
        let long = format!("@{}", "a".repeat(65));
        assert_eq!(split(&long), [Text(&long)]);
    }
}
