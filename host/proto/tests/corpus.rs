//! The fuzz corpora (host/proto/fuzz/corpus/<target>/) replayed as ordinary tests, through the same calls as the fuzz
//! targets, so that every input that ever found a bug keeps being checked without a fuzzer.

use imfree_proto::auth::{IkAuth, XxAuth};
use imfree_proto::content::Content;
use imfree_proto::{Frame, Limits};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus {target}");
    out
}

#[test]
fn frame_corpus() {
    let limits = Limits::default();
    let mut decoded = 0;
    for (name, data) in corpus("frame") {
        if let Ok(frame) = Frame::decode(&data, &limits) {
            decoded += 1;
            assert_eq!(Frame::decode(frame.encode().as_bytes(), &limits).unwrap(), frame, "{name}");
        }
    }
    assert!(decoded >= 4, "the seed frames decode");
}

#[test]
fn content_corpus() {
    let limits = Limits { max_decompressed_bytes: 1 << 16, ..Limits::default() };
    for (name, data) in corpus("content") {
        if let Ok(content) = Content::decode(&data)
            && let Ok(body) = content.body_bytes(&limits)
        {
            assert!(body.len() <= limits.max_decompressed_bytes, "{name}");
        }
    }
}

#[test]
fn auth_payload_corpus() {
    for (_, data) in corpus("auth_payload") {
        let _ = serde_json::from_slice::<IkAuth>(&data);
        let _ = serde_json::from_slice::<XxAuth>(&data);
    }
    assert!(serde_json::from_slice::<IkAuth>(&corpus("auth_payload")[0].1).is_ok(), "the IK seed parses");
    // `transfer` is optional: absent means a main session; a transfer-only session says so.
    let ik = |seed: &str| {
        let (_, data) = corpus("auth_payload").into_iter().find(|(name, _)| name == seed).expect("the IK seeds");
        serde_json::from_slice::<IkAuth>(&data).expect("an IK seed parses")
    };
    assert!(!ik("ik").transfer && ik("ik_transfer").transfer);
    let sso = corpus("auth_payload").into_iter().find(|(name, _)| name == "xx_sso_login").expect("the SSO login seed");
    assert!(serde_json::from_slice::<XxAuth>(&sso.1).is_ok(), "the SSO login seed parses");
}
