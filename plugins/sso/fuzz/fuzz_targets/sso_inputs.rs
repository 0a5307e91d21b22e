#![no_main]
//! What a browser (anyone) sends to the SSO plugin's routes and what a provider's discovery document holds: the
//! query parser, the loopback-only redirect check, claim-to-account-name sanitising and the discovery parser. None may
//! panic; an accepted redirect is a loopback `http` address; a name follows the relay's rules.
use libfuzzer_sys::fuzz_target;
use sso::oidc::parse_discovery;
use sso::policy::{check_redirect_uri, parse_query, sanitise_name, with_query};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let pairs = parse_query(&text);
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _ = with_query("http://127.0.0.1:8123/callback", &borrowed);
    for (_, value) in &pairs {
        if check_redirect_uri(value).is_ok() {
            let loopback = ["http://127.0.0.1:", "http://[::1]:", "http://localhost:"];
            assert!(loopback.iter().any(|p| value.starts_with(p)), "accepted {value:?}");
        }
    }
    if let Ok(name) = sanitise_name(&text) {
        assert!(!name.is_empty() && name.len() <= 64, "{name:?}");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)), "{name:?}");
        assert!(name.as_bytes()[0].is_ascii_alphanumeric(), "{name:?}");
    }
    let _ = parse_discovery("https://idp.example", data);
});
