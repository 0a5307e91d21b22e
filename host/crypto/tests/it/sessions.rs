//! Randomised two-party interaction in the manner of libsignal's session fuzzing: random sends both ways, drops,
//! shuffles, duplicates and flipped bytes. Every delivered message decrypts exactly once, replays are refused, a
//! flipped byte anywhere fails and leaves the session unchanged, counter jumps beyond the cap are refused.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use imfree_crypto::E2eError;
use imfree_crypto::envelope::InnerMessage;
use imfree_crypto::ratchet::{MAX_SKIP, ReplayCache, Session, SessionMessage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::Party;

fn state(session: &Session) -> String {
    serde_json::to_string(session).unwrap()
}

fn msg(id: u64, body: &str) -> InnerMessage {
    let mut mid = [0u8; 16];
    mid[8..].copy_from_slice(&id.to_be_bytes());
    InnerMessage { id: mid, sequence: id, body: body.as_bytes().to_vec() }
}

/// Bob's side of receiving: accept a first message when he has no session, otherwise decrypt in the session.
struct Receiver {
    party: Party,
    session: Option<Session>,
    replay: HashSet<[u8; 32]>,
}

impl Receiver {
    fn receive(&mut self, rng: &mut StdRng, m: &SessionMessage) -> Result<InnerMessage, E2eError> {
        match &mut self.session {
            Some(s) => s.decrypt(rng, m),
            None => {
                let accepted =
                    Session::accept(rng, &self.party.cert, &self.party.keys, &self.party.prekeys, &mut self.replay, m)?;
                self.party.prekeys.consume(&accepted.consumed);
                self.session = Some(accepted.session);
                Ok(accepted.message)
            }
        }
    }
}

fn run_interaction(seed: u64, one_time: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let alice_party = Party::new(&mut rng, 1);
    let mut bob_party = Party::new(&mut rng, 2);
    let bundle = bob_party.bundle(&mut rng, one_time);
    let mut alice = Session::initiate(&mut rng, &alice_party.cert, &alice_party.keys, &bundle).unwrap();
    let mut bob = Receiver { party: bob_party, session: None, replay: HashSet::new() };

    // In flight towards Alice (false) and Bob (true): (wire bytes, message id).
    let mut in_flight: Vec<(bool, Vec<u8>, u64)> = Vec::new();
    let mut delivered: HashMap<u64, usize> = HashMap::new();
    let mut sent_ids = 0u64;
    let mut old_copies: Vec<(bool, Vec<u8>)> = Vec::new();

    for _ in 0..600 {
        match rng.gen_range(0..10) {
            // Send (Bob only once he has a session).
            0..=3 => {
                let to_bob = bob.session.is_none() || rng.gen_bool(0.5);
                sent_ids += 1;
                let inner = msg(sent_ids, "canary body");
                let wire = if to_bob {
                    alice.encrypt(&inner).unwrap().to_bytes()
                } else {
                    bob.session.as_mut().unwrap().encrypt(&inner).unwrap().to_bytes()
                };
                in_flight.push((to_bob, wire, sent_ids));
            }
            // Deliver a random in-flight message (shuffle), sometimes keeping a copy to replay later.
            4..=7 if !in_flight.is_empty() => {
                let (to_bob, wire, id) = in_flight.swap_remove(rng.gen_range(0..in_flight.len()));
                if rng.gen_bool(0.2) {
                    old_copies.push((to_bob, wire.clone()));
                }
                let m = SessionMessage::from_bytes(&wire).unwrap();
                let got = if to_bob { bob.receive(&mut rng, &m) } else { alice.decrypt(&mut rng, &m) };
                let got = got.unwrap_or_else(|e| panic!("seed {seed}: message {id} failed: {e}"));
                assert_eq!(got, msg(id, "canary body"));
                *delivered.entry(id).or_default() += 1;
            }
            // Drop one.
            8 if !in_flight.is_empty() && rng.gen_bool(0.3) => {
                in_flight.swap_remove(rng.gen_range(0..in_flight.len()));
            }
            // Replay a delivered message, or deliver a copy with one flipped byte.
            _ => {
                if let Some((to_bob, wire)) = old_copies.get(rng.gen_range(0..old_copies.len().max(1))).cloned() {
                    let m = SessionMessage::from_bytes(&wire).unwrap();
                    if to_bob {
                        let before = bob.session.as_ref().map(state);
                        assert!(bob.receive(&mut rng, &m).is_err(), "seed {seed}: replay to Bob accepted");
                        assert_eq!(bob.session.as_ref().map(state), before);
                    } else {
                        let before = state(&alice);
                        assert!(alice.decrypt(&mut rng, &m).is_err(), "seed {seed}: replay to Alice accepted");
                        assert_eq!(state(&alice), before);
                    }
                }
                if let Some((to_bob, wire, _)) = in_flight.get(rng.gen_range(0..in_flight.len().max(1))).cloned() {
                    let mut bad = wire.clone();
                    let at = rng.gen_range(0..bad.len());
                    bad[at] ^= 1 << rng.gen_range(0..8);
                    let Ok(m) = SessionMessage::from_bytes(&bad) else { continue };
                    if to_bob {
                        let before = bob.session.as_ref().map(state);
                        let prekeys = serde_json::to_string(&bob.party.prekeys).unwrap();
                        assert!(bob.receive(&mut rng, &m).is_err(), "seed {seed}: flipped byte {at} accepted");
                        assert_eq!(bob.session.as_ref().map(state), before);
                        assert_eq!(serde_json::to_string(&bob.party.prekeys).unwrap(), prekeys);
                    } else {
                        let before = state(&alice);
                        assert!(alice.decrypt(&mut rng, &m).is_err(), "seed {seed}: flipped byte {at} accepted");
                        assert_eq!(state(&alice), before);
                    }
                }
            }
        }
    }
    // Deliver what is left, in random order: everything not dropped decrypts.
    while !in_flight.is_empty() {
        let (to_bob, wire, id) = in_flight.swap_remove(rng.gen_range(0..in_flight.len()));
        let m = SessionMessage::from_bytes(&wire).unwrap();
        let got = if to_bob { bob.receive(&mut rng, &m) } else { alice.decrypt(&mut rng, &m) };
        assert_eq!(got.unwrap_or_else(|e| panic!("seed {seed}: late message {id}: {e}")), msg(id, "canary body"));
        *delivered.entry(id).or_default() += 1;
    }
    assert!(delivered.values().all(|n| *n == 1));
    // Sessions survive serialisation and keep working.
    let mut alice: Session = serde_json::from_str(&state(&alice)).unwrap();
    if let Some(bob_session) = &mut bob.session {
        let m = alice.encrypt(&msg(u64::MAX, "after restore")).unwrap();
        assert_eq!(bob_session.decrypt(&mut rng, &m).unwrap(), msg(u64::MAX, "after restore"));
    }
}

#[test]
fn random_interaction_with_one_time_prekeys() {
    for seed in 0..12 {
        run_interaction(seed, true);
    }
}

#[test]
fn random_interaction_with_last_resort_prekey() {
    for seed in 100..106 {
        run_interaction(seed, false);
    }
}

#[test]
fn first_message_is_accepted_once() {
    let mut rng = StdRng::seed_from_u64(7);
    for one_time in [true, false] {
        let alice = Party::new(&mut rng, 1);
        let mut bob = Party::new(&mut rng, 2);
        let bundle = bob.bundle(&mut rng, one_time);
        let mut session = Session::initiate(&mut rng, &alice.cert, &alice.keys, &bundle).unwrap();
        let first = session.encrypt(&msg(1, "first")).unwrap();
        let mut replay = HashSet::new();
        let accepted = Session::accept(&mut rng, &bob.cert, &bob.keys, &bob.prekeys, &mut replay, &first).unwrap();
        bob.prekeys.consume(&accepted.consumed);
        // The same first message again, to a device that has (or has lost) the session: refused.
        let again = Session::accept(&mut rng, &bob.cert, &bob.keys, &bob.prekeys, &mut replay, &first);
        if one_time {
            assert!(matches!(again, Err(E2eError::UnknownPrekey { .. })), "{again:?}", again = again.as_ref().err());
            assert_eq!(accepted.consumed.one_time_prekey, bundle.one_time_prekey.as_ref().map(|k| k.id));
            assert_eq!(accepted.consumed.kem_one_time_prekey, Some(bundle.kem_prekey.id));
        } else {
            assert_eq!(again.err(), Some(E2eError::Replay));
            assert_eq!(replay.len(), 1);
        }
        let mut bob_session = accepted.session;
        assert_eq!(bob_session.decrypt(&mut rng, &first).err(), Some(E2eError::Duplicate));
        // A second message with the same set-up is routed to the session.
        let second = session.encrypt(&msg(2, "second")).unwrap();
        assert!(bob_session.is_from_this_setup(&second));
        assert_eq!(bob_session.decrypt(&mut rng, &second).unwrap(), msg(2, "second"));
    }
}

#[test]
fn forged_first_message_consumes_nothing() {
    let mut rng = StdRng::seed_from_u64(8);
    let alice = Party::new(&mut rng, 1);
    let mallory = Party::new(&mut rng, 3);
    let mut bob = Party::new(&mut rng, 2);
    let bundle = bob.bundle(&mut rng, false);
    let mut session = Session::initiate(&mut rng, &alice.cert, &alice.keys, &bundle).unwrap();
    let mut first = session.encrypt(&msg(1, "first")).unwrap();
    // Mallory claims Alice's first message as hers (her own valid certificate): the transcript changes, so it fails.
    first.prekey.as_mut().unwrap().initiator = mallory.cert.clone();
    let mut replay = HashSet::new();
    let r = Session::accept(&mut rng, &bob.cert, &bob.keys, &bob.prekeys, &mut replay, &first);
    assert_eq!(r.err(), Some(E2eError::DecryptFailed));
    assert!(replay.is_empty());
}

#[test]
fn counter_jump_beyond_cap_is_refused_quickly() {
    let mut rng = StdRng::seed_from_u64(9);
    let alice = Party::new(&mut rng, 1);
    let mut bob = Party::new(&mut rng, 2);
    let bundle = bob.bundle(&mut rng, true);
    let mut a = Session::initiate(&mut rng, &alice.cert, &alice.keys, &bundle).unwrap();
    let first = a.encrypt(&msg(0, "x")).unwrap();
    let mut b = Session::accept(&mut rng, &bob.cert, &bob.keys, &bob.prekeys, &mut HashSet::new(), &first)
        .unwrap()
        .session;
    // Exactly MAX_SKIP skipped is allowed.
    for i in 1..=MAX_SKIP {
        a.encrypt(&msg(u64::from(i), "lost")).unwrap();
    }
    let at_cap = a.encrypt(&msg(10_000, "at cap")).unwrap();
    let over = a.encrypt(&msg(10_001, "over")).unwrap();
    let mut c = serde_json::from_str::<Session>(&state(&b)).unwrap();
    assert_eq!(b.decrypt(&mut rng, &at_cap).unwrap().sequence, 10_000);
    assert_eq!(b.skipped_keys(), MAX_SKIP as usize);
    // One more than the cap from the same starting point (a genuine message): refused, state unchanged.
    let before = state(&c);
    assert!(matches!(c.decrypt(&mut rng, &over), Err(E2eError::TooFarAhead { .. })));
    assert_eq!(state(&c), before);
    // A forged counter near u32::MAX costs nothing.
    let mut forged = over.clone();
    forged.header.number = u32::MAX;
    let started = Instant::now();
    for _ in 0..1000 {
        assert!(matches!(c.decrypt(&mut rng, &forged), Err(E2eError::TooFarAhead { .. })));
    }
    assert!(started.elapsed().as_secs() < 5, "refusal must not do the skipped work");
    assert_eq!(state(&c), before);
    // Skipped keys are bounded: a second full jump in a new chain evicts the oldest.
    let reply = b.encrypt(&msg(1, "reply")).unwrap();
    a.decrypt(&mut rng, &reply).unwrap();
    for i in 0..MAX_SKIP {
        a.encrypt(&msg(20_000 + u64::from(i), "lost")).unwrap();
    }
    let m = a.encrypt(&msg(30_000, "jump again")).unwrap();
    b.decrypt(&mut rng, &m).unwrap();
    assert!(b.skipped_keys() <= imfree_crypto::ratchet::MAX_SKIPPED_KEYS);
}

#[test]
fn replay_cache_trait_is_usable_by_callers() {
    struct Counting(HashSet<[u8; 32]>, usize);
    impl ReplayCache for Counting {
        fn contains(&self, key: &[u8; 32]) -> bool {
            self.0.contains(key)
        }
        fn insert(&mut self, key: [u8; 32]) {
            self.1 += 1;
            self.0.insert(key);
        }
    }
    let mut rng = StdRng::seed_from_u64(10);
    let alice = Party::new(&mut rng, 1);
    let mut bob = Party::new(&mut rng, 2);
    let bundle = bob.bundle(&mut rng, false);
    let mut a = Session::initiate(&mut rng, &alice.cert, &alice.keys, &bundle).unwrap();
    let first = a.encrypt(&msg(0, "x")).unwrap();
    let mut cache = Counting(HashSet::new(), 0);
    Session::accept(&mut rng, &bob.cert, &bob.keys, &bob.prekeys, &mut cache, &first).unwrap();
    assert_eq!(cache.1, 1);
}
