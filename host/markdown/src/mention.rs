//! Extracting the users a message mentions, for notifications.

use std::collections::HashSet;

use pulldown_cmark::{Event, LinkType, Tag, TagEnd};

use crate::Options;
use crate::events::{Events, cut};
use crate::inline::{Segment, segments};

/// Tracks whether text is inside code or an autolink, where `@` and `:` are literal.
#[derive(Default)]
pub(crate) struct LiteralContext {
    code_blocks: usize,
    autolinks: usize,
}

impl LiteralContext {
    /// Follow `event` (call it for every event, in order).
    pub(crate) fn observe(&mut self, event: &Event<'_>) {
        match event {
            Event::Start(Tag::CodeBlock(_)) => self.code_blocks += 1,
            Event::End(TagEnd::CodeBlock) => self.code_blocks = self.code_blocks.saturating_sub(1),
            Event::Start(Tag::Link { link_type: LinkType::Autolink | LinkType::Email, .. }) => self.autolinks += 1,
            // Any link end: the depth limiter keeps starts and ends paired, and only autolinks were counted, so a
            // plain link ending inside an autolink cannot happen (autolinks hold text only).
            Event::End(TagEnd::Link) => self.autolinks = self.autolinks.saturating_sub(1),
            _ => {}
        }
    }

    /// Is text here shown exactly as typed?
    pub(crate) fn literal(&self) -> bool {
        self.code_blocks > 0 || self.autolinks > 0
    }
}

/// The user names mentioned as `@name` in a Markdown message, in order of first appearance, each once. Mentions
/// in code spans, code blocks and autolinks do not count, nor do `a@b` (an address), names that break the user-name
/// syntax (`@Bob`), or a trailing dot (`@bob.` mentions `bob`). The input is cut to the default
/// [`Options::max_input_bytes`] first.
///
/// ```
/// let found = imfree_markdown::mentions("@alice, `@not_me` and @bob. Again @alice");
/// assert_eq!(found, ["alice", "bob"]);
/// ```
pub fn mentions(src: &str) -> Vec<String> {
    let options = Options::default();
    let (src, _) = cut(src, options.max_input_bytes);
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut context = LiteralContext::default();
    for ev in Events::new(src, &options) {
        let crate::events::Ev::Md(event) = ev else { continue };
        context.observe(&event);
        if let Event::Text(text) = &event
            && !context.literal()
        {
            segments(text, |segment| {
                if let Segment::Mention(name) = segment
                    && seen.insert(name.to_owned())
                {
                    found.push(name.to_owned());
                }
            });
        }
    }
    found
}
