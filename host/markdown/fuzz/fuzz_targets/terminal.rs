#![no_main]
//! `render_terminal_bytes` and `sanitize_plain` (every message the CLI prints): never panic; without colour the output
//! holds no ESC and no control character but `\n`; with colour its only escape sequences are our own SGR styles.
//! The first byte chooses colour, the second the wrap width.
use imfree_markdown::{Options, TerminalOptions, render_terminal_bytes, sanitize_plain, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let color = data.first().is_some_and(|b| b & 1 == 1);
    let width = data.get(1).map_or(0, |b| usize::from(*b));
    let text = data.get(2..).unwrap_or_default();
    let limits = Options { max_input_bytes: 4096, max_nesting: 4, max_output_bytes: 16384, max_table_columns: 8 };
    let out = render_terminal_bytes(text, &TerminalOptions { width, color, limits });
    if !color {
        assert!(!out.contains('\x1b'));
    }
    verify::check_terminal(&out, color).unwrap_or_else(|e| panic!("{e} in {out:?}"));
    verify::check_terminal(&sanitize_plain(&String::from_utf8_lossy(text)), false).unwrap();
});
