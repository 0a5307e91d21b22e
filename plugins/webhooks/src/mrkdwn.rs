//! Slack's `mrkdwn` and imfree's Markdown, both ways: outgoing messages (Markdown) become Slack section text, and
//! incoming Slack payloads (`text` and Block Kit `blocks`) become the Markdown message the bot posts.
//!
//! Slack's rules (api.slack.com, "Formatting text for app surfaces"): `*bold*`, `_italic_`, `~strike~`,
//! `` `code` ``, ```` ``` ```` blocks, `<url|text>` links, and `&`, `<`, `>` escaped as `&amp;`, `&lt;`, `&gt;`.

use serde_json::Value;

/// Markdown (CommonMark with GitHub's strikethrough) to Slack mrkdwn: `**b**`→`*b*`, `*i*`→`_i_`, `~~s~~`→`~s~`,
/// `[t](u)`→`<u|t>`, headings to bold lines, `-`/`*` bullets to `•`, and `&<>` escaped everywhere (code included,
/// as Slack requires).
pub fn markdown_to_mrkdwn(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len() + 16);
    let mut in_fence = false;
    for (i, line) in markdown.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            out.push_str("```");
            continue;
        }
        if in_fence {
            escape_into(&mut out, line);
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(heading) = heading_text(trimmed) {
            out.push('*');
            inline_to_mrkdwn(&mut out, heading);
            out.push('*');
        } else if let Some(item) = trimmed.strip_prefix("- ").or_else(|| trimmed.strip_prefix("* ")).or_else(|| trimmed.strip_prefix("+ ")) {
            out.push_str(indent);
            out.push_str("• ");
            inline_to_mrkdwn(&mut out, item);
        } else if let Some(quote) = trimmed.strip_prefix('>') {
            // Slack's quote marker is a literal `>` at the start of a line.
            out.push('>');
            inline_to_mrkdwn(&mut out, quote);
        } else {
            out.push_str(indent);
            inline_to_mrkdwn(&mut out, trimmed);
        }
    }
    out
}

fn heading_text(line: &str) -> Option<&str> {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
        Some(line[hashes..].trim().trim_end_matches('#').trim_end())
    } else {
        None
    }
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

fn inline_to_mrkdwn(out: &mut String, text: &str) {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\\' if next.is_some_and(|n| n.is_ascii_punctuation()) => {
                escape_into(out, &next.unwrap_or_default().to_string());
                i += 2;
            }
            '`' => {
                // A code span: copied up to the closing backtick, escaped, never converted.
                match chars[i + 1..].iter().position(|&x| x == '`') {
                    Some(end) => {
                        out.push('`');
                        escape_into(out, &chars[i + 1..i + 1 + end].iter().collect::<String>());
                        out.push('`');
                        i += end + 2;
                    }
                    None => {
                        out.push('`');
                        i += 1;
                    }
                }
            }
            '*' | '_' if next == Some(c) => {
                out.push('*');
                i += 2;
            }
            '*' => {
                out.push('_');
                i += 1;
            }
            '~' if next == Some('~') => {
                out.push('~');
                i += 2;
            }
            '[' => match link_at(&chars, i) {
                Some((label, url, end)) => {
                    out.push('<');
                    escape_into(out, &url.replace('|', "%7C"));
                    out.push('|');
                    let mut inner = String::new();
                    inline_to_mrkdwn(&mut inner, &label);
                    out.push_str(&inner.replace('|', "¦"));
                    out.push('>');
                    i = end;
                }
                None => {
                    out.push('[');
                    i += 1;
                }
            },
            c => {
                escape_into(out, &c.to_string());
                i += 1;
            }
        }
    }
}

