//! Huge nesting, huge inputs, amplification and malformed input: everything completes (the bench measures how
//! fast), output nesting and size stay bounded, nothing panics.

use imfree_markdown::{Options, TRUNCATION_MARKER, TerminalOptions, render_html_bytes, render_terminal, render_terminal_bytes, verify};

use crate::{html, html_with, term};

/// The deepest HTML nesting the limits allow: per block level a list and its item, then a leaf block (a table is
/// table, tbody, tr, td), then inline wrappers, then a code span or a mention.
fn depth_bound(options: &Options) -> usize {
    2 * options.max_nesting + 4 + options.max_nesting + 1
}

/// The widest line prefix (quote bars, list indentation and bullets, styles removed) of a terminal output.
fn terminal_nesting(out: &str) -> usize {
    crate::strip_sgr(out)
        .lines()
        .map(|line| line.chars().take_while(|c| matches!(c, '│' | ' ' | '•')).count())
        .max()
        .unwrap_or(0)
}

fn pathological() -> Vec<(&'static str, String)> {
    vec![
        ("10,000 block quotes", format!("{} deep", ">".repeat(10_000))),
        ("10,000 quote lines", (1..=10_000).map(|i| format!("{}x\n", "> ".repeat(i % 300))).collect()),
        ("10,000 list levels", format!("{}x", "- ".repeat(10_000))),
        ("10,000 indented list levels", (0..10_000).map(|i| format!("{}- x\n", "  ".repeat(i))).collect()),
        ("10,000 ordered levels", format!("{}x", "1. ".repeat(10_000))),
        ("quotes in lists", format!("{}x", "- > ".repeat(5_000))),
        ("100,000 [", "[".repeat(100_000)),
        ("100,000 ]", "]".repeat(100_000)),
        ("100,000 [](", "[](".repeat(100_000)),
        ("100,000 *", "*".repeat(100_000)),
        ("100,000 _", "_".repeat(100_000)),
        ("100,000 ~", "~".repeat(100_000)),
        ("100,000 `", "`".repeat(100_000)),
        ("100,000 <", "<".repeat(100_000)),
        ("nested emphasis", format!("{}x{}", "*a **b ".repeat(10_000), "** a*".repeat(10_000))),
        ("nested links", format!("{}x{}", "[".repeat(10_000), "](https://a.example)".repeat(10_000))),
        ("nested strikethrough", format!("{}x{}", "~~a ".repeat(10_000), " a~~".repeat(10_000))),
        ("emphasis runs", "*a ".repeat(30_000)),
        ("colons", ":".repeat(100_000)),
        ("shortcode-like", ":a".repeat(50_000)),
        ("ats", "@a".repeat(50_000)),
        ("wide table rows", format!("{}\n{}\n{}", "|a".repeat(30), "|-".repeat(30), "a\n".repeat(30_000))),
        ("too wide a table", format!("{}\n{}\n{}", "|a".repeat(3_000), "|-".repeat(3_000), "a\n".repeat(20_000))),
        ("reference amplification", format!("[a]: https://a.example/{}\n\n{}", "x".repeat(30_000), "[a]".repeat(10_000))),
        ("entities", "&amp;".repeat(20_000)),
        ("nbsp", "\u{a0}".repeat(40_000)),
        ("escapes", "\x1b[2J".repeat(20_000)),
    ]
}

#[test]
fn pathological_input_completes_with_bounded_nesting_and_size() {
    let options = Options::default();
    let marker_room = TRUNCATION_MARKER.len() + 64;
    for (name, src) in pathological() {
        let (out, depth) = html_with(&src, &options);
        assert!(depth <= depth_bound(&options), "{name}: HTML nesting {depth}");
        assert!(out.len() <= options.max_output_bytes + marker_room, "{name}: {} bytes of HTML", out.len());
        let (plain, color) = term(&src, 80);
        for out in [&plain, &color] {
            assert!(out.len() <= options.max_output_bytes + marker_room, "{name}: {} bytes of text", out.len());
            assert!(terminal_nesting(out) <= 4 * options.max_nesting + 4, "{name}: prefix {}", terminal_nesting(out));
        }
    }
}

