//! Markdown to HTML for the web client: our own writer over the flattened event stream, then ammonia.
//!
//! Two layers, each enough on its own for the rules that matter most:
//! 1. The writer only ever emits the tags below. The message's raw HTML, code and text are escaped; links are
//!    written only for http, https and mailto URLs; images become links; a code block's language becomes a
//!    `language-…` class only when it is made of safe characters.
//! 2. ammonia re-parses that with html5ever and keeps only the same allowlist (tags, attributes, URL schemes, no
//!    relative URLs, `rel` and `target` forced on links), so a mistake in layer 1 is not an injection.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::OnceLock;

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, LinkType, Tag, TagEnd};

use crate::events::{Ev, Events, cut, is_safe_url};
use crate::inline::{Segment, segments};
use crate::mention::LiteralContext;
use crate::neutralise::neutralised;
use crate::{Options, TRUNCATION_MARKER};

/// The tags a rendered message may contain.
pub(crate) const TAGS: &[&str] = &[
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "code", "ul", "ol", "li", "em",
    "strong", "del", "a", "span", "table", "thead", "tbody", "tr", "th", "td",
];

/// The rel every link gets: no window.opener, no Referer leaking the web client's URL, no endorsement.
pub(crate) const LINK_REL: &str = "noopener noreferrer nofollow";

/// The class of a highlighted mention.
pub(crate) const MENTION_CLASS: &str = "mention";

/// Longest code block language kept as a class.
const MAX_LANGUAGE_LEN: usize = 32;

/// A code block's info string reduced to a language that is safe in a class name, or nothing.
fn language(info: &str) -> Option<&str> {
    let lang = info.split_whitespace().next()?;
    let ok = lang.len() <= MAX_LANGUAGE_LEN
        && lang.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '#' | '.'));
    ok.then_some(lang)
}

/// The ammonia configuration, built once.
fn sanitizer() -> &'static ammonia::Builder<'static> {
    static SANITIZER: OnceLock<ammonia::Builder<'static>> = OnceLock::new();
    SANITIZER.get_or_init(|| {
        let mut builder = ammonia::Builder::empty();
        let tag_attributes: HashMap<&str, HashSet<&str>> = HashMap::from([
            ("a", HashSet::from(["href", "title"])),
            ("ol", HashSet::from(["start"])),
            ("code", HashSet::from(["class"])),
            ("span", HashSet::from(["class"])),
        ]);
        builder
            .tags(TAGS.iter().copied().collect())
            .tag_attributes(tag_attributes)
            .url_schemes(HashSet::from(["http", "https", "mailto"]))
            .url_relative(ammonia::UrlRelative::Deny)
            .link_rel(Some(LINK_REL))
            .set_tag_attribute_value("a", "target", "_blank")
            .strip_comments(true)
            .clean_content_tags(HashSet::from(["script", "style"]))
            .attribute_filter(|element, attribute, value| match (element, attribute) {
                ("code", "class") => value
                    .strip_prefix("language-")
                    .and_then(language)
                    .filter(|lang| lang.len() + "language-".len() == value.len())
                    .map(|_| Cow::Borrowed(value)),
                ("span", "class") => (value == MENTION_CLASS).then_some(Cow::Borrowed(value)),
                ("ol", "start") => value.parse::<u32>().ok().map(|_| Cow::Borrowed(value)),
                _ => Some(Cow::Borrowed(value)),
            });
        builder
    })
}

/// How many escaped characters (`& < > " '`, U+00A0) a text node may hold. html5ever 0.40 costs O(n²) in n of them in
/// one text node or attribute value: its serializer rescans the rest of the node for `<`, `>` or `"` at each `&` and
/// U+00A0 (64 KiB of `&` took 0.9 s in release), and its tokenizer slows down likewise on character references (64
/// KiB of `<`: 108 ms, against 26 ms for 32 KiB). Our writer ends a text node (with an empty `<span></span>`) after
/// this many, and does not make a link of a URL or title with more.
const MAX_ENTITIES_PER_NODE: usize = 256;

fn is_entity(c: char) -> bool {
    matches!(c, '&' | '<' | '>' | '"' | '\'' | '\u{a0}')
}

/// How many characters of `text` become entities (see above).
fn entity_count(text: &str) -> usize {
    text.chars().filter(|c| is_entity(*c)).count()
}

