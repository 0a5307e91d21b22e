//! Markdown for a terminal: styles as ANSI SGR sequences (or none), block quotes with a bar, indented lists,
//! `text <url>` links, simple tables, word wrap.
//!
//! Message text reaches the output only through [`Terminal::word`] and friends, which take text that
//! [`push_neutralised`] has cleaned; the only escape sequences written are built by [`Terminal::set_style`] from
//! the fixed codes in [`SGR`]. Containers deeper than the nesting limit arrive already flattened (crate::events),
//! so the line prefix is short and every line costs O(1) more than its text.

use pulldown_cmark::{Event, HeadingLevel, LinkType, Tag, TagEnd};
use unicode_width::UnicodeWidthStr;

use crate::events::{Ev, Events, cut};
use crate::inline::{Segment, segments};
use crate::mention::LiteralContext;
use crate::neutralise::{neutralised, push_neutralised};
use crate::{TRUNCATION_MARKER, TerminalOptions};

/// One bit per style; `SGR[i]` is the SGR parameter of bit `i`.
const BOLD: u8 = 1 << 0;
const DIM: u8 = 1 << 1;
const ITALIC: u8 = 1 << 2;
const UNDERLINE: u8 = 1 << 3;
const STRIKE: u8 = 1 << 4;
const BLUE: u8 = 1 << 5;
const MAGENTA: u8 = 1 << 6;
const CYAN: u8 = 1 << 7;
/// The SGR parameters we ever write (besides 0, reset). The fuzz target and tests check that output has no other.
pub(crate) const SGR: [&str; 8] = ["1", "2", "3", "4", "9", "34", "35", "36"];

const MENTION: u8 = BOLD | MAGENTA;
const CODE: u8 = CYAN;
const URL: u8 = DIM | BLUE;

/// Columns a table cell is padded to at most (a longer cell is written whole and pushes its row out).
const MAX_CELL_PAD: usize = 40;

/// A container that puts something before each of its lines.
enum Container {
    Quote,
    /// A list item: its marker on the first line, as many spaces on the next.
    Item {
        indent: usize,
        marker: Option<String>,
    },
    /// A list: the number of its next item, if ordered.
    List(Option<u64>),
}

/// A table being collected (its column widths are known only at its end).
#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    head_rows: usize,
    /// Bytes held in `rows` and `row`, counted toward the output limit.
    bytes: usize,
}

struct Terminal {
    out: String,
    color: bool,
    width: usize,
    containers: Vec<Container>,
    /// Nothing written on the current line yet, not even its prefix.
    line_start: bool,
    /// Columns used on the current line.
    col: usize,
    /// A blank line is due before the next block.
    blank: bool,
    /// A space is due before the next word (or a line break, if the word does not fit).
    space: bool,
    /// The style of the text before the due space (so that a space never starts a link's underline).
    space_style: u8,
    /// How many open elements ask for each style bit.
    style_counts: [u16; 8],
    /// The style last written to `out`.
    emitted: u8,
    literal: LiteralContext,
    in_code_block: bool,
    in_html_block: bool,
    /// URLs to show after the open links' text (`None` for autolinks, whose text is the URL).
    links: Vec<Option<String>>,
    table: Option<Table>,
    /// `out` of the enclosing text while a table cell is written into `out`.
    outside_cell: Option<String>,
    /// Options::max_output_bytes.
    budget: usize,
}

fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut rest = text;
    // Our own SGR sequences are the only escapes in rendered text; they take no columns.
    while let Some(esc) = rest.find('\x1b') {
        width += rest[..esc].width();
        rest = rest[esc..].find('m').map_or("", |m| &rest[esc + m + 1..]);
    }
    width + rest.width()
}

impl Terminal {
    fn style_mask(&self) -> u8 {
        (0..8).filter(|bit| self.style_counts[*bit] > 0).fold(0, |mask, bit| mask | (1 << bit))
    }

    fn push_style(&mut self, mask: u8) {
        for bit in 0..8 {
            if mask & (1 << bit) != 0 {
                self.style_counts[bit] += 1;
            }
        }
    }

    fn pop_style(&mut self, mask: u8) {
        for bit in 0..8 {
            if mask & (1 << bit) != 0 {
                self.style_counts[bit] = self.style_counts[bit].saturating_sub(1);
            }
        }
    }