#[test]
fn nesting_limit_flattens_instead_of_dropping_content() {
    let options = Options { max_nesting: 3, ..Options::default() };
    let (out, depth) = html_with(&format!("{} deep", ">".repeat(50)), &options);
    assert_eq!(out, "<blockquote>\n<blockquote>\n<blockquote>\n<p>deep</p>\n</blockquote>\n</blockquote>\n</blockquote>\n");
    assert_eq!(depth, 4);
    let (out, _) = html_with("- a\n  - b\n    - c\n      - d\n        - e", &options);
    assert!(out.contains("c<br>• d<br>• e"), "{out}");
    let text = render_terminal("- a\n  - b\n    - c\n      - d", &TerminalOptions { limits: options.clone(), ..Default::default() });
    assert_eq!(text, "• a\n  • b\n    • c\n      • d\n");
    let text = render_terminal("- a\n  - b\n    - c\n      - d\n        - e", &TerminalOptions { limits: options, ..Default::default() });
    assert_eq!(text, "• a\n  • b\n    • c\n      • d\n      • e\n");
}

#[test]
fn raised_limits_still_complete() {
    // With the input limit out of the way the parser itself sees all 100,000 characters.
    let options = Options { max_input_bytes: 1 << 20, max_output_bytes: 4 << 20, ..Options::default() };
    for (name, src) in pathological() {
        let (_, depth) = html_with(&src, &options);
        assert!(depth <= depth_bound(&options), "{name}: HTML nesting {depth}");
        let out = render_terminal(&src, &TerminalOptions { limits: options.clone(), ..Default::default() });
        verify::check_terminal(&out, false).unwrap();
    }
}

#[test]
fn long_input_is_cut_with_a_marker() {
    let options = Options { max_input_bytes: 10, ..Options::default() };
    let (out, _) = html_with("0123456789abcdef", &options);
    assert_eq!(out, format!("<p>0123456789</p>\n<p>{TRUNCATION_MARKER}</p>\n"));
    let out = render_terminal("0123456789abcdef", &TerminalOptions { limits: options.clone(), ..Default::default() });
    assert_eq!(out, format!("0123456789\n{TRUNCATION_MARKER}\n"));
    // Never inside a character.
    let (out, _) = html_with("ééééééé", &options);
    assert_eq!(out, format!("<p>ééééé</p>\n<p>{TRUNCATION_MARKER}</p>\n"));
}

#[test]
fn long_output_is_cut_with_a_marker() {
    let options = Options { max_output_bytes: 1000, ..Options::default() };
    let src = "word ".repeat(1000);
    let (out, _) = html_with(&src, &options);
    assert!(out.len() <= 1000 + TRUNCATION_MARKER.len() + 16 && out.ends_with(&format!("<p>{TRUNCATION_MARKER}</p>\n")), "{out}");
    for color in [false, true] {
        let out = render_terminal(&src, &TerminalOptions { width: 0, color, limits: options.clone() });
        verify::check_terminal(&out, color).unwrap();
        assert!(out.len() <= 1000 + TRUNCATION_MARKER.len() + 8 && out.ends_with(&format!("{TRUNCATION_MARKER}\n")), "{out}");
    }
}

#[test]
fn malformed_markdown_renders() {
    assert_eq!(html("```rust\nfn main() {"), "<pre><code class=\"language-rust\">fn main() {</code></pre>\n");
    assert_eq!(html("~~~\nunclosed"), "<pre><code>unclosed</code></pre>\n");
    assert_eq!(html("[link](https://a.example"), "<p>[link](https://a.example</p>\n");
    assert_eq!(html("**unclosed *emphasis"), "<p>**unclosed *emphasis</p>\n");
    assert_eq!(html("<div>unclosed"), "<p>&lt;div&gt;unclosed</p>\n");
    assert_eq!(html("| a |\n|---|\n| b | c | d |"), "<table>\n<thead><tr><th>a</th></tr></thead>\n<tbody>\n<tr><td>b</td></tr>\n</tbody>\n</table>\n");
    assert_eq!(html(""), "");
    let (plain, _) = term("```\nunclosed", 80);
    assert_eq!(plain, "    unclosed\n");
    assert_eq!(term("", 80).0, "");
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    let src = b"ok \xff\xfe <script>\xc3 **b** \xed\xa0\x80";
    let out = render_html_bytes(src, &Options::default());
    verify::check_html(&out).unwrap();
    assert_eq!(out, "<p>ok \u{fffd}\u{fffd} &lt;script&gt;\u{fffd} <strong>b</strong> \u{fffd}\u{fffd}\u{fffd}</p>\n");
    let out = render_terminal_bytes(src, &TerminalOptions::default());
    verify::check_terminal(&out, false).unwrap();
    assert!(out.starts_with("ok \u{fffd}\u{fffd} <script>"), "{out}");
    // Over the input limit, the bytes entry point shows the marker too.
    let options = Options { max_input_bytes: 4, ..Options::default() };
    assert!(render_html_bytes(b"abcdefgh", &options).contains(TRUNCATION_MARKER));
}
