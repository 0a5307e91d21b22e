//! Shared by the construction-vector tests of safety numbers, key store, membership log and sender keys: compare a
//! computed vector document with the committed one under tests/vectors/. Regenerate (after an intended format change
//! only) with `IMFREE_WRITE_VECTORS=1 cargo test -p imfree-crypto --test it`.

use serde_json::Value;

pub(crate) fn check(file: &str, computed: Value) {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("IMFREE_WRITE_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("vector file")).unwrap();
    assert_eq!(stored["inputs"], computed["inputs"], "{file}: inputs changed");
    assert_eq!(stored["outputs"], computed["outputs"], "{file}: imfree construction output changed: a format break");
}
