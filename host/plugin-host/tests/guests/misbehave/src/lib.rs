//! Malicious-plugin corpus in one component: the `mode` setting picks the misbehaviour for every hook, so the
//! tests load the same component under different names and settings.
//!
//! modes: `loop` (never returns), `memory-bomb` (allocates without bound), `recursion` (unbounded recursion),
//! `slow-host-calls` (a tight loop of host calls the test makes slow), `panic` (panics in every hook),
//! `huge-return` (returns far more than the output limit), `panic-odd` (panics on odd calls, counted in kv:
//! proves a fresh instance after a trap and state kept in kv), `ok` (behaves), `panic-init` (init panics).

use std::hint::black_box;

use imfree_plugin_sdk::types::*;
use imfree_plugin_sdk::{Plugin, config, export_plugin, kv};

struct Misbehave;

fn mode() -> String {
    config::get_or("mode", "ok")
}

#[inline(never)]
fn recurse(n: u64, pad: [u8; 256]) -> u64 {
    black_box(pad);
    if n == u64::MAX {
        return 0;
    }
    recurse(black_box(n + 1), black_box(pad)) + 1
}

const HUGE: usize = 4 << 20;

/// Misbehave according to the mode; returns true when the hook should return its huge value.
fn act() -> bool {
    match mode().as_str() {
        "loop" => {
            let mut i = 0u64;
            loop {
                i = black_box(i.wrapping_add(1));
            }
        }
        "memory-bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 << 20]);
                black_box(&hoard);
            }
        }
        "recursion" => {
            black_box(recurse(0, [7; 256]));
        }
        "slow-host-calls" => loop {
            black_box(kv::get("k").ok());
        },
        "panic" => panic!("misbehave panics on purpose"),
        "panic-odd" => {
            let n = kv::increment("calls", 1).expect("kv granted");
            if n % 2 == 1 {
                panic!("odd call {n}");
            }
        }
        "huge-return" => return true,
        _ => {}
    }
    false
}

impl Plugin for Misbehave {
    fn init() -> Result<(), String> {
        if mode() == "panic-init" {
            panic!("init panics on purpose");
        }
        Ok(())
    }
    fn incoming_message(_msg: Message) {
        act();
    }
    fn outgoing_message(mut msg: Message) -> Verdict {
        if act() {
            msg.body = "x".repeat(HUGE);
            return Verdict::Modify(msg);
        }
        Verdict::Pass
    }
    fn relay_envelope(_env: Envelope) -> EnvelopeVerdict {
        if act() {
            return EnvelopeVerdict::Reject("x".repeat(HUGE));
        }
        EnvelopeVerdict::Pass
    }
    fn status_change(_change: StatusChange) {
        act();
    }
    fn command(_cmd: Command) -> Option<String> {
        if act() {
            return Some("x".repeat(HUGE));
        }
        Some("fine".into())
    }
    fn action(_act: Action) {
        act();
    }
    fn http(_req: HttpRequest) -> HttpResponse {
        let huge = act();
        HttpResponse {
            status: 200,
            headers: vec![],
            body: if huge { vec![b'x'; HUGE] } else { b"fine".to_vec() },
        }
    }
    fn timer(_t: TimerFired) {
        act();
    }
}

export_plugin!(Misbehave);
