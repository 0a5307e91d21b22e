#![no_main]
//! `render_html_bytes` (every Markdown message the web client shows): never panics, and the output holds only
//! allowlisted elements and attributes — no `<script`, no link but http/https/mailto — nested no deeper than the
//! limits allow. Small limits, so the fuzzer also explores truncation and flattening.
use imfree_markdown::{Options, render_html_bytes, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = Options { max_input_bytes: 4096, max_nesting: 4, max_output_bytes: 16384, max_table_columns: 8 };
    let out = render_html_bytes(data, &options);
    let depth = verify::check_html(&out).unwrap_or_else(|e| panic!("{e} in {out:?}"));
    assert!(depth <= 3 * options.max_nesting + 5, "nesting {depth}");
    assert!(!out.to_ascii_lowercase().contains("<script"));
    assert!(out.len() <= options.max_output_bytes + 64);
});
