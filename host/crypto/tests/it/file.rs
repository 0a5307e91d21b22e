//! End-to-end encrypted files: the construction vector (tests/vectors/file.json: chunk sealing, password wrap,
//! descriptor encoding), strict descriptor validation, and every rearrangement of sealed chunks refused.

use imfree_crypto::file::{
    ChunkCipher, FileDescriptor, FileError, FileId, FileKey, KeyMaterial, PasswordWrap, TAG_LEN, chunk_count,
};
use imfree_crypto::keystore::KdfParams;
use serde_json::json;

const CHEAP: KdfParams = KdfParams { memory_kib: 256, iterations: 2, parallelism: 1 };

fn key() -> FileKey {
    FileKey::from_bytes(core::array::from_fn(|i| i as u8))
}

fn id() -> FileId {
    FileId(core::array::from_fn(|i| 0xa0 + i as u8))
}

fn plaintext() -> Vec<u8> {
    (0..2500u32).map(|i| (i % 251) as u8).collect()
}

fn descriptor(key: KeyMaterial) -> FileDescriptor {
    FileDescriptor {
        id: id(),
        name: "plan.txt".into(),
        size: 2500,
        mime: "text/plain".into(),
        chunk_size: 1024,
        chunks: 3,
        sha256: imfree_crypto::kdf::sha256(&plaintext()),
        key,
        voice: false,
        duration_ms: None,
    }
}

#[test]
fn file_vectors_match() {
    let cipher = ChunkCipher::new(&key(), id(), 2500, 1024);
    let plain = plaintext();
    let sealed: Vec<String> = plain.chunks(1024).enumerate().map(|(i, c)| hex::encode(cipher.seal(i as u64, c).unwrap())).collect();
    let wrap = PasswordWrap::wrap_with_salt(&key(), id(), b"correct horse battery staple", CHEAP, [0x5a; 16]).unwrap();
    assert_eq!(wrap.unwrap(id(), b"correct horse battery staple").unwrap(), key());
    let plain_descriptor = descriptor(KeyMaterial::Plain(key()));
    let protected = descriptor(KeyMaterial::Password(wrap.clone()));
    crate::vector_file::check(
        "file.json",
        json!({
            "description": "imfree files v1 (docs/crypto.md, Files): chunk key = HKDF-SHA-256(salt = file id, ikm = file key, info = \"imfree/v1/file-chunk\"); chunk i of n: ChaCha20-Poly1305, nonce = i (u64 BE) || final (u8) || 000000, AD = \"imfree/v1/file-chunk\" || 00 || file id || i (u64 BE) || final (u8). Password wrap: K = Argon2id(password, salt, m, t, p, 32), kek = HKDF-SHA-256(salt = file id, ikm = K, info = \"imfree/v1/file-key-wrap\"), ChaCha20-Poly1305(kek, nonce = 0^12, AD = \"imfree/v1/file-key-wrap\" || 00 || file id, file key). Hex.",
            "inputs": {
                "file_key": hex::encode(key().as_bytes()),
                "file_id": id().to_string(),
                "size": 2500,
                "chunk_size": 1024,
                "plaintext": "byte i = i mod 251, i = 0..2499",
                "password_utf8": "correct horse battery staple",
                "argon2id": {"memory_kib": 256, "iterations": 2, "parallelism": 1},
                "salt": hex::encode([0x5a; 16]),
            },
            "outputs": {
                "sealed_chunks": sealed,
                "plaintext_sha256": hex::encode(imfree_crypto::kdf::sha256(&plain)),
                "wrapped_key": hex::encode(wrap.wrapped),
                "descriptor": String::from_utf8(plain_descriptor.encode()).unwrap(),
                "descriptor_with_password": String::from_utf8(protected.encode()).unwrap(),
            }
        }),
    );
}

#[test]
fn descriptors_round_trip_and_open_with_the_password_only() {
    let d = descriptor(KeyMaterial::Plain(key()));
    assert_eq!(FileDescriptor::decode(&d.encode()).unwrap(), d);
    assert_eq!(d.file_key(None).unwrap(), key());
    let wrap = PasswordWrap::wrap(&mut rand_core::OsRng, &key(), id(), b"pw", CHEAP).unwrap();
    let p = descriptor(KeyMaterial::Password(wrap));
    let back = FileDescriptor::decode(&p.encode()).unwrap();
    assert_eq!(back, p);
    assert!(!String::from_utf8(p.encode()).unwrap().contains("\"key\""));
    assert_eq!(back.file_key(None), Err(FileError::PasswordRequired));
    assert_eq!(back.file_key(Some(b"PW")), Err(FileError::WrongPassword));
    assert_eq!(back.file_key(Some(b"pw")).unwrap(), key());
    // The wrap is bound to the file id.
    let mut moved = back.clone();
    moved.id = FileId([9; 16]);
    assert_eq!(moved.file_key(Some(b"pw")), Err(FileError::WrongPassword));
}

