//! Which reminders are due. The plugin keeps every pending reminder in kv and one timer for the earliest of them
//! (the host allows a plugin only so many live timers, so one per event would stop arming at that limit); each
//! firing posts what is due, drops what can no longer be useful, and arms the timer for the next one.

use serde::{Deserialize, Serialize};

/// A pending reminder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// When to post it (ms since the epoch).
    pub at_ms: i64,
    /// When the event starts.
    pub start_ms: i64,
    /// Where to post it.
    pub conversation: String,
    /// The event's title.
    pub title: String,
}

/// What to do with the stored reminders at `now`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Post these now (due, the event not started yet), earliest first.
    pub due: Vec<String>,
    /// Delete these unposted: the event has started (a reminder after the start helps nobody).
    pub expired: Vec<String>,
    /// When the timer should fire next, if anything is left.
    pub next_at_ms: Option<i64>,
}

/// Sort `reminders` (id, reminder) into a [`Plan`] at `now_ms`.
pub fn plan(now_ms: i64, reminders: &[(String, Reminder)]) -> Plan {
    let mut out = Plan::default();
    let mut due: Vec<(i64, &str)> = Vec::new();
    for (id, r) in reminders {
        if r.start_ms <= now_ms {
            out.expired.push(id.clone());
        } else if r.at_ms <= now_ms {
            due.push((r.at_ms, id));
        } else {
            out.next_at_ms = Some(out.next_at_ms.map_or(r.at_ms, |n| n.min(r.at_ms)));
        }
    }
    due.sort();
    out.due = due.into_iter().map(|(_, id)| id.to_owned()).collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(at_ms: i64, start_ms: i64) -> Reminder {
        Reminder {
            at_ms,
            start_ms,
            conversation: "c".into(),
            title: "t".into(),
        }
    }

    #[test]
    fn due_expired_and_next() {
        let all = vec![
            ("late".to_string(), r(90, 100)),
            ("early".to_string(), r(50, 200)),
            ("started".to_string(), r(10, 60)),
            ("later".to_string(), r(300, 400)),
            ("soon".to_string(), r(150, 400)),
        ];
        let p = plan(100, &all);
        assert_eq!(p.due, vec!["early"]);
        assert_eq!(p.expired, vec!["late", "started"]);
        assert_eq!(p.next_at_ms, Some(150));
        assert_eq!(plan(100, &[]), Plan::default());
        // Exactly at the time: due.
        assert_eq!(plan(150, &all[4..]).due, vec!["soon"]);
        assert_eq!(plan(149, &all[4..]).next_at_ms, Some(150));
    }
}