    /// Switch the terminal to exactly `mask` (from a reset, so no style leaks from what came before).
    fn set_style(&mut self, mask: u8) {
        if !self.color || mask == self.emitted {
            return;
        }
        self.out.push_str("\x1b[0");
        for (bit, code) in SGR.iter().enumerate() {
            if mask & (1 << bit) != 0 {
                self.out.push(';');
                self.out.push_str(code);
            }
        }
        self.out.push('m');
        self.emitted = mask;
    }

    /// Write the prefix of a new line: quote bars, list indentation, the pending marker of a list item.
    fn prefix(&mut self) {
        if !self.line_start || self.outside_cell.is_some() {
            return;
        }
        self.line_start = false;
        let color = self.color;
        let mut pieces: Vec<(u8, String)> = Vec::new();
        for container in &mut self.containers {
            match container {
                Container::Quote => pieces.push((DIM, "│ ".to_owned())),
                Container::Item { indent, marker } => {
                    let text = marker.take().unwrap_or_else(|| " ".repeat(*indent));
                    pieces.push((0, text));
                }
                Container::List(_) => {}
            }
        }
        for (style, text) in pieces {
            self.set_style(if color { style } else { 0 });
            self.col += text.width();
            self.out.push_str(&text);
        }
    }

    fn newline(&mut self) {
        self.set_style(0);
        self.out.push('\n');
        self.line_start = true;
        self.col = 0;
        self.space = false;
    }

    /// An empty line inside the current containers: their bars, no markers, no trailing spaces.
    fn blank_line(&mut self) {
        let mut line = String::new();
        for container in &self.containers {
            match container {
                Container::Quote => line.push_str("│ "),
                Container::Item { indent, .. } => line.extend(std::iter::repeat_n(' ', *indent)),
                Container::List(_) => {}
            }
        }
        let line = line.trim_end();
        if !line.is_empty() {
            self.set_style(DIM);
            self.out.push_str(line);
        }
        self.newline();
    }

    /// Before a block: end the current line, and leave a blank one if the previous block asked for it.
    fn start_block(&mut self) {
        if !self.line_start {
            self.newline();
        }
        if std::mem::take(&mut self.blank) && !self.out.is_empty() {
            self.blank_line();
        }
    }

    /// A space is due before the next word, in the current style.
    fn due_space(&mut self) {
        self.space = true;
        self.space_style = self.style_mask();
    }

    /// One unbreakable piece of neutralised text in `style` (added to the open elements' styles), preceded by the
    /// due space or, if it does not fit, a line break.
    fn word(&mut self, text: &str, style: u8) {
        if text.is_empty() {
            return;
        }
        let width = visible_width(text);
        if std::mem::take(&mut self.space) && !self.line_start {
            let fits = self.width == 0 || self.col + 1 + width <= self.width;
            if fits || self.outside_cell.is_some() || self.in_code_block {
                self.set_style(self.space_style);
                self.out.push(' ');
                self.col += 1;
            } else {
                self.newline();
            }
        }
        self.prefix();
        self.set_style(self.style_mask() | style);
        self.out.push_str(text);
        self.col += width;
    }

    /// Neutralised running text: words separated by spaces, wrapped at the width.
    fn words(&mut self, text: &str, style: u8) {
        for (i, word) in text.split(' ').enumerate() {
            if i > 0 {
                self.due_space();
            }
            self.word(word, style);
        }
    }

    /// Message text outside code: emoji and mentions, then words.
    fn text(&mut self, text: &str) {
        if self.in_code_block || self.in_html_block {
            return self.lines(text, self.in_code_block);
        }
        let text = neutralised(text);
        if self.literal.literal() {
            return self.words(&text, 0);
        }
        segments(&text, |segment| match segment {
            Segment::Text(t) => self.words(t, 0),
            Segment::Emoji(e) => self.word(e, 0),
            Segment::Mention(name) => self.word(&format!("@{name}"), MENTION),
        });
    }

