//! State shared by every connection: configuration, store, hub, the relay's Noise key, limiters and the handshake
//! replay cache.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imfree_store::{RelayStore, UserId};
use zeroize::Zeroizing;

use crate::config::RelayConfig;
use crate::hub::Hub;
use crate::limits::{ConnectionLimiter, KeyedRateLimiter};
use crate::metrics::RelayMetrics;

/// Everything a connection needs.
pub struct RelayState {
    /// Configuration.
    pub config: RelayConfig,
    /// Persistence.
    pub store: Arc<dyn RelayStore>,
    /// Routing and delivery.
    pub hub: Arc<Hub>,
    /// Metrics.
    pub metrics: Arc<RelayMetrics>,
    /// The relay's Noise static secret.
    pub static_secret: Zeroizing<[u8; 32]>,
    /// Its public key (what clients pin).
    pub static_public: [u8; 32],
    /// Refuses a replayed IK message 1.
    pub replay: ReplayCache,
    /// Envelopes per account.
    pub account_rate: KeyedRateLimiter<UserId>,
    /// Handshakes per IP.
    pub handshake_rate: KeyedRateLimiter<IpAddr>,
    /// Password logins per IP.
    pub login_rate: KeyedRateLimiter<IpAddr>,
    /// Live connections per account.
    pub account_conns: Arc<ConnectionLimiter<UserId>>,
    /// Live connections per IP.
    pub ip_conns: Arc<ConnectionLimiter<IpAddr>>,
    /// Relay-scope plugins.
    pub plugins: Arc<crate::plugins::RelayPlugins>,
    /// Verified membership-log states, so that an append verifies only its own entry.
    pub groups: crate::groups::GroupCache,
    /// Device-linking rendezvous.
    pub links: Arc<crate::link::LinkRendezvous>,
    /// End-to-end encrypted files: chunk directory and ticket key.
    pub files: crate::files::FileService,
    next_conn: AtomicU64,
}

impl RelayState {
    /// Assemble the state.
    pub fn new(
        config: RelayConfig,
        store: Arc<dyn RelayStore>,
        metrics: Arc<RelayMetrics>,
        static_secret: Zeroizing<[u8; 32]>,
    ) -> Arc<Self> {
        let static_public = imfree_crypto::noise::public_of(&static_secret);
        let hub = Hub::start(Arc::clone(&store), Arc::clone(&metrics), config.limits.commit_batch);
        // The author of a message is read from its kept envelope id, so ids live at least as long as edits may come.
        let id_retention = config.limits.dedupe_retention_secs.max(config.limits.edit_window_secs);
        hub.start_pruning(Duration::from_secs(id_retention), Duration::from_secs(config.limits.audit_retention_secs));
        let l = &config.limits;
        Arc::new(RelayState {
            replay: ReplayCache::new(Duration::from_secs(l.handshake_window_secs)),
            account_rate: KeyedRateLimiter::new(l.messages_per_account),
            handshake_rate: KeyedRateLimiter::new(l.handshakes_per_ip),
            login_rate: KeyedRateLimiter::new(l.logins_per_ip),
            account_conns: Arc::new(ConnectionLimiter::new()),
            ip_conns: Arc::new(ConnectionLimiter::new()),
            groups: crate::groups::GroupCache::default(),
            plugins: crate::plugins::RelayPlugins::new(Arc::clone(&store), config.plugin_host.clone(), &config.data_dir, l.protocol.clone()),
            links: crate::link::LinkRendezvous::new(l.linking.clone()),
            files: crate::files::FileService::new(&config.data_dir),
            next_conn: AtomicU64::new(1),
            config,
            store,
            hub,
            metrics,
            static_secret,
            static_public,
        })
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// Remembers the ephemeral keys of recent IK first messages, so that a captured message 1 cannot be replayed
/// within the window (outside the window its timestamp is refused).
pub struct ReplayCache {
    window: Duration,
    seen: Mutex<HashMap<[u8; 32], Instant>>,
}

impl ReplayCache {
    /// A cache remembering keys for `window`.
    pub fn new(window: Duration) -> Self {
        ReplayCache { window, seen: Mutex::new(HashMap::new()) }
    }

    /// Record `key`; false if it was seen within the window.
    pub fn first_sighting(&self, key: [u8; 32], now: Instant) -> bool {
        let mut seen = match self.seen.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if seen.len() > 4096 && seen.len().is_power_of_two() {
            let window = self.window;
            seen.retain(|_, at| now.duration_since(*at) < window);
        }
        match seen.get(&key) {
            Some(at) if now.duration_since(*at) < self.window => false,
            _ => {
                seen.insert(key, now);
                true
            }
        }
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_refuses_within_window_only() {
        let cache = ReplayCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(cache.first_sighting([1; 32], t0));
        assert!(!cache.first_sighting([1; 32], t0 + Duration::from_secs(9)));
        assert!(cache.first_sighting([2; 32], t0));
        assert!(cache.first_sighting([1; 32], t0 + Duration::from_secs(11)));
    }
}
