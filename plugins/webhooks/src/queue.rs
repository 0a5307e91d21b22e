//! The delivery queue's records. Each pending delivery is one kv entry
//! under `q/<created ms, zero-padded>-<delivery id>`, so keys sort oldest first; the record says when it is due.

use serde::{Deserialize, Serialize};

/// kv prefix of the queue.
pub const PREFIX: &str = "q/";

/// One pending delivery: a rendered body for one target, and its attempts so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Idempotency id, sent as `X-Imfree-Delivery-Id` with every attempt.
    pub id: String,
    /// The target's name (its URL and secret are read from the settings at each attempt).
    pub target: String,
    /// The JSON body, rendered when queued.
    pub body: String,
    /// Attempts made (an attempt is counted before it is made, so one cut short by a crash still counts).
    pub attempts: u32,
    /// Not before this time (ms since the epoch).
    pub due_ms: u64,
    /// When it was queued.
    pub created_ms: u64,
}

/// The kv key of a delivery.
pub fn key(created_ms: u64, id: &str) -> String {
    format!("{PREFIX}{created_ms:016}-{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_age_and_records_round_trip() {
        assert!(key(999, "b") < key(1000, "a"));
        let d = Delivery { id: "x".into(), target: "t".into(), body: "{}".into(), attempts: 2, due_ms: 5, created_ms: 1 };
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Delivery>(&text).unwrap(), d);
    }
}
