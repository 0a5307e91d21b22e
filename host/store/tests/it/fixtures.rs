//! Small builders for test data.

use imfree_store::{EnvelopeKind, NewDevice, NewEnvelope, NewUser, RelayStore, UserId};

pub(crate) async fn user(s: &dyn RelayStore, name: &str) -> UserId {
    s.create_user(&NewUser {
        name: name.to_owned(),
        password_hash: format!("$argon2id$fake${name}"),
        created_at: 1_000,
    })
    .await
    .expect("create user")
}

/// A device whose keys are derived from `key_byte`, so tests can pick distinct or colliding keys.
pub(crate) fn new_device(id: &str, user_id: UserId, key_byte: u8, created_at: i64) -> NewDevice {
    NewDevice {
        id: id.to_owned(),
        user_id,
        signing_key: [key_byte.wrapping_add(100); 32],
        static_key: [key_byte; 32],
        name: format!("{id} name"),
        created_at,
    }
}

pub(crate) async fn device(s: &dyn RelayStore, id: &str, user_id: UserId, key_byte: u8) {
    s.add_device(&new_device(id, user_id, key_byte, 2_000)).await.expect("add device");
}

/// A message from alice/a1 to bob, queued for `devices`.
pub(crate) fn envelope(id: &str, devices: &[&str], created_at: i64) -> NewEnvelope {
    NewEnvelope {
        id: id.to_owned(),
        kind: EnvelopeKind::Message,
        sender: "alice".to_owned(),
        sender_device: "a1".to_owned(),
        recipient: "bob".to_owned(),
        mime: "application/imf".to_owned(),
        payload: format!("ciphertext of {id}").into_bytes(),
        created_at,
        recipient_devices: devices.iter().map(|d| (*d).to_owned()).collect(),
        device_payloads: Vec::new(),
        refers: None,
    }
}

pub(crate) fn ack(device: &str, id: &str) -> (String, String) {
    (device.to_owned(), id.to_owned())
}

/// The ids in a device's whole queue, in queue order.
pub(crate) async fn queued_ids(s: &dyn RelayStore, device: &str) -> Vec<String> {
    s.fetch_queue(device, 0, i64::MAX).await.expect("fetch queue").into_iter().map(|e| e.id).collect()
}