/// `[label](url)` starting at `start`: the label, the URL and the index after `)`.
fn link_at(chars: &[char], start: usize) -> Option<(String, String, usize)> {
    let mut depth = 0usize;
    let mut close = None;
    for (j, &c) in chars.iter().enumerate().skip(start) {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(j);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close?;
    if chars.get(close + 1) != Some(&'(') {
        return None;
    }
    let end = chars[close + 2..].iter().position(|&c| c == ')')? + close + 2;
    let url: String = chars[close + 2..end].iter().collect();
    let url = url.split_whitespace().next().unwrap_or_default().trim_matches(['<', '>']).to_owned();
    if url.is_empty() {
        return None;
    }
    Some((chars[start + 1..close].iter().collect(), url, end + 1))
}

/// Slack mrkdwn to Markdown: `*b*`→`**b**`, `~s~`→`~~s~~`, `<u|t>`→`[t](u)`, `<u>`→`<u>`, user and channel
/// references to `@id`/`#name`, `<!here>`→`@here`, and the `&amp;`/`&lt;`/`&gt;` escapes undone.
pub fn mrkdwn_to_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut in_code = false;
    let mut in_fence = false;
    while i < chars.len() {
        let c = chars[i];
        if chars[i..].starts_with(&['`', '`', '`']) {
            in_fence = !in_fence;
            out.push_str("```");
            i += 3;
            continue;
        }
        if in_fence || (in_code && c != '`') {
            i += push_unescaped(&mut out, &chars[i..]);
            continue;
        }
        match c {
            '`' => {
                in_code = !in_code;
                out.push('`');
                i += 1;
            }
            '*' => {
                out.push_str("**");
                i += 1;
            }
            '~' => {
                out.push_str("~~");
                i += 1;
            }
            '<' => match chars[i + 1..].iter().position(|&x| x == '>') {
                Some(len) => {
                    let inner: String = chars[i + 1..i + 1 + len].iter().collect();
                    out.push_str(&reference(&inner));
                    i += len + 2;
                }
                None => {
                    out.push('<');
                    i += 1;
                }
            },
            _ => i += push_unescaped(&mut out, &chars[i..]),
        }
    }
    out
}

/// Push one character (or one `&amp;`-style escape, undone); returns how many characters were consumed.
fn push_unescaped(out: &mut String, rest: &[char]) -> usize {
    for (entity, c) in [("&amp;", '&'), ("&lt;", '<'), ("&gt;", '>')] {
        if rest.iter().take(entity.len()).copied().eq(entity.chars()) {
            out.push(c);
            return entity.len();
        }
    }
    out.push(rest[0]);
    1
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// `<…>` in mrkdwn: a link, a user, a channel or a special mention.
fn reference(inner: &str) -> String {
    let (target, label) = match inner.split_once('|') {
        Some((t, l)) => (t, Some(unescape(l))),
        None => (inner, None),
    };
    if let Some(user) = target.strip_prefix('@') {
        return format!("@{}", label.unwrap_or_else(|| user.to_owned()));
    }
    if let Some(channel) = target.strip_prefix('#') {
        return format!("#{}", label.unwrap_or_else(|| channel.to_owned()));
    }
    if let Some(special) = target.strip_prefix('!') {
        let name = special.strip_prefix("subteam^").unwrap_or(special);
        return label.unwrap_or_else(|| format!("@{name}"));
    }
    let url = unescape(target);
    match label {
        Some(label) if !label.is_empty() => format!("[{}]({})", label.replace(['[', ']'], ""), url.replace(')', "%29")),
        _ => format!("<{url}>"),
    }
}

/// A text object (`{"type": "mrkdwn" | "plain_text", "text": …}`) as Markdown.
fn text_object(value: &Value) -> Option<String> {
    let text = value.get("text")?.as_str()?;
    Some(match value.get("type").and_then(Value::as_str) {
        Some("plain_text") => text.to_owned(),
        _ => mrkdwn_to_markdown(text),
    })
}

/// Block Kit `blocks` as Markdown: section (text and fields), header, context, divider, image, and rich_text
/// (sections, lists, quotes, preformatted; text with styles, links, emoji, users, channels). Blocks Slack shows as
/// controls (actions, input) carry no message text and are left out. Blocks are separated by a blank line.
pub fn blocks_to_markdown(blocks: &[Value]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for block in blocks {
        let part = match block.get("type").and_then(Value::as_str) {
            Some("section") => {
                let mut lines = Vec::new();
                if let Some(t) = block.get("text").and_then(text_object) {
                    lines.push(t);
                }
                if let Some(fields) = block.get("fields").and_then(Value::as_array) {
                    lines.extend(fields.iter().filter_map(text_object));
                }
                lines.join("\n")
            }
            Some("header") => block.get("text").and_then(text_object).map(|t| format!("## {}", t.replace('\n', " "))).unwrap_or_default(),
            Some("context") => block
                .get("elements")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .filter_map(|el| text_object(el).or_else(|| el.get("alt_text").and_then(Value::as_str).map(str::to_owned)))
                        .collect::<Vec<_>>()
                        .join(" · ")
                })
                .unwrap_or_default(),
            Some("divider") => "---".to_owned(),
            Some("image") => {
                let alt = block.get("alt_text").and_then(Value::as_str).unwrap_or("image");
                match block.get("image_url").and_then(Value::as_str) {
                    Some(url) => format!("[{}]({})", alt.replace(['[', ']'], ""), url.replace(')', "%29")),
                    None => String::new(),
                }
            }
            Some("rich_text") => block.get("elements").and_then(Value::as_array).map(|e| rich_text(e)).unwrap_or_default(),
            _ => String::new(),
        };
        if !part.trim().is_empty() {
            parts.push(part);
        }
    }
    parts.join("\n\n")
}