/// Append `text`, neutralised and escaped for HTML text or a quoted attribute value, while `out` stays within
/// `budget` bytes; false if it stopped early (between two characters, never inside an entity). `entities` counts
/// escaped characters in the current text node; with `Some`, a node is ended after MAX_ENTITIES_PER_NODE of them.
fn push_escaped(out: &mut String, text: &str, budget: usize, mut entities: Option<&mut usize>) -> bool {
    for c in neutralised(text).chars() {
        if is_entity(c)
            && let Some(count) = entities.as_deref_mut()
        {
            *count += 1;
            if *count >= MAX_ENTITIES_PER_NODE {
                *count = 0;
                out.push_str("<span></span>");
            }
        }
        let mut utf8 = [0; 4];
        let piece = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&#39;",
            _ => c.encode_utf8(&mut utf8),
        };
        if out.len() + piece.len() > budget {
            return false;
        }
        out.push_str(piece);
    }
    true
}

fn heading(level: HeadingLevel) -> (&'static str, &'static str) {
    match level {
        HeadingLevel::H1 => ("<h1>", "</h1>\n"),
        HeadingLevel::H2 => ("<h2>", "</h2>\n"),
        HeadingLevel::H3 => ("<h3>", "</h3>\n"),
        HeadingLevel::H4 => ("<h4>", "</h4>\n"),
        HeadingLevel::H5 => ("<h5>", "</h5>\n"),
        HeadingLevel::H6 => ("<h6>", "</h6>\n"),
    }
}

/// The writer's state while it walks one message.
struct Writer {
    out: String,
    /// Closing tags of the open elements, innermost last.
    open: Vec<&'static str>,
    literal: LiteralContext,
    in_table_head: bool,
    in_table_body: bool,
    in_html_block: bool,
    /// A line feed inside a raw HTML block, written as `<br>` before the block's next text (not after its last).
    html_block_break: bool,
    /// Stop once `out` would pass this many bytes.
    budget: usize,
    /// A piece of text did not fit in the budget: stop here.
    full: bool,
    /// Escaped characters written since the last `<span></span>` (MAX_ENTITIES_PER_NODE).
    entities: usize,
}

impl Writer {
    fn start(&mut self, tag: Tag<'_>) {
        let close = match tag {
            Tag::Paragraph => {
                self.out.push_str("<p>");
                "</p>\n"
            }
            Tag::Heading { level, .. } => {
                let (open, close) = heading(level);
                self.out.push_str(open);
                close
            }
            Tag::BlockQuote(_) => {
                self.out.push_str("<blockquote>\n");
                "</blockquote>\n"
            }
            Tag::CodeBlock(kind) => {
                self.out.push_str("<pre><code");
                if let CodeBlockKind::Fenced(info) = &kind
                    && let Some(lang) = language(info)
                {
                    let _ = write!(self.out, " class=\"language-{lang}\"");
                }
                self.out.push('>');
                "</code></pre>\n"
            }
            Tag::HtmlBlock => {
                self.in_html_block = true;
                self.out.push_str("<p>");
                "</p>\n"
            }
            Tag::List(Some(1)) => {
                self.out.push_str("<ol>\n");
                "</ol>\n"
            }
            Tag::List(Some(start)) => {
                let _ = writeln!(self.out, "<ol start=\"{start}\">");
                "</ol>\n"
            }
            Tag::List(None) => {
                self.out.push_str("<ul>\n");
                "</ul>\n"
            }
            Tag::Item => {
                self.out.push_str("<li>");
                "</li>\n"
            }
            Tag::Table(_) => {
                self.out.push_str("<table>\n");
                "</table>\n"
            }
            Tag::TableHead => {
                self.in_table_head = true;
                self.out.push_str("<thead><tr>");
                "</tr></thead>\n"
            }
            Tag::TableRow => {
                if !self.in_table_body {
                    // Closed at the table's end, before </table>.
                    self.in_table_body = true;
                    self.out.push_str("<tbody>\n");
                    self.open.push("</tbody>\n");
                }
                self.out.push_str("<tr>");
                "</tr>\n"
            }
            Tag::TableCell if self.in_table_head => {
                self.out.push_str("<th>");
                "</th>"
            }
            Tag::TableCell => {
                self.out.push_str("<td>");
                "</td>"
            }
            Tag::Emphasis => {
                self.out.push_str("<em>");
                "</em>"
            }
            Tag::Strong => {
                self.out.push_str("<strong>");
                "</strong>"
            }
            Tag::Strikethrough => {
                self.out.push_str("<del>");
                "</del>"
            }
            Tag::Link { link_type: LinkType::Email, dest_url, title, .. } => {
                // pulldown-cmark gives an email autolink's address without its scheme.
                self.push_link_open(&format!("mailto:{dest_url}"), &title)
            }
            Tag::Link { dest_url, title, .. } if is_safe_url(&dest_url) => self.push_link_open(&dest_url, &title),
            Tag::Image { dest_url, title, .. } if is_safe_url(&dest_url) => {
                // Never an <img>: loading it would tell another host who reads the conversation, and when.
                let close = self.push_link_open(&dest_url, &title);
                self.out.push_str("🖼 ");
                close
            }
            Tag::Image { .. } => {
                self.out.push_str("🖼 ");
                ""
            }
            // Unsafe links show their text only; extensions we do not enable have no markup.
            _ => "",
        };
        self.open.push(close);
    }

