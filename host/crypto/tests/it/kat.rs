//! Known-answer tests: RFC 7748 (X25519, incl. the iterated test and low-order points), RFC 8439
//! (ChaCha20-Poly1305), RFC 5869 (HKDF-SHA-256), and ML-KEM-768 (C2SP/CCTV accumulated pq-crystals vectors).

use imfree_crypto::E2eError;
use imfree_crypto::kdf::{hkdf_sha256, x25519, x25519_public};
use imfree_crypto::kem::{self, KemKeyPair};

use crate::support::{unhex, unhex32};


#[test]
fn rfc7748_scalar_multiplication() {
    let cases = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ];
    for (k, u, out) in cases {
        assert_eq!(*x25519(&unhex32(k), &unhex32(u)).unwrap(), unhex32(out));
    }
}

#[test]
fn rfc7748_diffie_hellman() {
    let a = unhex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let b = unhex32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    assert_eq!(x25519_public(&a), unhex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
    assert_eq!(x25519_public(&b), unhex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
    let shared = unhex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(*x25519(&a, &x25519_public(&b)).unwrap(), shared);
    assert_eq!(*x25519(&b, &x25519_public(&a)).unwrap(), shared);
}

#[test]
fn rfc7748_iterated_to_1000() {
    let mut k = [0u8; 32];
    k[0] = 9;
    let mut u = k;
    for i in 1..=1000 {
        let next = *x25519(&k, &u).unwrap();
        u = k;
        k = next;
        if i == 1 {
            assert_eq!(k, unhex32("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"));
        }
    }
    assert_eq!(k, unhex32("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"));
}

/// The points of small order (RFC 7748 section 6.1; Wycheproof's x25519 "low order public key" cases), and the
/// same with the ignored top bit set: every agreement with them is refused instead of yielding zeros.
#[test]
fn low_order_points_are_refused() {
    let low_order = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];
    let secret = unhex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    for p in low_order {
        let mut point = unhex32(p);
        assert_eq!(x25519(&secret, &point).map(|_| ()), Err(E2eError::NonContributory), "{p}");
        point[31] |= 0x80;
        assert_eq!(x25519(&secret, &point).map(|_| ()), Err(E2eError::NonContributory), "{p} with top bit");
    }
}

#[test]
fn rfc8439_chacha20_poly1305() {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
    let key = unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce = unhex("070000004041424344454647");
    let aad = unhex("50515253c0c1c2c3c4c5c6c7");
    let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let expected = unhex(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e06\
         0b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d265\
         86cec64b61161ae10b594f09e26a7e902ecbd0600691",
    );
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
    let ct = cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: pt, aad: &aad }).unwrap();
    assert_eq!(ct, expected);
    let mut bad = ct.clone();
    bad[0] ^= 1;
    assert!(cipher.decrypt(Nonce::from_slice(&nonce), Payload { msg: &bad, aad: &aad }).is_err());
}

#[test]
fn rfc5869_hkdf_sha256() {
    let range = |a: u8, n: usize| (0..n).map(|i| a.wrapping_add(i as u8)).collect::<Vec<u8>>();
    // Test case 1.
    let okm = hkdf_sha256::<42>(&range(0, 13), &[0x0b; 22], &[&range(0xf0, 10)]);
    assert_eq!(okm.to_vec(), unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"));
    // Test case 2 (the info given in two parts, as the constructions do).
    let info = range(0xb0, 80);
    let okm = hkdf_sha256::<82>(&range(0x60, 80), &range(0, 80), &[&info[..30], &info[30..]]);
    assert_eq!(
        okm.to_vec(),
        unhex(
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f\
             09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"
        )
    );
    // Test case 3: empty salt is HashLen zeros.
    let okm = hkdf_sha256::<42>(&[], &[0x0b; 22], &[]);
    assert_eq!(okm.to_vec(), unhex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"));
}

/// Accumulated ML-KEM-768 vectors for final FIPS 203 (as in Go's crypto/internal/fips140/mlkem TestAccumulated):
/// a SHAKE-128 stream of the empty string supplies, per test, the 64-byte seed d || z, the encapsulation randomness
/// m and a random 1088-byte ciphertext; ek, ct, K and the implicit-rejection K of the random ciphertext are
/// absorbed into a second SHAKE-128. 100 tests (debug builds) and 10 000 (release) hash to published values.
#[test]
fn ml_kem_768_accumulated_vectors() {
    use sha3::Shake128;
    use sha3::digest::{ExtendableOutput, Update, XofReader};
    let (tests, expected) = if cfg!(debug_assertions) {
        (100, "1114b1b6699ed191734fa339376afa7e285c9e6acf6ff0177d346696ce564415")
    } else {
        (10_000, "8a518cc63da366322a8e7a818c7a0d63483cb3528d34a4cf42f35d5ad73f22fc")
    };
    let mut rng = Shake128::default().finalize_xof();
    let mut acc = Shake128::default();
    for _ in 0..tests {
        let mut seed = [0u8; 64];
        rng.read(&mut seed);
        let pair = KemKeyPair::from_seed(seed);
        acc.update(pair.public_key());
        let mut m = [0u8; 32];
        rng.read(&mut m);
        let (ct, k) = kem::encapsulate(pair.public_key(), m).unwrap();
        acc.update(&ct);
        acc.update(&*k);
        assert_eq!(*pair.decapsulate(&ct).unwrap(), *k);
        let mut random_ct = vec![0u8; kem::CIPHERTEXT_LEN];
        rng.read(&mut random_ct);
        acc.update(&*pair.decapsulate(&random_ct).unwrap());
    }
    let mut out = [0u8; 32];
    acc.finalize_xof().read(&mut out);
    assert_eq!(hex::encode(out), expected);
}

#[test]
fn ml_kem_rejects_bad_keys_and_ciphertexts() {
    // Coefficients ≥ q fail the FIPS 203 modulus check.
    let mut bad = KemKeyPair::from_seed([3; 64]).public_key().to_vec();
    bad[0] = 0xff;
    bad[1] = 0xff;
    assert!(kem::validate_public_key(&bad).is_err());
    assert!(kem::validate_public_key(&bad[..100]).is_err());
    assert!(kem::encapsulate(&bad, [0; 32]).is_err());
    assert!(KemKeyPair::from_seed([3; 64]).decapsulate(&[0; 10]).is_err());
}
