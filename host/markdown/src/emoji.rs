//! Emoji shortcodes (`:tada:`), from the gemoji set that GitHub, Slack and most chat clients share, through the
//! `emojis` crate (compile-time perfect hash tables: no data file, no allocation, O(1) look-up).

/// The longest shortcode we look for; gemoji's longest is under 40 characters. Bounds the scan at each `:`.
pub(crate) const MAX_SHORTCODE_LEN: usize = 48;

/// The characters a shortcode is made of (gemoji uses lower-case letters, digits, `_`, `+` and `-`).
pub(crate) fn is_shortcode_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '+' | '-')
}

/// The emoji a shortcode stands for, without the colons: `shortcode("tada") == Some("🎉")`. `+1` and `thumbsup` are
/// both 👍. `None` for a name gemoji does not know.
///
/// ```
/// assert_eq!(imfree_markdown::shortcode("+1"), Some("👍"));
/// assert_eq!(imfree_markdown::shortcode("no_such_emoji"), None);
/// ```
pub fn shortcode(name: &str) -> Option<&'static str> {
    emojis::get_by_shortcode(name).map(|e| e.as_str())
}

/// One result of [`emoji_search`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmojiMatch {
    /// The shortcode that matched, without colons (`tada`).
    pub shortcode: &'static str,
    /// The emoji itself (`🎉`).
    pub emoji: &'static str,
    /// Its Unicode CLDR name (`party popper`), for a picker's tooltip or an accessible label.
    pub name: &'static str,
}

/// Emoji for a picker or autocompletion: the emoji whose shortcode is `prefix` first, then those with a shortcode
/// starting with `prefix`, then those with a word of a shortcode (after `_`) starting with it, each group in Unicode's
/// order and each emoji once, at most `limit` in all. Surrounding colons and case in `prefix` are ignored; an empty
/// prefix lists emoji in Unicode's order.
///
/// ```
/// let found = imfree_markdown::emoji_search(":tad", 5);
/// assert_eq!(found[0].emoji, "🎉");
/// ```
pub fn emoji_search(prefix: &str, limit: usize) -> Vec<EmojiMatch> {
    let prefix = prefix.trim().trim_matches(':').to_ascii_lowercase();
    let mut found: Vec<EmojiMatch> = Vec::new();
    if limit == 0 {
        return found;
    }
    let matched = |e: &'static emojis::Emoji, code: &'static str| EmojiMatch { shortcode: code, emoji: e.as_str(), name: e.name() };
    if let Some(e) = emojis::get_by_shortcode(&prefix)
        && let Some(code) = e.shortcodes().find(|c| *c == prefix)
    {
        found.push(matched(e, code));
    }
    let tiers: [&dyn Fn(&str) -> bool; 2] = [&|code: &str| code.starts_with(&prefix), &|code: &str| {
        code.split('_').skip(1).any(|word| word.starts_with(&prefix))
    }];
    for tier in tiers {
        for e in emojis::iter() {
            if found.len() >= limit {
                return found;
            }
            if found.iter().any(|f| f.emoji == e.as_str()) {
                continue;
            }
            if let Some(code) = e.shortcodes().find(|c| tier(c)) {
                found.push(matched(e, code));
            }
        }
    }
    found.truncate(limit);
    found
}
