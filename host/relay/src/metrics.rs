//! Prometheus metrics for the relay, exposed in OpenMetrics text form.
//!
//! Owns the metric definitions and their registry. Labels are `&'static str` chosen by the relay's code, never
//! account names, addresses or anything a client sends, so cardinality stays bounded and no user data leaks into
//! monitoring.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Prefix of every metric name (an underscore separates it from the rest).
pub const PREFIX: &str = "imfree_relay";

/// Outcome label, e.g. `ok`, `bad_password`, `rate_limited`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// The outcome; a fixed string from the relay's code.
    pub result: &'static str,
}

/// Protocol error code label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The error code; a fixed string from the relay's code.
    pub code: &'static str,
}

/// Every relay metric, registered once. Metric handles are cheap to clone and safe to share between tasks.
#[derive(Debug)]
pub struct RelayMetrics {
    /// Open client connections.
    pub connections: Gauge,
    /// Noise handshakes by outcome.
    pub handshakes: Family<ResultLabel, Counter>,
    /// Frames received from clients.
    pub frames_in: Counter,
    /// Frames sent to clients.
    pub frames_out: Counter,
    /// Envelopes accepted for delivery (new).
    pub envelopes_accepted: Counter,
    /// Envelopes dropped as already seen (client retries).
    pub envelopes_duplicate: Counter,
    /// Envelopes delivered to a recipient device.
    pub envelopes_delivered: Counter,
    /// Acknowledgements received from recipients.
    pub acks: Counter,
    /// Errors returned to clients, by protocol error code.
    pub errors: Family<CodeLabel, Counter>,
    /// Envelopes per enqueue batch.
    pub enqueue_batch_size: Histogram,
    /// Time taken by store commits, in seconds.
    pub commit_seconds: Histogram,
    /// Login attempts by outcome.
    pub logins: Family<ResultLabel, Counter>,
    registry: Registry,
}

impl RelayMetrics {
    /// Creates and registers all metrics under the `imfree_relay_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let connections = Gauge::default();
        let handshakes = Family::<ResultLabel, Counter>::default();
        let frames_in = Counter::default();
        let frames_out = Counter::default();
        let envelopes_accepted = Counter::default();
        let envelopes_duplicate = Counter::default();
        let envelopes_delivered = Counter::default();
        let acks = Counter::default();
        let errors = Family::<CodeLabel, Counter>::default();
        // 1, 2, 4 … 1024 envelopes.
        let enqueue_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        // 0.5 ms … ~4 s: SQLite commits are sub-millisecond, a struggling Postgres takes seconds.
        let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let logins = Family::<ResultLabel, Counter>::default();

        // Counters get the `_total` suffix from the encoder.
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register(
            "handshakes",
            "Noise handshakes by result",
            handshakes.clone(),
        );
        registry.register(
            "frames_in",
            "Frames received from clients",
            frames_in.clone(),
        );
        registry.register("frames_out", "Frames sent to clients", frames_out.clone());
        registry.register(
            "envelopes_accepted",
            "Envelopes accepted for delivery",
            envelopes_accepted.clone(),
        );
        registry.register(
            "envelopes_duplicate",
            "Envelopes dropped as duplicates",
            envelopes_duplicate.clone(),
        );
        registry.register(
            "envelopes_delivered",
            "Envelopes delivered to devices",
            envelopes_delivered.clone(),
        );
        registry.register("acks", "Delivery acknowledgements received", acks.clone());
        registry.register("errors", "Errors sent to clients by code", errors.clone());
        registry.register(
            "enqueue_batch_size",
            "Envelopes per enqueue batch",
            enqueue_batch_size.clone(),
        );
        registry.register(
            "commit_seconds",
            "Store commit duration in seconds",
            commit_seconds.clone(),
        );
        registry.register("logins", "Login attempts by result", logins.clone());

        Self {
            connections,
            handshakes,
            frames_in,
            frames_out,
            envelopes_accepted,
            envelopes_duplicate,
            envelopes_delivered,
            acks,
            errors,
            enqueue_batch_size,
            commit_seconds,
            logins,
            registry,
        }
    }

    /// Renders every metric in OpenMetrics text format (serve with content type [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; on the impossible error, serve what was written so far.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// HTTP content type for [`RelayMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_contains_names_and_values() {
        let metrics = RelayMetrics::new();
        metrics.connections.inc();
        metrics.connections.inc();
        metrics.connections.dec();
        metrics.frames_in.inc_by(3);
        metrics
            .handshakes
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        metrics
            .logins
            .get_or_create(&ResultLabel {
                result: "bad_password",
            })
            .inc();
        metrics
            .errors
            .get_or_create(&CodeLabel {
                code: "rate_limited",
            })
            .inc();
        metrics.enqueue_batch_size.observe(5.0);
        metrics.commit_seconds.observe(0.002);

        let text = metrics.encode();
        for needle in [
            "imfree_relay_connections 1",
            "imfree_relay_frames_in_total 3",
            "imfree_relay_frames_out_total 0",
            "imfree_relay_handshakes_total{result=\"ok\"} 1",
            "imfree_relay_logins_total{result=\"bad_password\"} 1",
            "imfree_relay_errors_total{code=\"rate_limited\"} 1",
            "imfree_relay_envelopes_accepted_total 0",
            "imfree_relay_envelopes_duplicate_total 0",
            "imfree_relay_envelopes_delivered_total 0",
            "imfree_relay_acks_total 0",
            "imfree_relay_enqueue_batch_size_count 1",
            "imfree_relay_commit_seconds_count 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
