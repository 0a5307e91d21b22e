//! Message formatting for imfree: `text/markdown` bodies rendered to sanitised HTML (the web client) and to safe
//! terminal text (the CLI), `text/plain` bodies neutralised for a terminal, `:shortcode:` emoji and `@user` mentions.
//!
//! Everything here treats a message as hostile. It owns the rules a reader of docs/formatting.md relies on:
//!
//! - HTML: CommonMark with strikethrough, tables and task lists (pulldown-cmark), written by our own small writer
//!   that never passes the message's raw HTML through as markup, then cleaned again by ammonia under a tight
//!   allowlist (no scripts, styles, event handlers, frames, forms or images; links only to http, https and mailto,
//!   with `rel="noopener noreferrer nofollow"` and `target="_blank"`).
//! - Terminal: no byte of the message can move the cursor, set the title, write the clipboard or overwrite a line.
//!   Control characters are shown as visible symbols, bidirectional overrides are removed, and the only escape
//!   sequences in the output are our own SGR styles (and none at all with `color: false`).
//! - Limits ([`Options`]): input is truncated with a visible marker, deep nesting is flattened, and output stops
//!   at a size cap, so every function is linear in its input and never recurses on it.
//!
//! It does no I/O and builds for `wasm32-unknown-unknown`.
//!
//! ```
//! use imfree_markdown::{Options, TerminalOptions, render_html, render_terminal, mentions};
//! let src = "**hi** @bob :tada: <script>alert(1)</script>";
//! let html = render_html(src, &Options::default());
//! assert!(html.contains("<strong>hi</strong>"));
//! assert!(html.contains("🎉"));
//! assert!(!html.contains("<script"));
//! let text = render_terminal(src, &TerminalOptions { width: 80, color: false, ..Default::default() });
//! assert_eq!(text, "hi @bob 🎉 <script>alert(1)</script>\n");
//! assert_eq!(mentions(src), ["bob"]);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod emoji;
mod events;
mod html;
mod inline;
mod mention;
mod neutralise;
mod terminal;
pub mod verify;

pub use emoji::{EmojiMatch, emoji_search, shortcode};
pub use mention::mentions;
pub use neutralise::sanitize_plain;

/// Shown where a message was cut short: at [`Options::max_input_bytes`] of input, or where the output reached
/// [`Options::max_output_bytes`].
pub const TRUNCATION_MARKER: &str = "[… message truncated]";

/// Limits that keep rendering cheap and bounded whatever a message holds. The defaults suit chat messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Input beyond this many bytes is not rendered: the message is cut at the last character boundary before it
    /// and [`TRUNCATION_MARKER`] is shown at the end. (Cut, not refused: a reader still sees what the sender wrote.)
    pub max_input_bytes: usize,
    /// Block quotes and lists nested deeper than this are flattened: their content is shown at this depth (list
    /// items as `•` lines). Emphasis, strikethrough and links nested deeper than this lose their extra wrappers.
    pub max_nesting: usize,
    /// Rendering stops once the output reaches about this many bytes, and [`TRUNCATION_MARKER`] is shown. The result
    /// is never longer than this plus a line (or paragraph) holding the marker.
    pub max_output_bytes: usize,
    /// A message with a line holding more `|` than this is parsed without tables, and so is one whose widest line
    /// times its number of lines exceeds `max_input_bytes` (GFM pads every row of a table to the header's width, so a
    /// wide header over many short lines would otherwise multiply the work).
    pub max_table_columns: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { max_input_bytes: 64 * 1024, max_nesting: 16, max_output_bytes: 256 * 1024, max_table_columns: 32 }
    }
}

/// How [`render_terminal`] lays out text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalOptions {
    /// Wrap paragraphs at this many columns (words longer than a line overflow it). 0: never wrap.
    pub width: usize,
    /// Style with ANSI SGR sequences (bold, italic, colours). Off: plain text with no escape byte at all.
    pub color: bool,
    /// The size and nesting limits.
    pub limits: Options,
}

impl Default for TerminalOptions {
    fn default() -> Self {
        Self { width: 80, color: false, limits: Options::default() }
    }
}

/// Render Markdown to sanitised HTML, ready to be inserted into a page (as `innerHTML` of a message element).
///
/// Raw HTML in the message is shown as text, images become links (the page loads nothing from other hosts), and the
/// result has passed ammonia under the allowlist described in docs/formatting.md.
pub fn render_html(src: &str, options: &Options) -> String {
    html::render(src, options)
}

/// [`render_html`] for bytes that may not be UTF-8: invalid sequences become U+FFFD.
pub fn render_html_bytes(src: &[u8], options: &Options) -> String {
    render_html(&events::lossy_utf8(src, options), options)
}

/// Render Markdown for a terminal. The result ends with a newline (unless empty) and holds no control character
/// but `\n`, and with `color: true` no escape sequence but SGR styles.
pub fn render_terminal(src: &str, options: &TerminalOptions) -> String {
    terminal::render(src, options)
}

/// [`render_terminal`] for bytes that may not be UTF-8: invalid sequences become U+FFFD.
pub fn render_terminal_bytes(src: &[u8], options: &TerminalOptions) -> String {
    render_terminal(&events::lossy_utf8(src, &options.limits), options)
}
