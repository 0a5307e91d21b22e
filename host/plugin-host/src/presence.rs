//! `status-change` carries the previous state; embedders learn only the current one. [`PresenceTracker`] keeps the
//! last state told to plugins per user and turns each new one into a change (or nothing, when nothing changed).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Presence, StatusChange};

/// The presence last told to plugins, per user. Users not seen are offline.
#[derive(Debug, Default)]
pub struct PresenceTracker {
    seen: Mutex<HashMap<String, Presence>>,
}

impl PresenceTracker {
    /// A tracker that has seen nobody.
    pub fn new() -> Self {
        Self::default()
    }

    /// `user` is now `current` (at `at_ms`): the change to report, or `None` when it is the state already told.
    pub fn change(&self, user: &str, current: Presence, at_ms: u64) -> Option<StatusChange> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let previous = if current == Presence::Offline { seen.remove(user) } else { seen.insert(user.to_owned(), current) }
            .unwrap_or(Presence::Offline);
        (previous != current).then(|| StatusChange { user: user.to_owned(), previous, current, status_text: None, at: at_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_are_reported_with_the_previous_state() {
        let t = PresenceTracker::new();
        let c = t.change("ann", Presence::Online, 1).expect("offline -> online");
        assert_eq!((c.previous, c.current), (Presence::Offline, Presence::Online));
        assert!(t.change("ann", Presence::Online, 2).is_none(), "no change");
        let c = t.change("ann", Presence::Away, 3).expect("online -> away");
        assert_eq!((c.previous, c.current, c.at), (Presence::Online, Presence::Away, 3));
        assert_eq!(t.change("ann", Presence::Offline, 4).map(|c| c.previous), Some(Presence::Away));
        assert!(t.change("bob", Presence::Offline, 5).is_none(), "unseen users are offline already");
    }
}
