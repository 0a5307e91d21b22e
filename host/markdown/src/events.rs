//! The one Markdown event stream both renderers and [`crate::mentions`] consume: the input cut to
//! [`Options::max_input_bytes`], parsed by pulldown-cmark (tables only when no line is wider than
//! [`Options::max_table_columns`]), adjacent text merged (so `:shortcodes:` and `@names` are never split), and nesting
//! deeper than [`Options::max_nesting`] flattened.
//!
//! Flattening keeps the events well nested: a container's start and end are dropped together, its content stays.
//! The stack of open containers lives in a `Vec`, so even 100,000 levels cost memory, never recursion.

use pulldown_cmark::{Event, Parser, Tag, TextMergeStream};

use crate::Options;

/// An event for a renderer: a Markdown event, or a list item that was too deep to be a list item.
pub(crate) enum Ev<'a> {
    Md(Event<'a>),
    /// The start of a list item beyond [`Options::max_nesting`]: renderers start a new `•` line.
    FlatItem,
}

/// `src` cut at the last character boundary at or before `limit` bytes, and whether anything was cut.
pub(crate) fn cut(src: &str, limit: usize) -> (&str, bool) {
    if src.len() <= limit {
        return (src, false);
    }
    let mut end = limit;
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    (&src[..end], true)
}

/// Bytes as text, invalid UTF-8 replaced by U+FFFD. Only a little more than the input limit is decoded (enough for
/// the renderer to see that the message was longer and show the marker).
pub(crate) fn lossy_utf8(src: &[u8], options: &Options) -> String {
    let keep = src.len().min(options.max_input_bytes.saturating_add(4));
    String::from_utf8_lossy(&src[..keep]).into_owned()
}

/// Markdown features we parse: CommonMark plus strikethrough, task lists and (when affordable) tables.
///
/// GFM pads every table row to the header's width, and pulldown-cmark builds its whole tree before the first event,
/// so `|a|a|…` over a thousand one-character lines would allocate a million cells before any output limit applies.
/// Tables are parsed only when no line is wider than Options::max_table_columns and the widest line times the number
/// of lines (a bound on the cells) is no more than the input limit: never more cells than bytes we accept.
fn parser_options(src: &str, options: &Options) -> pulldown_cmark::Options {
    let mut md = pulldown_cmark::Options::ENABLE_STRIKETHROUGH | pulldown_cmark::Options::ENABLE_TASKLISTS;
    let (mut widest, mut lines) = (0, 0);
    for line in src.lines() {
        widest = widest.max(line.bytes().filter(|b| *b == b'|').count());
        lines += 1;
    }
    if widest <= options.max_table_columns && (widest + 1).saturating_mul(lines) <= options.max_input_bytes {
        md |= pulldown_cmark::Options::ENABLE_TABLES;
    }
    md
}

/// What an open container was, and whether its start was passed on.
#[derive(Clone, Copy)]
enum Frame {
    /// A block quote or list that was passed on (counts toward the block depth).
    Block,
    /// A list item passed on.
    Item,
    /// Emphasis, strong, strikethrough, a link or an image that was passed on (counts toward the inline depth).
    Inline,
    /// Any other container: always passed on.
    Other,
    /// Dropped: its end is dropped too.
    Dropped,
}

/// The flattened event stream of one message.
pub(crate) struct Events<'a> {
    inner: TextMergeStream<'a, Parser<'a>>,
    stack: Vec<Frame>,
    block_depth: usize,
    inline_depth: usize,
    max_nesting: usize,
}

