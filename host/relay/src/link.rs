//! The device-linking rendezvous: two authenticated connections of the SAME account that name the same rendezvous id
//! (derived from the link code by both devices) get each other's opaque `link.data` messages, live.
//!
//! Nothing is stored and nothing is read: the relay learns the rendezvous id and the sizes, never the code or the
//! keys. Everything is bounded by `[limits.linking]`: rendezvous per account (one per connection), two connections
//! per rendezvous, messages per connection and their size, and a time limit after which both sides get `link.close`.
//! Rendezvous ids live in a per-account namespace, so another account naming the same id meets nobody.
//!
//! What it must not touch: the store, and the bytes it forwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use imfree_proto::{ErrorCode, ErrorFrame, Frame, FrameBody, LinkClose, LinkData, LinkPaired, Payload};
use imfree_store::UserId;
use tokio::sync::mpsc;

use crate::config::LinkingLimits;
use crate::hub::ConnEvent;

/// One connection in a rendezvous.
pub struct LinkMember {
    /// The connection.
    pub conn_id: u64,
    /// Its device id.
    pub device: String,
    /// Its device name.
    pub device_name: String,
    /// Where its events go.
    pub tx: mpsc::Sender<ConnEvent>,
}

struct Joined {
    member: LinkMember,
    sent: u32,
}

struct Slot {
    generation: u64,
    members: Vec<Joined>,
}

type Key = (UserId, String);

/// Every open rendezvous of this relay.
pub struct LinkRendezvous {
    limits: LinkingLimits,
    slots: Mutex<HashMap<Key, Slot>>,
    generation: AtomicU64,
    me: Weak<LinkRendezvous>,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
    ErrorFrame::new(code, message)
}

fn close_frame(rendezvous: &str, reason: &str) -> ConnEvent {
    ConnEvent::Frame(Box::new(Frame::new(FrameBody::LinkClose(LinkClose {
        rendezvous: rendezvous.to_owned(),
        reason: Some(reason.to_owned()),
    }))))
}

fn paired_frame(rendezvous: &str, peer: &LinkMember) -> Frame {
    Frame::new(FrameBody::LinkPaired(LinkPaired {
        rendezvous: rendezvous.to_owned(),
        device: Some(peer.device.clone()),
        device_name: Some(peer.device_name.clone()),
    }))
}

