//! Per-hook overhead on a reused instance and the cost of a fresh instantiation, through the public `PluginHost`
//! API (so the figures include dispatch, health accounting, the epoch deadline and the wall-clock timer).
//! Figures and settings: docs/plugins.md, "Performance".
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use imfree_plugin_host::host::HookCall;

#[path = "../tests/it/support.rs"]
#[allow(dead_code, unreachable_pub, missing_docs)]
mod support;

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

criterion_group!(benches, hooks);
criterion_main!(benches);
