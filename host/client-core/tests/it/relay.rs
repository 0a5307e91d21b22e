//! The client core's handshakes and channel against the relay's side of the IMF Noise handshake (imfree-crypto's
//! `Responder`, which the relay runs), byte for byte as they would cross a WebSocket.

use imfree_client_core::ClientError;
use imfree_client_core::relay::{PasswordAuth, PasswordHandshake, Resume, ResumeHandshake, handshake_text};
use imfree_crypto::device::{DeviceKeys, verify_signature};
use imfree_crypto::noise::{DEVICE_BINDING_CONTEXT, Responder, Transport, generate_static_keypair};
use imfree_proto::auth::{IkAuth, XxAuth, XxOp, device_binding_message};
use imfree_proto::{ErrorCode, ErrorFrame, Frame, FrameBody, Limits, Request};

const NOW_MS: u64 = 1_800_000_000_000;

fn auth() -> PasswordAuth<'static> {
    PasswordAuth {
        op: XxOp::Login,
        user: "alice",
        password: "correct horse",
        totp: Some("123456"),
        login_code: None,
        verifier: None,
        device_name: "laptop",
    }
}

fn ping(id: &str) -> Frame {
    Frame::new(FrameBody::Ping(Request { id: Some(id.into()), reference: None }))
}

/// A frame the relay seals reaches the device intact, in however many WebSocket messages it takes.
fn relay_to_device(relay: &mut Transport, device: &mut imfree_client_core::relay::Channel, frame: &Frame) {
    let messages = relay.seal(frame.encode().as_bytes()).unwrap();
    let mut opened = None;
    for (i, m) in messages.iter().enumerate() {
        let got = device.open(m).unwrap();
        assert_eq!(got.is_some(), i == messages.len() - 1, "a frame opens on its last message only");
        opened = got.or(opened);
    }
    assert_eq!(opened.as_ref(), Some(frame));
}

#[test]
fn first_contact_authenticates_the_device_and_opens_a_channel_both_ways() {
    let (relay_secret, relay_public) = generate_static_keypair().unwrap();
    let keys = DeviceKeys::generate();
    let limits = Limits::default();

    let (handshake, m1) = PasswordHandshake::start(&keys, limits.clone()).unwrap();
    let Responder::Xx(responder) = Responder::read_first(&relay_secret, &m1, limits.max_frame_bytes).unwrap() else {
        panic!("message 1 starts an XX handshake");
    };
    let (mut channel, m3, presented) = handshake.finish(responder.message2(), None, &keys, &auth(), NOW_MS).unwrap();
    assert_eq!(presented, relay_public, "the relay key to pin is the relay's");
    let completed = responder.finish(&m3).unwrap();
    assert_eq!(completed.device_static, keys.static_public());

    // What the relay learns: the credentials, and the device's signing key bound to this very handshake.
    let payload: XxAuth = serde_json::from_slice(&completed.payload).unwrap();
    assert_eq!((payload.user.as_str(), payload.password.as_str(), payload.totp.as_deref()), ("alice", "correct horse", Some("123456")));
    assert_eq!((payload.device_name.as_str(), payload.ts), ("laptop", NOW_MS));
    let binding = device_binding_message(DEVICE_BINDING_CONTEXT, &completed.binding_hash, &completed.device_static, "alice");
    assert_eq!(payload.signing_key.0, keys.signing_public());
    verify_signature(&keys.signing_public(), &binding, &payload.binding_sig.0).expect("the binding signature verifies");

    let mut relay = completed.transport;
    relay_to_device(&mut relay, &mut channel, &ping("r1"));
    // A frame larger than one Noise message travels in several.
    let big = Frame::new(FrameBody::Error(ErrorFrame::new(ErrorCode::Internal, "x".repeat(200_000))));
    relay_to_device(&mut relay, &mut channel, &big);
    for m in channel.seal(&ping("d1")).unwrap() {
        if let Some(plain) = relay.open(&m).unwrap() {
            assert_eq!(Frame::decode(&plain, &limits).unwrap(), ping("d1"));
        }
    }
    // A message altered on the way does not open.
    let mut tampered = relay.seal(ping("r2").encode().as_bytes()).unwrap().remove(0);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(channel.open(&tampered), Err(ClientError::Protocol(_))));
}

