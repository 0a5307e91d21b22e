//! How the CLI shows a message body to a person (`recv` without `--json`, `history`): `text/markdown` rendered for
//! the terminal, everything else from a message neutralised, so that no message can move the cursor, set the title,
//! write the clipboard or fake other lines (imfree_markdown, docs/formatting.md). Owns nothing else: `--json` output
//! stays raw (machine output; its consumers sanitise, see docs/formatting.md).

use std::io::IsTerminal;

use imfree_markdown::{TerminalOptions, render_terminal_bytes, sanitize_plain};

/// Style output only on a terminal, and not when NO_COLOR is set to anything (https://no-color.org).
fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// Wrap at $COLUMNS when the shell exports it; otherwise leave wrapping to the terminal.
fn width() -> usize {
    std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse().ok()).unwrap_or(0)
}

/// A `text/*` body as shown: Markdown rendered (no trailing newline, the caller ends the line), other text neutralised.
pub(crate) fn text_body(mime: &str, body: &[u8]) -> String {
    let essence = mime.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case(imfree_proto::mime::MARKDOWN) {
        let options = TerminalOptions { width: width(), color: color(), ..Default::default() };
        render_terminal_bytes(body, &options).trim_end_matches('\n').to_owned()
    } else {
        sanitize_plain(&String::from_utf8_lossy(body))
    }
}

/// Any other text that came in a message (card text, a reaction, a content type) made safe to print.
pub(crate) fn plain(text: &str) -> String {
    sanitize_plain(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_rendered_and_plain_text_neutralised() {
        // Not a terminal under `cargo test`: no colour.
        assert_eq!(text_body("text/markdown; charset=utf-8", b"**hi** :tada:\x1b]0;x\x07"), "hi 🎉␛]0;x␇");
        assert_eq!(text_body("text/plain", b"**hi** :tada:\x1b[2J"), "**hi** :tada:␛[2J");
        assert_eq!(plain("a\rb"), "a␍b");
    }
}