    /// Preformatted text (a code block, a raw HTML block): line by line, never wrapped.
    fn lines(&mut self, text: &str, code: bool) {
        let mut clean = String::with_capacity(text.len());
        push_neutralised(&mut clean, text);
        for (i, line) in clean.split('\n').enumerate() {
            if i > 0 {
                self.newline();
            }
            if line.is_empty() {
                continue;
            }
            if self.line_start {
                self.prefix();
                if code {
                    self.out.push_str("    ");
                    self.col += 4;
                }
            }
            self.set_style(if code { CODE } else { 0 });
            self.col += line.width();
            self.out.push_str(line);
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph => self.start_block(),
            Tag::Heading { level, .. } => {
                self.start_block();
                let underline = if matches!(level, HeadingLevel::H1 | HeadingLevel::H2) { UNDERLINE } else { 0 };
                self.push_style(BOLD | underline);
                if !self.color {
                    self.word(&"#".repeat(level as usize), 0);
                    self.due_space();
                }
            }
            Tag::BlockQuote(_) => {
                self.start_block();
                self.containers.push(Container::Quote);
            }
            Tag::CodeBlock(_) => {
                self.start_block();
                self.in_code_block = true;
            }
            Tag::HtmlBlock => {
                self.start_block();
                self.in_html_block = true;
            }
            Tag::List(start) => {
                self.start_block();
                self.containers.push(Container::List(start));
            }
            Tag::Item => {
                self.start_block();
                let marker = match self.containers.last_mut() {
                    Some(Container::List(Some(n))) => {
                        let marker = format!("{n}. ");
                        *n = n.saturating_add(1);
                        marker
                    }
                    _ => "• ".to_owned(),
                };
                self.containers.push(Container::Item { indent: marker.width(), marker: Some(marker) });
            }
            Tag::Table(_) => {
                self.start_block();
                self.table = Some(Table::default());
            }
            Tag::TableHead | Tag::TableRow => {}
            Tag::TableCell => {
                self.set_style(0);
                self.outside_cell = Some(std::mem::take(&mut self.out));
                self.space = false;
            }
            Tag::Emphasis => self.push_style(ITALIC),
            Tag::Strong => self.push_style(BOLD),
            Tag::Strikethrough => {
                self.push_style(STRIKE);
                if !self.color {
                    self.word("~~", 0);
                }
            }
            Tag::Link { link_type, dest_url, .. } => {
                self.push_style(UNDERLINE);
                let autolink = matches!(link_type, LinkType::Autolink | LinkType::Email);
                self.links.push((!autolink && !dest_url.is_empty()).then(|| neutralised(&dest_url)));
            }
            Tag::Image { dest_url, .. } => {
                self.push_style(UNDERLINE);
                self.word("🖼", 0);
                self.due_space();
                self.links.push((!dest_url.is_empty()).then(|| neutralised(&dest_url)));
            }
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => self.blank = true,
            TagEnd::Heading(level) => {
                let underline = if matches!(level, HeadingLevel::H1 | HeadingLevel::H2) { UNDERLINE } else { 0 };
                self.pop_style(BOLD | underline);
                self.blank = true;
            }
            TagEnd::BlockQuote(_) => {
                self.containers.pop();
                self.blank = true;
            }
            TagEnd::CodeBlock | TagEnd::HtmlBlock => {
                self.in_code_block = false;
                self.in_html_block = false;
                self.blank = true;
            }
            TagEnd::List(_) => {
                self.containers.pop();
                // A list nested in a list item ends without a gap before the next item.
                self.blank = !matches!(self.containers.last(), Some(Container::Item { .. }));
            }
            TagEnd::Item => {
                // An empty item still shows its marker.
                if matches!(self.containers.last(), Some(Container::Item { marker: Some(_), .. })) {
                    self.prefix();
                }
                self.containers.pop();
            }
            TagEnd::TableCell => {
                self.set_style(0);
                let cell = std::mem::replace(&mut self.out, self.outside_cell.take().unwrap_or_default());
                self.emitted = 0;
                self.space = false;
                if let Some(table) = &mut self.table {
                    table.bytes += cell.len();
                    table.row.push(cell);
                }
            }
            TagEnd::TableHead | TagEnd::TableRow => {
                if let Some(table) = &mut self.table {
                    let row = std::mem::take(&mut table.row);
                    table.rows.push(row);
                    if tag == TagEnd::TableHead {
                        table.head_rows = table.rows.len();
                    }
                }
            }
            TagEnd::Table => {
                if let Some(table) = self.table.take() {
                    self.write_table(&table);
                }
                self.blank = true;
            }
            TagEnd::Emphasis => self.pop_style(ITALIC),
            TagEnd::Strong => self.pop_style(BOLD),
            TagEnd::Strikethrough => {
                if !self.color {
                    self.space = false;
                    self.word("~~", 0);
                }
                self.pop_style(STRIKE);
            }
            TagEnd::Link | TagEnd::Image => {
                self.pop_style(UNDERLINE);
                if let Some(Some(url)) = self.links.pop() {
                    self.due_space();
                    self.word(&format!("<{url}>"), URL);
                }
            }
            _ => {}
        }
    }