#[test]
fn first_contact_refuses_a_relay_key_other_than_the_pinned_one() {
    let (relay_secret, relay_public) = generate_static_keypair().unwrap();
    let keys = DeviceKeys::generate();
    let (handshake, m1) = PasswordHandshake::start(&keys, Limits::default()).unwrap();
    let Responder::Xx(responder) = Responder::read_first(&relay_secret, &m1, 1 << 20).unwrap() else { panic!("XX") };
    let mut pinned = relay_public;
    pinned[0] ^= 1;
    match handshake.finish(responder.message2(), Some(pinned), &keys, &auth(), NOW_MS) {
        Err(ClientError::RelayKeyChanged { pinned: p, presented }) => {
            assert_eq!((p, presented), (hex::encode(pinned), hex::encode(relay_public)));
        }
        Err(other) => panic!("expected RelayKeyChanged, got {other}"),
        Ok(_) => panic!("a changed relay key must be refused"),
    }
}

#[test]
fn resuming_carries_the_token_in_message_one_and_opens_a_channel() {
    let (relay_secret, relay_public) = generate_static_keypair().unwrap();
    let keys = DeviceKeys::generate();
    let resume = Resume { user: "alice", device: "d1", token: "secret-token", transfer: true };
    let (handshake, m1) = ResumeHandshake::start(&keys, relay_public, &resume, Limits::default(), NOW_MS).unwrap();
    let Responder::Ik(responder) = Responder::read_first(&relay_secret, &m1, 1 << 20).unwrap() else { panic!("IK") };
    assert_eq!(responder.device_static(), keys.static_public());
    let auth: IkAuth = serde_json::from_slice(responder.payload()).unwrap();
    assert_eq!((auth.user.as_str(), auth.device.as_str(), auth.token.as_str(), auth.transfer, auth.ts), ("alice", "d1", "secret-token", true, NOW_MS));
    let (mut relay, m2) = responder.accept(&[]).unwrap();
    let mut channel = handshake.finish(&m2).unwrap();
    relay_to_device(&mut relay, &mut channel, &ping("r1"));

    // Message 1 made for another relay key cannot be read by this relay.
    let (_, other_public) = generate_static_keypair().unwrap();
    let (stale, m1) = ResumeHandshake::start(&keys, other_public, &resume, Limits::default(), NOW_MS).unwrap();
    assert!(Responder::read_first(&relay_secret, &m1, 1 << 20).is_err());
    // The relay says so with `handshake_failed`, which the client reports as a changed relay key.
    let refusal = handshake_text(&Frame::new(FrameBody::Error(ErrorFrame::new(ErrorCode::HandshakeFailed, "cannot read"))).encode());
    assert!(matches!(stale.refused(refusal), ClientError::RelayKeyChanged { .. }));
    let other = handshake_text(&Frame::new(FrameBody::Error(ErrorFrame::new(ErrorCode::TokenExpired, "expired"))).encode());
    assert!(matches!(other, ClientError::Refused { code: ErrorCode::TokenExpired, .. }));
    assert!(matches!(handshake_text("not a frame"), ClientError::Protocol(_)));
}

#[test]
fn a_forged_message_two_is_refused() {
    let keys = DeviceKeys::generate();
    let (_, relay_public) = generate_static_keypair().unwrap();
    let resume = Resume { user: "alice", device: "d1", token: "t", transfer: false };
    let (handshake, _) = ResumeHandshake::start(&keys, relay_public, &resume, Limits::default(), NOW_MS).unwrap();
    assert!(matches!(handshake.finish(&[7u8; 96]), Err(ClientError::Protocol(_))));
    let (handshake, _) = PasswordHandshake::start(&keys, Limits::default()).unwrap();
    assert!(handshake.finish(&[7u8; 96], None, &keys, &auth(), NOW_MS).is_err());
}