impl LinkRendezvous {
    /// An empty registry.
    pub fn new(limits: LinkingLimits) -> Arc<Self> {
        Arc::new_cyclic(|me| LinkRendezvous {
            limits,
            slots: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(1),
            me: me.clone(),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        match self.slots.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// Join `rendezvous` for `user`. Returns the `link.paired` frame for the joining connection when it is the
    /// second (the first one is sent its own `link.paired` now); `None` while waiting for the other device.
    pub fn open(&self, user: UserId, rendezvous: &str, member: LinkMember) -> Result<Option<Frame>, ErrorFrame> {
        let mut slots = self.slots();
        if slots.iter().any(|((u, _), s)| *u == user && s.members.iter().any(|j| j.member.conn_id == member.conn_id)) {
            return Err(refuse(ErrorCode::LinkBusy, "this connection already has a rendezvous open: close it first"));
        }
        let key = (user, rendezvous.to_owned());
        if let Some(slot) = slots.get_mut(&key) {
            if slot.members.len() >= 2 {
                return Err(refuse(ErrorCode::LinkBusy, "two devices are already linking with this code"));
            }
            let first = &slot.members[0].member;
            let _ = first.tx.try_send(ConnEvent::Frame(Box::new(paired_frame(rendezvous, &member))));
            let answer = paired_frame(rendezvous, first);
            slot.members.push(Joined { member, sent: 0 });
            return Ok(Some(answer));
        }
        if slots.keys().filter(|(u, _)| *u == user).count() >= self.limits.per_account {
            return Err(refuse(
                ErrorCode::LinkBusy,
                format!("this account already has {} linking rendezvous open; finish or cancel one", self.limits.per_account),
            ));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        slots.insert(key.clone(), Slot { generation, members: vec![Joined { member, sent: 0 }] });
        drop(slots);
        let me = self.me.clone();
        let timeout = Duration::from_secs(self.limits.timeout_secs);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(registry) = me.upgrade() {
                registry.expire(&key, generation);
            }
        });
        Ok(None)
    }

    fn expire(&self, key: &Key, generation: u64) {
        let mut slots = self.slots();
        if slots.get(key).is_some_and(|s| s.generation == generation)
            && let Some(slot) = slots.remove(key)
        {
            for j in slot.members {
                let _ = j.member.tx.try_send(close_frame(&key.1, "expired: start linking again"));
            }
        }
    }

    /// Forward one message from connection `conn_id` to the other connection of its rendezvous.
    pub fn forward(&self, user: UserId, conn_id: u64, rendezvous: &str, data: Payload) -> Result<(), ErrorFrame> {
        let mut slots = self.slots();
        let key = (user, rendezvous.to_owned());
        let Some(slot) = slots.get_mut(&key) else {
            return Err(refuse(ErrorCode::LinkUnknown, "no open rendezvous with that id: it expired or was closed"));
        };
        let Some(me) = slot.members.iter().position(|j| j.member.conn_id == conn_id) else {
            return Err(refuse(ErrorCode::LinkUnknown, "this connection has not joined that rendezvous (send link.open)"));
        };
        if slot.members.len() < 2 {
            return Err(refuse(ErrorCode::LinkUnknown, "the other device has not joined yet: wait for link.paired"));
        }
        let limit = if data.0.len() > self.limits.max_message_bytes {
            Some(format!("linking messages are at most {} bytes", self.limits.max_message_bytes))
        } else if slot.members[me].sent >= self.limits.max_messages {
            Some(format!("a rendezvous carries at most {} messages from each device", self.limits.max_messages))
        } else {
            None
        };
        if let Some(message) = limit {
            // A misbehaving side ends the rendezvous for both: linking starts again with a new code.
            if let Some(slot) = slots.remove(&key) {
                for j in slot.members.iter().filter(|j| j.member.conn_id != conn_id) {
                    let _ = j.member.tx.try_send(close_frame(rendezvous, "the other device broke the linking limits"));
                }
            }
            return Err(refuse(ErrorCode::LinkLimit, message));
        }
        slot.members[me].sent += 1;
        let frame = Frame::new(FrameBody::LinkData(LinkData { rendezvous: rendezvous.to_owned(), data }));
        let peer = &slot.members[1 - me].member;
        if peer.tx.try_send(ConnEvent::Frame(Box::new(frame))).is_err() {
            slots.remove(&key);
            return Err(refuse(ErrorCode::LinkUnknown, "the other device is not reachable any more; start linking again"));
        }
        Ok(())
    }

    /// Connection `conn_id` leaves its rendezvous (`rendezvous`, or whichever it is in when `None`): the rendezvous
    /// ends, and the other connection gets `link.close` with `reason`.
    pub fn leave(&self, user: UserId, conn_id: u64, rendezvous: Option<&str>, reason: &str) {
        let mut slots = self.slots();
        let key = slots
            .iter()
            .find(|((u, r), s)| {
                *u == user && rendezvous.is_none_or(|want| want == r) && s.members.iter().any(|j| j.member.conn_id == conn_id)
            })
            .map(|(k, _)| k.clone());
        if let Some(key) = key
            && let Some(slot) = slots.remove(&key)
        {
            for j in slot.members.iter().filter(|j| j.member.conn_id != conn_id) {
                let _ = j.member.tx.try_send(close_frame(&key.1, reason));
            }
        }
    }

    /// Open rendezvous (for tests and metrics).
    pub fn open_count(&self) -> usize {
        self.slots().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(conn_id: u64) -> (LinkMember, mpsc::Receiver<ConnEvent>) {
        let (tx, rx) = mpsc::channel(8);
        (LinkMember { conn_id, device: format!("d{conn_id}"), device_name: "laptop".into(), tx }, rx)
    }

    fn limits() -> LinkingLimits {
        LinkingLimits { timeout_secs: 1, max_messages: 2, max_message_bytes: 256, per_account: 2 }
    }

    fn body(event: ConnEvent) -> FrameBody {
        match event {
            ConnEvent::Frame(f) => f.body,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    const R: &str = "0123456789abcdef0123456789abcdef";

    #[tokio::test(start_paused = true)]
    async fn two_connections_of_one_account_are_paired_and_bounded() {
        let links = LinkRendezvous::new(limits());
        let (a, mut a_rx) = member(1);
        let (b, mut b_rx) = member(2);
        assert!(links.open(7, R, a).unwrap().is_none(), "the first waits");
        assert_eq!(links.forward(7, 1, R, Payload(vec![1])).unwrap_err().code, ErrorCode::LinkUnknown, "not paired yet");
        // Another account naming the same id meets nobody.
        let (stranger, _s_rx) = member(3);
        assert!(links.open(8, R, stranger).unwrap().is_none());
        let FrameBody::LinkPaired(p) = links.open(7, R, b).unwrap().unwrap().body else { panic!() };
        assert_eq!(p.device.as_deref(), Some("d1"));
        assert!(matches!(body(a_rx.try_recv().unwrap()), FrameBody::LinkPaired(p) if p.device.as_deref() == Some("d2")));
        let (c, _c_rx) = member(4);
        assert_eq!(links.open(7, R, c).unwrap_err().code, ErrorCode::LinkBusy, "at most two");

        links.forward(7, 1, R, Payload(vec![1, 2, 3])).unwrap();
        assert!(matches!(body(b_rx.try_recv().unwrap()), FrameBody::LinkData(d) if d.data.0 == [1, 2, 3]));
        assert_eq!(links.forward(7, 2, R, Payload(vec![0; 257])).unwrap_err().code, ErrorCode::LinkLimit);
        assert!(matches!(body(a_rx.try_recv().unwrap()), FrameBody::LinkClose(_)), "a broken limit ends it for both");
        assert_eq!(links.forward(7, 1, R, Payload(vec![1])).unwrap_err().code, ErrorCode::LinkUnknown);
    }

    #[tokio::test(start_paused = true)]
    async fn message_count_per_account_and_time_are_limited() {
        let links = LinkRendezvous::new(limits());
        let (a, _a_rx) = member(1);
        let (b, _b_rx) = member(2);
        links.open(7, R, a).unwrap();
        links.open(7, R, b).unwrap();
        links.forward(7, 1, R, Payload(vec![1])).unwrap();
        links.forward(7, 1, R, Payload(vec![1])).unwrap();
        assert_eq!(links.forward(7, 1, R, Payload(vec![1])).unwrap_err().code, ErrorCode::LinkLimit);

        let other = "ffffffffffffffffffffffffffffffff";
        let (c, mut c_rx) = member(3);
        let (d, _d_rx) = member(4);
        let (e, _e_rx) = member(5);
        links.open(7, R, c).unwrap();
        links.open(7, other, d).unwrap();
        assert_eq!(
            links.open(7, "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", e).unwrap_err().code,
            ErrorCode::LinkBusy,
            "per-account cap"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(matches!(body(c_rx.recv().await.unwrap()), FrameBody::LinkClose(c) if c.reason.as_deref().is_some_and(|r| r.contains("expired"))));
        assert_eq!(links.open_count(), 0);
    }

    #[tokio::test]
    async fn leaving_tells_the_other_side() {
        let links = LinkRendezvous::new(limits());
        let (a, mut a_rx) = member(1);
        let (b, _b_rx) = member(2);
        links.open(7, R, a).unwrap();
        links.open(7, R, b).unwrap();
        let _ = a_rx.try_recv();
        links.leave(7, 2, None, "the other device disconnected");
        assert!(matches!(body(a_rx.try_recv().unwrap()), FrameBody::LinkClose(_)));
        assert_eq!(links.open_count(), 0);
    }
}