    /// Open a link (if it fits in the budget) and return its closing tag.
    fn push_link_open(&mut self, url: &str, title: &str) -> &'static str {
        if entity_count(url) > MAX_ENTITIES_PER_NODE || entity_count(title) > MAX_ENTITIES_PER_NODE {
            return "";
        }
        let mark = self.out.len();
        self.out.push_str("<a href=\"");
        let mut fits = push_escaped(&mut self.out, url, self.budget, None);
        if fits && !title.is_empty() {
            self.out.push_str("\" title=\"");
            fits = push_escaped(&mut self.out, title, self.budget, None);
        }
        if !fits {
            self.out.truncate(mark);
            self.full = true;
            return "";
        }
        // ammonia replaces these with its own, the same: written here so that the budget counts them.
        self.out.push_str("\" target=\"_blank\" rel=\"");
        self.out.push_str(LINK_REL);
        self.out.push_str("\">");
        "</a>"
    }

    /// Append message text within the budget.
    fn push_text(&mut self, text: &str) {
        if !push_escaped(&mut self.out, text, self.budget, Some(&mut self.entities)) {
            self.full = true;
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::TableHead => self.in_table_head = false,
            TagEnd::Table => {
                if std::mem::take(&mut self.in_table_body)
                    && let Some(tbody) = self.open.pop()
                {
                    self.out.push_str(tbody);
                }
            }
            TagEnd::HtmlBlock => {
                self.in_html_block = false;
                self.html_block_break = false;
            }
            _ => {}
        }
        if let Some(close) = self.open.pop() {
            self.out.push_str(close);
        }
    }

    fn text(&mut self, text: &str) {
        if self.literal.literal() {
            return self.push_text(text);
        }
        segments(text, |segment| match segment {
            Segment::Text(t) => self.push_text(t),
            Segment::Emoji(e) => self.out.push_str(e),
            Segment::Mention(name) => {
                let _ = write!(self.out, "<span class=\"{MENTION_CLASS}\">@{name}</span>");
            }
        });
    }

    /// Raw HTML from the message: shown as the text it is.
    fn raw_html(&mut self, html: &str) {
        if !self.in_html_block {
            return self.push_text(html);
        }
        for (i, line) in html.split('\n').enumerate() {
            if i > 0 {
                self.html_block_break = true;
            }
            if !line.is_empty() {
                if std::mem::take(&mut self.html_block_break) {
                    self.out.push_str("<br>\n");
                }
                self.push_text(line);
            }
        }
    }

    fn event(&mut self, ev: Ev<'_>) {
        let event = match ev {
            Ev::FlatItem => {
                self.out.push_str("<br>• ");
                return;
            }
            Ev::Md(event) => event,
        };
        self.literal.observe(&event);
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => self.text(&text),
            Event::Code(code) => {
                self.out.push_str("<code>");
                self.push_text(&code);
                self.out.push_str("</code>");
            }
            Event::Html(html) | Event::InlineHtml(html) => self.raw_html(&html),
            Event::SoftBreak | Event::HardBreak => self.out.push_str("<br>\n"),
            Event::Rule => self.out.push_str("<hr>\n"),
            Event::TaskListMarker(done) => self.out.push_str(if done { "☑ " } else { "☐ " }),
            Event::FootnoteReference(text) | Event::InlineMath(text) | Event::DisplayMath(text) => self.push_text(&text),
        }
    }

    /// Close every open element and say that the message was cut.
    fn finish_truncated(&mut self) {
        while let Some(close) = self.open.pop() {
            self.out.push_str(close);
        }
        let _ = writeln!(self.out, "<p>{TRUNCATION_MARKER}</p>");
    }
}