#[test]
fn descriptors_from_untrusted_bytes_are_checked_strictly() {
    let good: serde_json::Value = serde_json::from_slice(&descriptor(KeyMaterial::Plain(key())).encode()).unwrap();
    let bad = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        change(&mut v);
        FileDescriptor::decode(serde_json::to_string(&v).unwrap().as_bytes()).unwrap_err()
    };
    assert!(matches!(bad(&|v| v["v"] = 2.into()), FileError::UnsupportedVersion(2)));
    assert!(matches!(bad(&|v| v["extra"] = 1.into()), FileError::Malformed(_)), "unknown fields are refused");
    for name in ["", ".", "..", "a/b", "a\\b", "a\nb", &"n".repeat(256)] {
        assert!(matches!(bad(&|v| v["name"] = name.into()), FileError::Invalid { field: "name", .. }), "{name:?}");
    }
    assert!(matches!(bad(&|v| v["mime"] = "nonsense".into()), FileError::Invalid { field: "mime", .. }));
    assert!(matches!(bad(&|v| v["chunks"] = 4.into()), FileError::Invalid { field: "chunks", .. }));
    assert!(matches!(bad(&|v| v["chunk_size"] = 10.into()), FileError::Invalid { field: "chunk_size", .. }));
    assert!(matches!(bad(&|v| v["size"] = (1u64 << 41).into()), FileError::Invalid { field: "size", .. }));
    assert!(matches!(bad(&|v| v["sha256"] = "AB".repeat(32).into()), FileError::Invalid { field: "sha256", .. }));
    assert!(matches!(bad(&|v| v["id"] = "x".into()), FileError::Malformed(_)));
    assert!(matches!(bad(&|v| v["key"] = "AAAA".into()), FileError::Malformed(_)));
    assert!(matches!(bad(&|v| { v.as_object_mut().unwrap().remove("key"); }), FileError::Invalid { field: "key", .. }));
    assert!(matches!(bad(&|v| v["voice"] = true.into()), FileError::Invalid { field: "duration_ms", .. }), "a voice message has a duration");
    assert!(matches!(bad(&|v| { v["voice"] = true.into(); v["duration_ms"] = (25u64 * 3600 * 1000).into(); }), FileError::Invalid { field: "duration_ms", .. }));
    let huge_params = |v: &mut serde_json::Value| {
        v.as_object_mut().unwrap().remove("key");
        v["password"] = json!({"kdf": "argon2id", "m": u32::MAX, "t": 2, "p": 1, "salt": "AAAAAAAAAAAAAAAAAAAAAA==", "wrapped_key": base64_48()});
    };
    assert!(matches!(bad(&huge_params), FileError::UnsupportedParameters(_)), "a planted descriptor cannot make the client allocate 4 TiB");
    assert!(matches!(FileDescriptor::decode(&vec![b' '; 5000]), Err(FileError::Malformed(_))));
    assert!(matches!(FileDescriptor::decode(b"\xff"), Err(FileError::Malformed(_))));
}

fn base64_48() -> String {
    "A".repeat(64)
}

#[test]
fn chunk_streams_detect_drop_reorder_truncation_and_extension() {
    let size = 10 * 1024 + 5;
    let cipher = ChunkCipher::new(&key(), id(), size, 1024);
    assert_eq!(cipher.chunks(), chunk_count(size, 1024));
    let plain: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let sealed: Vec<Vec<u8>> = plain.chunks(1024).enumerate().map(|(i, c)| cipher.seal(i as u64, c).unwrap()).collect();
    assert_eq!(sealed.last().unwrap().len(), 5 + TAG_LEN);
    // In order: everything opens and joins to the plaintext.
    let joined: Vec<u8> = sealed.iter().enumerate().flat_map(|(i, s)| cipher.open(i as u64, s).unwrap()).collect();
    assert_eq!(joined, plain);
    // Each chunk opens only at its own index.
    for (i, s) in sealed.iter().enumerate() {
        for j in 0..sealed.len() {
            if i != j {
                assert!(cipher.open(j as u64, s).is_err(), "chunk {i} accepted at {j}");
            }
        }
    }
    // Truncation: a file that claims to end after chunk 4 refuses chunk 4 as its final chunk.
    let truncated = ChunkCipher::new(&key(), id(), 5 * 1024, 1024);
    assert!(truncated.open(4, &sealed[4]).is_err());
    // Extension: one more chunk than the file has.
    assert!(matches!(cipher.open(11, &sealed[10]), Err(FileError::ChunkOutOfRange { .. })));
    let longer = ChunkCipher::new(&key(), id(), 12 * 1024, 1024);
    assert!(longer.open(10, &sealed[10]).is_err(), "the old final chunk cannot be continued");
}
