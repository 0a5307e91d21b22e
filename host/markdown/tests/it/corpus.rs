//! The fuzz corpora (host/markdown/fuzz/corpus/<target>/) replayed as ordinary tests, through the same calls and
//! checks as the fuzz targets, so that every input that ever found a bug keeps being checked without a fuzzer.

use imfree_markdown::{Options, TerminalOptions, render_html_bytes, render_terminal_bytes, sanitize_plain, verify};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus {target}");
    out
}

#[test]
fn html_corpus() {
    for (name, data) in corpus("html") {
        let out = render_html_bytes(&data, &Options::default());
        verify::check_html(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!out.to_ascii_lowercase().contains("<script"), "{name}");
    }
}

#[test]
fn terminal_corpus() {
    for (name, data) in corpus("terminal") {
        // The same split as the fuzz target: first byte chooses colour, second the width.
        let color = data.first().is_some_and(|b| b & 1 == 1);
        let width = data.get(1).map_or(0, |b| usize::from(*b));
        let text = data.get(2..).unwrap_or_default();
        let out = render_terminal_bytes(text, &TerminalOptions { width, color, ..Default::default() });
        verify::check_terminal(&out, color).unwrap_or_else(|e| panic!("{name}: {e}"));
        let plain = sanitize_plain(&String::from_utf8_lossy(text));
        verify::check_terminal(&plain, false).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
