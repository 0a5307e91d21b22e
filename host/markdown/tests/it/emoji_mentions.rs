//! `:shortcode:` emoji and `@user` mentions, in and out of code.

use imfree_markdown::{emoji_search, mentions, shortcode};

use crate::{html, strip_sgr, term};

#[test]
fn shortcodes_outside_code_become_emoji() {
    assert_eq!(html(":tada: :+1: :thumbsup: :heart:"), "<p>🎉 👍 👍 ❤️</p>\n");
    assert_eq!(term(":tada: done", 80).0, "🎉 done\n");
    assert_eq!(html("**:tada:** [:rocket:](https://a.example)"), format!(
        "<p><strong>🎉</strong> <a href=\"https://a.example\" target=\"_blank\" rel=\"noopener noreferrer nofollow\">🚀</a></p>\n"
    ));
}

#[test]
fn shortcodes_in_code_unknown_ones_and_unicode_emoji_stay() {
    assert_eq!(html("`:tada:`"), "<p><code>:tada:</code></p>\n");
    assert_eq!(html("```\n:tada:\n```"), "<pre><code>:tada:\n</code></pre>\n");
    assert_eq!(html(":not_an_emoji: :TADA: : tada:"), "<p>:not_an_emoji: :TADA: : tada:</p>\n");
    assert_eq!(html("🎉 👍🏽 🏳️‍🌈"), "<p>🎉 👍🏽 🏳️‍🌈</p>\n");
    assert_eq!(term("`:tada:`\n\n```\n:tada:\n```", 80).0, "`:tada:`\n\n    :tada:\n");
    assert_eq!(html("<https://a.example/:tada:/>"), "<p><a href=\"https://a.example/:tada:/\" target=\"_blank\" rel=\"noopener noreferrer nofollow\">https://a.example/:tada:/</a></p>\n");
}

#[test]
fn shortcode_lookup_and_search() {
    assert_eq!(shortcode("tada"), Some("🎉"));
    assert_eq!(shortcode("+1"), Some("👍"));
    assert_eq!(shortcode("thumbsup"), Some("👍"));
    assert_eq!(shortcode("nope"), None);
    assert_eq!(shortcode(":tada:"), None);

    let found = emoji_search("tada", 5);
    assert_eq!((found[0].shortcode, found[0].emoji, found[0].name), ("tada", "🎉", "party popper"));
    let thumbs = emoji_search(":Thumbs", 10);
    assert!(thumbs.iter().any(|m| m.emoji == "👍") && thumbs.iter().all(|m| m.shortcode.starts_with("thumbs")), "{thumbs:?}");
    // Word prefixes after the first: "cat" finds "smiley_cat" after the shortcodes that start with "cat".
    let cats = emoji_search("cat", 50);
    assert_eq!(cats[0].shortcode, "cat");
    assert!(cats.iter().any(|m| m.shortcode == "smiley_cat"), "{cats:?}");
    let mut unique: Vec<_> = cats.iter().map(|m| m.emoji).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), cats.len(), "each emoji once");
    assert_eq!(emoji_search("", 3).len(), 3);
    assert!(emoji_search("zzzzzz", 10).is_empty());
    assert!(emoji_search("a", 0).is_empty());
}

#[test]
fn mentions_are_extracted_outside_code_in_order_once() {
    assert_eq!(mentions("hi @alice and @bob, @alice again"), ["alice", "bob"]);
    assert_eq!(mentions("`@code` and\n```\n@block\n```\n@real"), ["real"]);
    assert_eq!(mentions("```\n@block\n```\n\n> @quoted\n- @listed\n\n**@bold** [@linked](https://a.example)"), ["quoted", "listed", "bold", "linked"]);
    assert_eq!(mentions("mail bob@a.example or <carol@a.example> or <https://a.example/@dave>"), Vec::<String>::new());
    assert_eq!(mentions("@Bob @bob. @a.b-c_d @-x @"), ["bob", "a.b-c_d"]);
    assert_eq!(mentions(&format!("@{}", "a".repeat(65))), Vec::<String>::new());
    assert_eq!(mentions(&format!("@{}", "a".repeat(64))), ["a".repeat(64)]);
}

#[test]
fn mentions_are_highlighted() {
    assert_eq!(html("hi @bob"), "<p>hi <span class=\"mention\">@bob</span></p>\n");
    assert_eq!(html("`@bob`"), "<p><code>@bob</code></p>\n");
    let (plain, color) = term("hi @bob", 80);
    assert_eq!(plain, "hi @bob\n");
    assert_eq!(color, "hi \x1b[0;1;35m@bob\x1b[0m\n");
    assert_eq!(strip_sgr(&color), plain);
}