/// Our writer's HTML for `src` (already cut to the input limit), stopping once it passes `budget` bytes.
fn write(src: &str, input_cut: bool, options: &Options, budget: usize) -> String {
    let mut writer = Writer {
        out: String::with_capacity(src.len() + src.len() / 2),
        open: Vec::new(),
        literal: LiteralContext::default(),
        in_table_head: false,
        in_table_body: false,
        in_html_block: false,
        html_block_break: false,
        budget,
        full: false,
        entities: 0,
    };
    for ev in Events::new(src, options) {
        writer.event(ev);
        if writer.full || writer.out.len() > budget {
            writer.finish_truncated();
            return writer.out;
        }
    }
    if input_cut {
        writer.finish_truncated();
    }
    writer.out
}

pub(crate) fn render(src: &str, options: &Options) -> String {
    let (src, input_cut) = cut(src, options.max_input_bytes);
    let limit = options.max_output_bytes + TRUNCATION_MARKER.len() + "<p></p>\n".len();
    // The result may be longer than our writer's budget: the closing tags and the marker come after it. A little
    // room is kept for them; if the result is still too long, render again with a budget scaled down by the excess
    // (each round's budget is strictly smaller).
    let mut budget = options.max_output_bytes - options.max_output_bytes / 64;
    loop {
        let clean = sanitizer().clean(&write(src, input_cut, options, budget)).to_string();
        if clean.len() <= limit {
            return clean;
        }
        if budget == 0 {
            return format!("<p>{TRUNCATION_MARKER}</p>\n");
        }
        let scaled = u128::try_from(budget).unwrap_or(u128::MAX) * u128::try_from(limit).unwrap_or(u128::MAX)
            / u128::try_from(clean.len()).unwrap_or(u128::MAX);
        budget = usize::try_from(scaled).unwrap_or(usize::MAX).saturating_sub(1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(src: &str) -> String {
        render(src, &Options::default())
    }

    #[test]
    fn basic_markdown() {
        assert_eq!(html("*a* **b** ~~c~~ `d`"), "<p><em>a</em> <strong>b</strong> <del>c</del> <code>d</code></p>\n");
        assert_eq!(html("# T"), "<h1>T</h1>\n");
        assert_eq!(html("> q"), "<blockquote>\n<p>q</p>\n</blockquote>\n");
        assert_eq!(html("3. a\n4. b"), "<ol start=\"3\">\n<li>a</li>\n<li>b</li>\n</ol>\n");
        assert_eq!(html("- [x] done\n- [ ] todo"), "<ul>\n<li>☑ done</li>\n<li>☐ todo</li>\n</ul>\n");
        assert_eq!(html("a\nb"), "<p>a<br>\nb</p>\n");
        assert_eq!(html("---"), "<hr>\n");
    }

    #[test]
    fn links_get_rel_and_target() {
        assert_eq!(
            html("[x](https://a.example/?q=1&r=2)"),
            "<p><a href=\"https://a.example/?q=1&amp;r=2\" target=\"_blank\" rel=\"noopener noreferrer nofollow\">x</a></p>\n"
        );
    }

    #[test]
    fn code_block_language_class_only_from_safe_characters() {
        assert_eq!(html("```rust\nfn\n```"), "<pre><code class=\"language-rust\">fn\n</code></pre>\n");
        assert_eq!(html("```c++ extra\nx\n```"), "<pre><code class=\"language-c++\">x\n</code></pre>\n");
        assert_eq!(html("```\"><script>\nx\n```"), "<pre><code>x\n</code></pre>\n");
        assert_eq!(html("```a\"onmouseover=\"x\nx\n```"), "<pre><code>x\n</code></pre>\n");
    }

    #[test]
    fn table() {
        assert_eq!(
            html("| a | b |\n|:-|-:|\n| 1 | 2 |"),
            "<table>\n<thead><tr><th>a</th><th>b</th></tr></thead>\n<tbody>\n<tr><td>1</td><td>2</td></tr>\n</tbody>\n</table>\n"
        );
    }

    #[test]
    fn mention_and_emoji() {
        assert_eq!(html("@bob :tada:"), "<p><span class=\"mention\">@bob</span> 🎉</p>\n");
        assert_eq!(html("`@bob :tada:`"), "<p><code>@bob :tada:</code></p>\n");
    }
}
