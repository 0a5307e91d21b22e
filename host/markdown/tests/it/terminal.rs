//! The terminal renderer: layout, styles, and above all that no message can drive the terminal.

use imfree_markdown::{TerminalOptions, render_terminal, sanitize_plain, verify};

use crate::{strip_sgr, term};

/// Escape sequences and controls a hostile message might carry, with what each would do if it reached a terminal.
const ATTACKS: &[(&str, &str)] = &[
    ("\x1b[2J\x1b[H", "clear the screen and home the cursor"),
    ("\x1b[1A\x1b[2K", "move up and erase the line above (fake earlier output)"),
    ("\x1b]0;pwned\x07", "set the window title (OSC 0, BEL-terminated)"),
    ("\x1b]2;pwned\x1b\\", "set the window title (OSC 2, ST-terminated)"),
    ("\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", "an OSC 8 hyperlink hiding its target"),
    ("\x1b]52;c;cm0gLXJmIH4=\x07", "write the clipboard (OSC 52)"),
    ("\x1bP+q544e\x1b\\", "a DCS request (terminal answers into the input)"),
    ("\x1b[6n", "a cursor position report request"),
    ("\u{9b}31m\u{9b}2J", "8-bit CSI"),
    ("\u{9d}0;pwned\u{9c}", "8-bit OSC and ST"),
    ("\u{85}", "NEL, a C1 line break"),
    ("\x07\x07", "BEL"),
    ("secret\x08\x08\x08\x08\x08\x08public", "backspaces overwriting text"),
    ("rm -rf ~\rls      ", "a carriage return overwriting the line"),
    ("\x1bc", "full reset (RIS)"),
    ("\x1b#8", "fill the screen with E (DECALN)"),
    ("user\u{202e}gnp.exe", "RIGHT-TO-LEFT OVERRIDE"),
    ("\u{2066}\u{2067}\u{2068}\u{2069}\u{202a}\u{202b}\u{202c}\u{202d}", "bidi isolates and embeddings"),
    ("\x7f\x00\x0b\x0c", "DEL, NUL, VT, FF"),
];

/// Places in a message where text ends up in the output.
fn contexts(attack: &str) -> Vec<String> {
    vec![
        attack.to_owned(),
        format!("**{attack}** *{attack}* ~~{attack}~~"),
        format!("`{attack}`"),
        format!("```\n{attack}\n```"),
        format!("```{attack}\nx\n```"),
        format!("# {attack}"),
        format!("> {attack}"),
        format!("- {attack}\n- [x] {attack}"),
        format!("[{attack}](https://a.example/{attack})"),
        format!("[x](<https://a.example/{attack}>)"),
        format!("![{attack}](https://a.example/{attack} \"{attack}\")"),
        format!("<https://a.example/{attack}>"),
        format!("| {attack} | b |\n|---|---|\n| {attack} | c |"),
        format!("<div>\n{attack}\n</div>"),
        format!("a <span title=\"{attack}\">{attack}</span>"),
        format!("[r]\n\n[r]: https://a.example/{attack}"),
        format!("@bob{attack} :tada:{attack}"),
    ]
}

#[test]
fn no_message_can_drive_the_terminal() {
    for (attack, what) in ATTACKS {
        for src in contexts(attack) {
            let (plain, color) = term(&src, 80);
            assert!(!plain.contains('\x1b'), "{what}: ESC in {plain:?}");
            assert!(!strip_sgr(&color).contains('\x1b'), "{what}: foreign ESC in {color:?}");
            for out in [&plain, &color] {
                for c in ['\x07', '\x08', '\r', '\u{9b}', '\u{9d}', '\u{85}', '\u{202e}', '\u{2066}', '\x00', '\x7f'] {
                    assert!(!out.contains(c), "{what}: {c:?} in {out:?}");
                }
            }
            let (plain, color) = term(&src, 0);
            verify::check_terminal(&plain, false).unwrap();
            verify::check_terminal(&color, true).unwrap();
        }
        let plain = sanitize_plain(attack);
        verify::check_terminal(&plain, false).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

#[test]
fn controls_are_shown_not_hidden() {
    assert_eq!(sanitize_plain("\x1b[2Jhi"), "␛[2Jhi");
    assert_eq!(sanitize_plain("secret\x08\x08public"), "secret␈␈public");
    assert_eq!(sanitize_plain("a\rb\r\nc"), "a␍b\nc");
    assert_eq!(sanitize_plain("user\u{202e}gnp.exe"), "usergnp.exe");
    assert_eq!(sanitize_plain("\u{9b}31m"), "\u{fffd}31m");
    assert_eq!(term("a\x1b[31mred", 80).0, "a␛[31mred\n");
}

#[test]
fn layout_without_color() {
    let src = "# Title\n\nSome **bold**, *it*, ~~gone~~ and `code` for @bob :tada:\nnext line\n\n> quoted\n>\n> > inner\n\n\
               - a\n- b\n  - c\n\n3. three\n4. four\n\n- [x] done\n- [ ] todo\n\n[link](https://a.example) <https://b.example>\n\n\
               ![cat](https://c.example/cat.png)\n\n```rust\nfn main() {}\n```\n\n| a | b |\n|---|---|\n| 1 | 22 |\n\n---\n\nend";
    let (plain, _) = term(src, 80);
    assert_eq!(
        plain,
        "# Title\n\nSome bold, it, ~~gone~~ and `code` for @bob 🎉\nnext line\n\n│ quoted\n│\n│ │ inner\n\n\
         • a\n• b\n  • c\n\n3. three\n4. four\n\n• [x] done\n• [ ] todo\n\nlink <https://a.example> https://b.example\n\n\
         🖼 cat <https://c.example/cat.png>\n\n    fn main() {}\n\na │ b\n──┼───\n1 │ 22\n\n\
         ────────────────────────────────────────\n\nend\n"
    );
}

#[test]
fn styles_with_color() {
    let (_, color) = term("**b** *i* ~~s~~ `c` @bob [l](https://a.example)\n\n> q", 80);
    assert_eq!(
        color,
        "\x1b[0;1mb\x1b[0m \x1b[0;3mi\x1b[0m \x1b[0;9ms\x1b[0m \x1b[0;36mc\x1b[0m \x1b[0;1;35m@bob\x1b[0m \
         \x1b[0;4ml\x1b[0m \x1b[0;2;34m<https://a.example>\x1b[0m\n\n\x1b[0;2m│ \x1b[0mq\n"
    );
}

#[test]
fn paragraphs_wrap_at_the_width() {
    let src = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore";
    for width in [20, 33, 50] {
        let out = render_terminal(&format!("{src}\n\n> {src}\n\n- {src}"), &TerminalOptions { width, ..Default::default() });
        for line in out.lines() {
            assert!(line.chars().count() <= width, "{line:?} wider than {width}");
        }
        assert_eq!(out.split_whitespace().filter(|w| *w == "incididunt").count(), 3);
    }
    // No wrapping at width 0; a word longer than the width overflows rather than being cut.
    assert_eq!(render_terminal(src, &TerminalOptions { width: 0, ..Default::default() }), format!("{src}\n"));
    assert_eq!(render_terminal("aaaaaaaaaa bb", &TerminalOptions { width: 4, ..Default::default() }), "aaaaaaaaaa\nbb\n");
}