    fn write_table(&mut self, table: &Table) {
        let columns = table.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &table.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(visible_width(cell).min(MAX_CELL_PAD));
            }
        }
        for (r, row) in table.rows.iter().enumerate() {
            if self.out.len() > self.budget {
                return;
            }
            self.prefix();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    self.set_style(if self.color { DIM } else { 0 });
                    self.out.push_str(" │ ");
                }
                self.set_style(0);
                self.out.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i].saturating_sub(visible_width(cell));
                    self.out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            self.newline();
            if r + 1 == table.head_rows {
                self.prefix();
                let rule: Vec<String> = widths.iter().map(|w| "─".repeat((*w).max(1))).collect();
                self.set_style(if self.color { DIM } else { 0 });
                self.out.push_str(&rule.join("─┼─"));
                self.newline();
            }
        }
    }

    fn event(&mut self, ev: Ev<'_>) {
        let event = match ev {
            Ev::FlatItem => {
                if !self.line_start {
                    self.newline();
                }
                self.word("•", 0);
                self.due_space();
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
                let code = neutralised(&code);
                if self.color {
                    self.word(&code, CODE);
                } else {
                    self.word(&format!("`{code}`"), 0);
                }
            }
            Event::Html(html) | Event::InlineHtml(html) if self.in_html_block => self.lines(&html, false),
            Event::Html(html) | Event::InlineHtml(html) => self.words(&neutralised(&html), 0),
            Event::SoftBreak | Event::HardBreak if self.outside_cell.is_some() => self.due_space(),
            Event::SoftBreak | Event::HardBreak => self.newline(),
            Event::Rule => {
                self.start_block();
                let width = if self.width == 0 { 40 } else { self.width.min(40).saturating_sub(self.col).max(3) };
                self.prefix();
                self.set_style(if self.color { DIM } else { 0 });
                self.out.push_str(&"─".repeat(width));
                self.blank = true;
            }
            Event::TaskListMarker(done) => {
                self.word(if done { "[x]" } else { "[ ]" }, 0);
                self.due_space();
            }
            Event::FootnoteReference(text) | Event::InlineMath(text) | Event::DisplayMath(text) => {
                self.words(&neutralised(&text), 0)
            }
        }
    }
}

/// Cut `out` to at most `max` bytes, at a character boundary and never inside one of our escape sequences.
fn cut_output(out: &mut String, max: usize) {
    if out.len() <= max {
        return;
    }
    let (kept, _) = cut(out, max);
    let mut end = kept.len();
    if let Some(esc) = kept.rfind('\x1b')
        && !kept[esc..].contains('m')
    {
        end = esc;
    }
    out.truncate(end);
}

pub(crate) fn render(src: &str, options: &TerminalOptions) -> String {
    let limits = &options.limits;
    let (src, input_cut) = cut(src, limits.max_input_bytes);
    let mut t = Terminal {
        out: String::with_capacity(src.len() + src.len() / 4),
        color: options.color,
        width: options.width,
        containers: Vec::new(),
        line_start: true,
        col: 0,
        blank: false,
        space: false,
        space_style: 0,
        style_counts: [0; 8],
        emitted: 0,
        literal: LiteralContext::default(),
        in_code_block: false,
        in_html_block: false,
        links: Vec::new(),
        table: None,
        outside_cell: None,
        budget: limits.max_output_bytes,
    };
    let mut truncated = input_cut;
    for ev in Events::new(src, limits) {
        t.event(ev);
        let pending_cell = t.outside_cell.as_ref().map_or(0, String::len);
        let pending_table = t.table.as_ref().map_or(0, |table| table.bytes);
        if t.out.len() + pending_cell + pending_table > limits.max_output_bytes {
            truncated = true;
            break;
        }
    }
    if let Some(outside) = t.outside_cell.take() {
        // Stopped inside a table cell: the cell's text is dropped; the text around it was left unstyled.
        t.out = outside;
        t.emitted = 0;
    }
    t.set_style(0);
    let mut out = t.out;
    if truncated {
        cut_output(&mut out, limits.max_output_bytes);
        if options.color && out.contains('\x1b') {
            out.push_str("\x1b[0m");
        }
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if truncated {
        out.push_str(TRUNCATION_MARKER);
        out.push('\n');
    }
    out
}
