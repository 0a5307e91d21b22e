//! imfree-markdown from outside: injection attempts, pathological nesting and sizes, malformed input, terminal
//! escape injection, emoji and mentions, and the fuzz corpora replayed. Every rendered output in these tests also
//! passes the crate's own output checks (`imfree_markdown::verify`).

mod corpus;
mod emoji_mentions;
mod injection;
mod limits;
mod terminal;

use imfree_markdown::{Options, TerminalOptions, render_html, render_terminal, verify};

/// render_html, with the output checked against the allowlist; returns the HTML and its nesting depth.
pub(crate) fn html(src: &str) -> String {
    html_with(src, &Options::default()).0
}

pub(crate) fn html_with(src: &str, options: &Options) -> (String, usize) {
    let out = render_html(src, options);
    let depth = verify::check_html(&out).unwrap_or_else(|e| panic!("{e}\nin {out:?}\nfrom {src:?}"));
    (out, depth)
}

/// render_terminal in both modes, each output checked; returns (plain, coloured).
pub(crate) fn term(src: &str, width: usize) -> (String, String) {
    let run = |color| {
        let out = render_terminal(src, &TerminalOptions { width, color, ..Default::default() });
        verify::check_terminal(&out, color).unwrap_or_else(|e| panic!("{e}\nin {out:?}\nfrom {src:?}"));
        out
    };
    (run(false), run(true))
}

/// `text` without SGR sequences (the only escapes the terminal renderer writes).
pub(crate) fn strip_sgr(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(esc) = rest.find('\x1b') {
        out.push_str(&rest[..esc]);
        rest = rest[esc..].find('m').map_or("", |m| &rest[esc + m + 1..]);
    }
    out.push_str(rest);
    out
}
