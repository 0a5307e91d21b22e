//! Per-hook overhead on a reused instance and the cost of a fresh instantiation, through the public `PluginHost`
//! API (so the figures include dispatch, health accounting, the epoch deadline and the wall-clock timer).
//! Also an outbound HTTP GET through wasi:http to a server on loopback, and a refused one (policy cost only); and
//! the `twins` group compares the Rust and JavaScript auto-reply examples. Figures and settings: docs/plugins.md,
//! "Performance".
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use imfree_plugin_host::host::HookCall;

#[path = "../tests/it/support.rs"]
#[allow(dead_code, unreachable_pub, missing_docs)]
mod support;

#[path = "../tests/it/js_guest.rs"]
#[allow(dead_code, unreachable_pub, missing_docs)]
mod js_guest;

fn hooks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let h = support::harness();
    rt.block_on(h.load_probe("probe", "", ""));
    let env = support::envelope(10);
    c.bench_function("hook call, reused instance (relay-envelope -> pass)", |b| {
        b.to_async(&rt)
            .iter(|| h.host.call("probe", HookCall::RelayEnvelope(env.clone())))
    });
    let msg = support::message("hello");
    c.bench_function("hook call, reused instance (outgoing-message -> pass)", |b| {
        b.to_async(&rt)
            .iter(|| h.host.call("probe", HookCall::OutgoingMessage(msg.clone())))
    });
    c.bench_function("fresh instantiation (InstancePre + pooling) + init", |b| {
        b.to_async(&rt).iter(|| h.host.recycle("probe"))
    });
}

/// A minimal HTTP/1.1 server on 127.0.0.1: reads a request head, answers 200 with a short body, closes.
async fn loopback_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    .await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

fn outbound_http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let h = support::harness();
    let addr = rt.block_on(loopback_server());
    let origin = format!("http://{addr}");
    rt.block_on(h.load_probe(
        "fetcher",
        &format!("http.outbound = [{origin:?}]"),
        &format!("grants = {{ http-outbound = [{origin:?}], http-allow-private = true }}"),
    ));
    rt.block_on(h.load_probe("refused", &format!("http.outbound = [{origin:?}]"), ""));
    let get = support::command("http-get", &format!("{origin}/"));
    c.bench_function("command hook making one outbound GET to loopback (granted)", |b| {
        b.to_async(&rt).iter(|| h.host.call("fetcher", HookCall::Command(get.clone())))
    });
    c.bench_function("command hook making one outbound GET that the host refuses (not granted)", |b| {
        b.to_async(&rt).iter(|| h.host.call("refused", HookCall::Command(get.clone())))
    });
}

/// The auto-reply twins (Rust and JavaScript) side by side: size and compile time (printed, measured once: a
/// compile takes seconds for the JavaScript one), fresh instantiation + init, and two hook calls on a reused
/// instance: `command` (one kv host call) and `incoming-message` without the keyword (one config host call).
fn twins(c: &mut Criterion) {
    use imfree_plugin_host::{ComponentInspector, HostOptions, PluginManifest};
    use std::path::Path;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins");
    let uncached = ComponentInspector::new(&HostOptions::default()).expect("engine");
    for (example, wasm) in [
        ("auto-reply", support::guest("auto-reply")),
        ("auto-reply-js", js_guest::js_guest("auto-reply-js")),
    ] {
        let report = uncached.inspect(&wasm);
        assert!(report.ok(), "{:?}", report.problems);
        println!(
            "{example}: component {} bytes, compiled in {} ms (release host, no cache)",
            wasm.len(),
            report.compile_time.as_millis()
        );
        let manifest = PluginManifest::from_path(&examples.join(example).join("plugin.toml")).expect("manifest");
        let mut config = support::admin("grants = { kv = true, messaging = true }");
        config.limits.memory_mib = 128;
        let h = support::harness();
        rt.block_on(h.host.load_bytes(manifest, config, wasm)).expect("loads");
        let cmd = support::command(example, "");
        c.bench_function(
            &format!("{example}: hook call, reused instance (command, 1 kv get)"),
            |b| {
                b.to_async(&rt)
                    .iter(|| h.host.call(example, HookCall::Command(cmd.clone())))
            },
        );
        let msg = support::message("nothing to see");
        c.bench_function(
            &format!("{example}: hook call, reused instance (incoming-message, no keyword)"),
            |b| {
                b.to_async(&rt)
                    .iter(|| h.host.call(example, HookCall::IncomingMessage(msg.clone())))
            },
        );
        c.bench_function(&format!("{example}: fresh instantiation + init"), |b| {
            b.to_async(&rt).iter(|| h.host.recycle(example))
        });
    }
}

criterion_group!(benches, hooks, outbound_http, twins);
criterion_main!(benches);