impl<'a> Events<'a> {
    /// Parse `src`, which the caller has already cut to the input limit.
    pub(crate) fn new(src: &'a str, options: &Options) -> Self {
        let parser = Parser::new_ext(src, parser_options(src, options));
        Self {
            inner: TextMergeStream::new(parser),
            stack: Vec::new(),
            block_depth: 0,
            inline_depth: 0,
            max_nesting: options.max_nesting,
        }
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = Ev<'a>;

    fn next(&mut self) -> Option<Ev<'a>> {
        loop {
            let event = self.inner.next()?;
            match &event {
                Event::Start(tag) => {
                    let frame = match tag {
                        Tag::BlockQuote(_) | Tag::List(_) if self.block_depth < self.max_nesting => {
                            self.block_depth += 1;
                            Frame::Block
                        }
                        Tag::BlockQuote(_) | Tag::List(_) => Frame::Dropped,
                        Tag::Item if matches!(self.stack.last(), Some(Frame::Block)) => Frame::Item,
                        Tag::Item => {
                            self.stack.push(Frame::Dropped);
                            return Some(Ev::FlatItem);
                        }
                        Tag::Emphasis | Tag::Strong | Tag::Strikethrough | Tag::Link { .. } | Tag::Image { .. }
                            if self.inline_depth < self.max_nesting =>
                        {
                            self.inline_depth += 1;
                            Frame::Inline
                        }
                        Tag::Emphasis | Tag::Strong | Tag::Strikethrough | Tag::Link { .. } | Tag::Image { .. } => {
                            Frame::Dropped
                        }
                        _ => Frame::Other,
                    };
                    self.stack.push(frame);
                    if matches!(frame, Frame::Dropped) {
                        continue;
                    }
                }
                Event::End(_) => match self.stack.pop() {
                    Some(Frame::Dropped) => continue,
                    Some(Frame::Block) => self.block_depth -= 1,
                    Some(Frame::Inline) => self.inline_depth -= 1,
                    Some(Frame::Item | Frame::Other) | None => {}
                },
                _ => {}
            }
            return Some(Ev::Md(event));
        }
    }
}

/// Is `url` one a message may link to: http, https or mailto, compared as a browser would read it (ASCII tab and
/// newline removed, leading C0 controls and spaces ignored, any case)? Everything else — `javascript:`, `data:`,
/// `vbscript:`, `file:`, relative references — is shown as text, never as a link.
pub(crate) fn is_safe_url(url: &str) -> bool {
    let trimmed = url.trim_start_matches(|c: char| c <= ' ');
    let mut scheme = String::with_capacity(8);
    for c in trimmed.chars() {
        match c {
            '\t' | '\n' | '\r' => continue,
            ':' => break,
            _ if scheme.len() >= 8 => return false,
            _ => scheme.push(c.to_ascii_lowercase()),
        }
    }
    let rest_has_colon = trimmed.contains(':');
    rest_has_colon && matches!(scheme.as_str(), "http" | "https" | "mailto")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_https_mailto_are_safe() {
        for ok in ["http://a.example", "HTTPS://a.example/x?y#z", "mailto:a@b.example", " https://x", "ht\ntp://x"] {
            assert!(is_safe_url(ok), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "java\nscript:alert(1)",
            "java\tscript:alert(1)",
            "\u{1}javascript:alert(1)",
            "data:text/html,<script>",
            "vbscript:msgbox",
            "file:///etc/passwd",
            "/relative",
            "relative.html",
            "//host.example/x",
            "javascript&#58;alert(1)",
            "https",
            "",
        ] {
            assert!(!is_safe_url(bad), "{bad:?}");
        }
    }

    #[test]
    fn tables_only_when_their_cells_are_bounded_by_the_input_limit() {
        let tables = |src: &str| parser_options(src, &Options::default()).contains(pulldown_cmark::Options::ENABLE_TABLES);
        assert!(tables("| a | b |\n|---|---|\n| 1 | 2 |"));
        // 30 columns over 3,000 lines: 90,000 padded cells from 6 KiB of input.
        assert!(!tables(&format!("{}\n{}\n{}", "|a".repeat(30), "|-".repeat(30), "a\n".repeat(3000))));
        assert!(!tables(&format!("{}\n{}", "|a".repeat(40), "|-".repeat(40))));
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("héllo", 2), ("h", true));
        assert_eq!(cut("héllo", 3), ("hé", true));
        assert_eq!(cut("héllo", 100), ("héllo", false));
    }
}
