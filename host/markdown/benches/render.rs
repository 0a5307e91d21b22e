//! Rendering cost of a typical chat message and of a pathological one, for both renderers:
//!   cargo bench -p imfree-markdown --bench render
//! Results are recorded in docs/performance.md ("Message formatting").
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use imfree_markdown::{Options, TerminalOptions, render_html, render_terminal};

/// About 500 bytes of what people actually send: emphasis, a link, a mention, emoji, a short list and code.
fn typical() -> String {
    let src = "Hey @alice, **the build is green** again :tada: — see [the CI run](https://ci.example/runs/4711) \
               for details.\n\nWhat changed:\n\n- fixed the *flaky* relay test\n- bumped `pulldown-cmark` to 0.13\n\
               - [x] docs updated\n- [ ] the web client renders the same HTML\n\n> Don't forget to rebase before \
               merging; the *release* branch is cut on **Friday** and ~~nobody~~ everyone wants a green main.\n\n\
               ```sh\ncargo test --workspace\ncargo bench -p imfree-markdown\n```\n\nThanks :+1: @bob, @carol :heart:";
    assert!((450..=550).contains(&src.len()), "{} bytes", src.len());
    src.to_owned()
}

/// 64 KiB of the worst we know: deep quotes and lists, unmatched brackets and emphasis, `<` and entities that html5ever
/// must decode again, a wide table with many short rows, and a reference link used over and over.
fn pathological() -> String {
    let mut src = String::new();
    src.push_str(&">".repeat(8000));
    src.push_str(" deep\n\n");
    src.push_str(&"- ".repeat(4000));
    src.push_str("x\n\n");
    src.push_str(&"[".repeat(8000));
    src.push_str("\n\n");
    src.push_str(&"*a **b ".repeat(1000));
    src.push_str("\n\n");
    src.push_str(&"<&".repeat(4000));
    src.push_str("\n\n");
    src.push_str(&format!("{}\n{}\n{}", "|a".repeat(30), "|-".repeat(30), "a\n".repeat(4000)));
    src.push_str("\n[r]: https://a.example/long/url\n\n");
    while src.len() < 64 * 1024 - 3 {
        src.push_str("[r]");
    }
    src.truncate(64 * 1024);
    src
}

fn bench(c: &mut Criterion) {
    let options = Options::default();
    let terminal = TerminalOptions { width: 100, color: true, ..Default::default() };
    for (name, src) in [("typical 500 B", typical()), ("pathological 64 KiB", pathological())] {
        c.bench_function(&format!("render_html {name}"), |b| b.iter(|| render_html(black_box(&src), &options)));
        c.bench_function(&format!("render_terminal {name}"), |b| b.iter(|| render_terminal(black_box(&src), &terminal)));
    }
    for (name, src) in [("64 KiB of <", "<".repeat(64 * 1024)), ("32 Ki nbsp", "\u{a0}".repeat(32 * 1024))] {
        c.bench_function(&format!("render_html {name}"), |b| b.iter(|| render_html(black_box(&src), &options)));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