fn rich_text(elements: &[Value]) -> String {
    let mut parts = Vec::new();
    for element in elements {
        let inner = element.get("elements").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let part = match element.get("type").and_then(Value::as_str) {
            Some("rich_text_section") => rich_inline(inner),
            Some("rich_text_quote") => rich_inline(inner).lines().map(|l| format!("> {l}")).collect::<Vec<_>>().join("\n"),
            Some("rich_text_preformatted") => {
                let code: String = inner.iter().filter_map(|e| e.get("text").or_else(|| e.get("url")).and_then(Value::as_str)).collect();
                format!("```\n{}\n```", code.trim_end_matches('\n'))
            }
            Some("rich_text_list") => {
                let ordered = element.get("style").and_then(Value::as_str) == Some("ordered");
                let depth = element.get("indent").and_then(Value::as_u64).unwrap_or(0).min(8) as usize;
                inner
                    .iter()
                    .enumerate()
                    .map(|(n, item)| {
                        let items = item.get("elements").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                        let marker = if ordered { format!("{}.", n + 1) } else { "-".to_owned() };
                        format!("{}{marker} {}", "  ".repeat(depth), rich_inline(items))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            _ => String::new(),
        };
        if !part.is_empty() {
            parts.push(part);
        }
    }
    parts.join("\n")
}

fn rich_inline(elements: &[Value]) -> String {
    let mut out = String::new();
    for e in elements {
        let style = |key: &str| e.get("style").and_then(|s| s.get(key)).and_then(Value::as_bool).unwrap_or(false);
        let text = match e.get("type").and_then(Value::as_str) {
            Some("text") => e.get("text").and_then(Value::as_str).unwrap_or_default().to_owned(),
            Some("link") => {
                let url = e.get("url").and_then(Value::as_str).unwrap_or_default();
                match e.get("text").and_then(Value::as_str) {
                    Some(t) if !t.is_empty() => format!("[{}]({})", t.replace(['[', ']'], ""), url.replace(')', "%29")),
                    _ => format!("<{url}>"),
                }
            }
            Some("emoji") => format!(":{}:", e.get("name").and_then(Value::as_str).unwrap_or_default()),
            Some("user") => format!("@{}", e.get("user_id").and_then(Value::as_str).unwrap_or_default()),
            Some("usergroup") => format!("@{}", e.get("usergroup_id").and_then(Value::as_str).unwrap_or_default()),
            Some("channel") => format!("#{}", e.get("channel_id").and_then(Value::as_str).unwrap_or_default()),
            Some("broadcast") => format!("@{}", e.get("range").and_then(Value::as_str).unwrap_or("here")),
            _ => continue,
        };
        if text.is_empty() {
            continue;
        }
        // Markdown markers hug the text: leading and trailing spaces stay outside them.
        let (lead, core, trail) = split_spaces(&text);
        let mut core = core.to_owned();
        if style("code") {
            core = format!("`{core}`");
        }
        if style("strike") {
            core = format!("~~{core}~~");
        }
        if style("italic") {
            core = format!("*{core}*");
        }
        if style("bold") {
            core = format!("**{core}**");
        }
        out.push_str(lead);
        out.push_str(&core);
        out.push_str(trail);
    }
    out
}

fn split_spaces(text: &str) -> (&str, &str, &str) {
    let start = text.len() - text.trim_start().len();
    let end = text.trim_end().len().max(start);
    (&text[..start], &text[start..end], &text[end..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn markdown_to_slack() {
        assert_eq!(markdown_to_mrkdwn("**deploy** done"), "*deploy* done");
        assert_eq!(markdown_to_mrkdwn("see [the log](https://ci.example/1?a=1&b=2)"), "see <https://ci.example/1?a=1&amp;b=2|the log>");
        assert_eq!(markdown_to_mrkdwn("a < b & c > d"), "a &lt; b &amp; c &gt; d");
        assert_eq!(markdown_to_mrkdwn("*it* and ~~gone~~"), "_it_ and ~gone~");
        assert_eq!(markdown_to_mrkdwn("# Title\n- one\n- two"), "*Title*\n• one\n• two");
        assert_eq!(markdown_to_mrkdwn("`a<b **x**`"), "`a&lt;b **x**`");
        assert_eq!(markdown_to_mrkdwn("```\nif a < b {}\n```"), "```\nif a &lt; b {}\n```");
        assert_eq!(markdown_to_mrkdwn(r"\*not italic\*"), "*not italic*");
        assert_eq!(markdown_to_mrkdwn("[**b**](https://x.example)"), "<https://x.example|*b*>");
        assert_eq!(markdown_to_mrkdwn("[not a link] (x)"), "[not a link] (x)");
    }

    #[test]
    fn slack_to_markdown() {
        assert_eq!(mrkdwn_to_markdown("*deploy* _ok_ ~old~"), "**deploy** _ok_ ~~old~~");
        assert_eq!(mrkdwn_to_markdown("<https://x.example/a?b=1&amp;c=2|the run>"), "[the run](https://x.example/a?b=1&c=2)");
        assert_eq!(mrkdwn_to_markdown("<https://x.example>"), "<https://x.example>");
        assert_eq!(mrkdwn_to_markdown("hi <@U123> in <#C1|ops> <!here>"), "hi @U123 in #ops @here");
        assert_eq!(mrkdwn_to_markdown("a &lt; b &amp;&amp; c"), "a < b && c");
        assert_eq!(mrkdwn_to_markdown("`*x*` ```*y*```"), "`*x*` ```*y*```");
    }

    #[test]
    fn blocks() {
        let blocks = json!([
            {"type": "header", "text": {"type": "plain_text", "text": "Deploy finished"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "*prod* is on <https://x.example/v2|v2>"},
             "fields": [{"type": "mrkdwn", "text": "*By:* ci"}, {"type": "plain_text", "text": "took 3m"}]},
            {"type": "divider"},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "pipeline 42"}, {"type": "image", "image_url": "https://x.example/i.png", "alt_text": "logo"}]},
            {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Roll back"}}]},
            {"type": "rich_text", "elements": [
                {"type": "rich_text_section", "elements": [
                    {"type": "text", "text": "Hello "}, {"type": "text", "text": "bold", "style": {"bold": true}},
                    {"type": "text", "text": " "}, {"type": "link", "url": "https://x.example", "text": "site"},
                    {"type": "emoji", "name": "tada"}]},
                {"type": "rich_text_list", "style": "ordered", "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": "first"}]},
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": "second", "style": {"code": true}}]}]},
                {"type": "rich_text_quote", "elements": [{"type": "text", "text": "quoted"}]},
                {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": "x = 1"}]}]},
            {"type": "unknown-kind"}
        ]);
        let md = blocks_to_markdown(blocks.as_array().unwrap());
        assert_eq!(
            md,
            "## Deploy finished\n\n**prod** is on [v2](https://x.example/v2)\n**By:** ci\ntook 3m\n\n---\n\npipeline 42 · logo\n\n\
             Hello **bold** [site](https://x.example):tada:\n1. first\n2. `second`\n> quoted\n```\nx = 1\n```"
        );
    }

    #[test]
    fn hostile_input_does_not_panic() {
        for s in ["[", "[a](", "[a]", "<", "<|>", "`", "```", "**", "\\", "&", "&am", "[]()", "[a](<>)", "é*ü", "\u{0}"] {
            let _ = markdown_to_mrkdwn(s);
            let _ = mrkdwn_to_markdown(s);
        }
        let _ = blocks_to_markdown(&[json!(1), json!({"type": 5}), json!({"type": "rich_text", "elements": [{"type": "rich_text_list", "elements": [1, 2]}]})]);
    }
}
