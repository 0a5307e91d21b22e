//! The pure parts of SSO: the settings, which redirect URIs and challenges a login may carry, how a claim becomes
//! an account name, and how directory groups are mapped and checked. Nothing here calls the host, so all of it is
//! unit-tested natively.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The longest account name the relay accepts (docs/protocol.md, section 5.3: `max_name_len`).
pub const MAX_NAME_LEN: usize = 64;

/// Signing algorithms accepted when a provider's settings name none.
pub const DEFAULT_ALGORITHMS: [&str; 2] = ["RS256", "ES256"];

/// One identity provider, as the administrator configures it under `providers`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProviderConfig {
    /// Short id used in URLs (`/login/<id>`): `a-z 0-9 - _`.
    pub id: String,
    /// Name shown to people choosing a provider.
    #[serde(default)]
    pub name: Option<String>,
    /// The issuer URL; discovery is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The client secret (confidential client); absent for a public client.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Scopes asked for besides `openid profile email`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The claim that names the account (default `preferred_username`).
    #[serde(default)]
    pub username_claim: Option<String>,
    /// The claim shown as the display name (default `name`).
    #[serde(default)]
    pub display_name_claim: Option<String>,
    /// The claim that lists directory groups (default `groups`).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Create an account on a first login (default false: only linked accounts may log in).
    #[serde(default)]
    pub provision: bool,
    /// When not empty, only members of one of these provider groups may log in.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Provider group → relay group. When not empty, groups not listed are dropped.
    #[serde(default)]
    pub group_map: BTreeMap<String, String>,
    /// ID token signing algorithms accepted (default RS256 and ES256). `none` is never accepted.
    #[serde(default)]
    pub algorithms: Vec<String>,
}

impl ProviderConfig {
    /// The claim that names the account.
    pub fn username_claim(&self) -> &str {
        self.username_claim.as_deref().unwrap_or("preferred_username")
    }
    /// The claim shown as display name.
    pub fn display_name_claim(&self) -> &str {
        self.display_name_claim.as_deref().unwrap_or("name")
    }
    /// The claim that lists groups.
    pub fn groups_claim(&self) -> &str {
        self.groups_claim.as_deref().unwrap_or("groups")
    }
    /// The name shown in the provider list.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
    /// The accepted signing algorithms, upper-case.
    pub fn algorithms(&self) -> Vec<String> {
        if self.algorithms.is_empty() {
            DEFAULT_ALGORITHMS.iter().map(|a| (*a).to_owned()).collect()
        } else {
            self.algorithms.iter().map(|a| a.to_ascii_uppercase()).collect()
        }
    }
    /// Every scope requested: `openid profile email` and the configured ones, without repeats.
    pub fn all_scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = ["openid", "profile", "email"].iter().map(|s| (*s).to_owned()).collect();
        for s in &self.scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        scopes
    }
}

/// Parse and check the `providers` setting (a JSON array, as the host hands TOML arrays to plugins).
pub fn parse_providers(json: &str) -> Result<Vec<ProviderConfig>, String> {
    let providers: Vec<ProviderConfig> =
        serde_json::from_str(json).map_err(|e| format!("the `providers` setting is not valid: {e}"))?;
    let mut seen = Vec::new();
    for p in &providers {
        let id_ok = !p.id.is_empty()
            && p.id.len() <= 32
            && p.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !id_ok {
            return Err(format!("provider id {:?}: use 1 to 32 of a-z, 0-9, '-' and '_'", p.id));
        }
        if seen.contains(&p.id) {
            return Err(format!("provider id {:?} is listed twice", p.id));
        }
        seen.push(p.id.clone());
        if !(p.issuer.starts_with("https://") || p.issuer.starts_with("http://")) {
            return Err(format!("provider {:?}: the issuer must be an http(s) URL", p.id));
        }
        if p.client_id.is_empty() {
            return Err(format!("provider {:?}: client-id is empty", p.id));
        }
        for alg in p.algorithms() {
            if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                return Err(format!(
                    "provider {:?}: algorithm {alg:?} is not accepted (use some of {})",
                    p.id,
                    SUPPORTED_ALGORITHMS.join(", ")
                ));
            }
        }
    }
    Ok(providers)
}

/// The algorithms an administrator may allow: asymmetric signatures only (an HMAC key is the client secret, and
/// `none` is no signature at all).
pub const SUPPORTED_ALGORITHMS: [&str; 9] =
    ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// Why a redirect URI is refused.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    const WHY: &str = "redirect_uri must be a loopback address: http://127.0.0.1:PORT/…, http://[::1]:PORT/… or \
                       http://localhost:PORT/…";
    let rest = uri.strip_prefix("http://").ok_or(WHY)?;
    if uri.len() > 512 || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(WHY.into());
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if path.contains('#') {
        return Err("redirect_uri must not carry a fragment".into());
    }
    let port = if let Some(p) = authority.strip_prefix("127.0.0.1:") {
        p
    } else if let Some(p) = authority.strip_prefix("[::1]:") {
        p
    } else if let Some(p) = authority.strip_prefix("localhost:") {
        p
    } else {
        return Err(WHY.into());
    };
    match port.parse::<u16>() {
        Ok(n) if n > 0 && port.chars().all(|c| c.is_ascii_digit()) => Ok(()),
        _ => Err(WHY.into()),
    }
}

/// A client challenge is base64url(SHA-256(verifier)) without padding: 43 characters.
pub fn check_challenge(challenge: &str) -> Result<(), String> {
    if challenge.len() == 43 && challenge.bytes().all(is_base64url) {
        Ok(())
    } else {
        Err("challenge must be base64url(SHA-256(verifier)) without padding (43 characters)".into())
    }
}

/// State values this plugin makes are base64url; anything else cannot be one of ours (and is never used as a key).
pub fn plausible_state(state: &str) -> bool {
    (16..=128).contains(&state.len()) && state.bytes().all(is_base64url)
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Turn a claim value into an account name by the relay's rules (lower-case `a-z 0-9 . _ -`, starting with a letter
/// or digit, at most 64 bytes): an e-mail-shaped value is cut at `@`, letters are lower-cased, every run of other
/// characters becomes one `-`, and leading and trailing punctuation is dropped.
pub fn sanitise_name(claim: &str) -> Result<String, String> {
    let local = claim.split('@').next().unwrap_or_default();
    let mut name = String::new();
    let mut pending_dash = false;
    for c in local.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
            if pending_dash && !name.is_empty() {
                name.push('-');
            }
            pending_dash = false;
            name.push(c);
        } else {
            pending_dash = true;
        }
    }
    let name = name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut name: String = name.chars().take(MAX_NAME_LEN).collect();
    while name.ends_with(['.', '-', '_']) {
        name.pop();
    }
    if name.is_empty() {
        return Err(format!("{claim:?} gives no usable account name (a-z, 0-9, '.', '_', '-')"));
    }
    Ok(name)
}

/// The groups a claim lists: a JSON array of strings, or one string. Anything else is no groups.
pub fn groups_from_claim(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).map(str::to_owned).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Whether a login by a member of `groups` is allowed: always when `allowed` is empty, else when they share one.
pub fn login_allowed(allowed: &[String], groups: &[String]) -> bool {
    allowed.is_empty() || groups.iter().any(|g| allowed.contains(g))
}

/// The relay groups kept on the account: the mapped names when a map is set (unmapped groups dropped), else the
/// provider's names. Sorted, without repeats, and only printable names of at most 128 bytes.
pub fn map_groups(map: &BTreeMap<String, String>, groups: &[String]) -> Vec<String> {
    let mut out: Vec<String> = groups
        .iter()
        .filter_map(|g| if map.is_empty() { Some(g.clone()) } else { map.get(g).cloned() })
        .filter(|g| !g.is_empty() && g.len() <= 128 && !g.chars().any(char::is_control))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Percent-encode a query component (RFC 3986 unreserved characters stay).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decode an `application/x-www-form-urlencoded` query into pairs (`+` is a space; bad escapes are kept as-is).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The place to send the browser back to the CLI: `redirect_uri` with the extra query parameters appended.
pub fn with_query(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = redirect_uri.to_owned();
    for (k, v) in params {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(k);
        url.push('=');
        url.push_str(&url_encode(v));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_redirects_are_accepted() {
        for ok in [
            "http://127.0.0.1:43123/callback",
            "http://[::1]:8080/callback",
            "http://localhost:1/",
            "http://127.0.0.1:65535",
            "http://127.0.0.1:5000/cb?x=1",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://127.0.0.1:43123/callback",
            "http://evil.example:80/callback",
            "http://127.0.0.1.evil.example:80/",
            "http://127.0.0.1@evil.example:80/",
            "http://evil.example/?http://127.0.0.1:1/",
            "http://localhost.evil.example:80/",
            "http://127.0.0.1/callback",
            "http://127.0.0.1:0/callback",
            "http://127.0.0.1:99999/callback",
            "http://127.0.0.1:+80/callback",
            "http://127.0.0.1:80/cb#frag",
            "http://127.0.0.1:80/c b",
            "http://10.0.0.1:80/callback",
            "javascript:alert(1)",
            "",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn challenges_are_s256_shaped() {
        assert!(check_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM").is_ok());
        assert!(check_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c=").is_err());
        assert!(check_challenge("short").is_err());
        assert!(check_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM").is_err());
        assert!(plausible_state("abcdefghijklmnopqrstuv"));
        assert!(!plausible_state("../../etc/passwd-aaaaaa"));
        assert!(!plausible_state("short"));
    }

    #[test]
    fn claims_become_relay_account_names() {
        assert_eq!(sanitise_name("alice").unwrap(), "alice");
        assert_eq!(sanitise_name("Alice.Smith").unwrap(), "alice.smith");
        assert_eq!(sanitise_name("alice@example.com").unwrap(), "alice");
        assert_eq!(sanitise_name("Jean Dupont").unwrap(), "jean-dupont");
        assert_eq!(sanitise_name("  _bob__ ").unwrap(), "bob");
        assert_eq!(sanitise_name("José").unwrap(), "jos");
        assert_eq!(sanitise_name("a  /\\  b").unwrap(), "a-b");
        assert_eq!(sanitise_name(&"x".repeat(100)).unwrap().len(), MAX_NAME_LEN);
        assert!(sanitise_name("").is_err());
        assert!(sanitise_name("@example.com").is_err());
        assert!(sanitise_name("日本").is_err());
        assert!(sanitise_name("---").is_err());
        // Whatever comes out passes the relay's own rule.
        for claim in ["Zoë Ünal", "-.x.-", "a@b@c", "DOMAIN\\user", "9lives", "a\u{0}b"] {
            if let Ok(name) = sanitise_name(claim) {
                assert!(name.len() <= MAX_NAME_LEN);
                assert!(name.starts_with(|c: char| c.is_ascii_alphanumeric()), "{name}");
                assert!(name.chars().all(|c| c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, '.' | '_' | '-')), "{name}");
            }
        }
    }

    #[test]
    fn groups_are_mapped_and_gate_logins() {
        let groups = groups_from_claim(Some(&serde_json::json!(["eng", "ops", 3, "eng"])));
        assert_eq!(groups, ["eng", "ops", "eng"]);
        assert_eq!(groups_from_claim(Some(&serde_json::json!("solo"))), ["solo"]);
        assert!(groups_from_claim(Some(&serde_json::json!({"a": 1}))).is_empty());
        assert!(groups_from_claim(None).is_empty());

        let none = BTreeMap::new();
        assert_eq!(map_groups(&none, &groups), ["eng", "ops"]);
        let map = BTreeMap::from([("eng".to_owned(), "engineering".to_owned())]);
        assert_eq!(map_groups(&map, &groups), ["engineering"]);
        assert!(map_groups(&map, &["sales".to_owned()]).is_empty());

        assert!(login_allowed(&[], &[]));
        assert!(login_allowed(&["ops".to_owned()], &groups));
        assert!(!login_allowed(&["sales".to_owned()], &groups));
        assert!(!login_allowed(&["ops".to_owned()], &[]));
    }

    #[test]
    fn provider_settings_are_checked() {
        let ok = parse_providers(
            r#"[{"id":"corp","name":"Corp","issuer":"https://id.example","client-id":"imfree","client-secret":"s",
                 "provision":true,"allowed-groups":["staff"],"group-map":{"eng":"engineering"}},
                {"id":"lab","issuer":"http://127.0.0.1:9000","client-id":"x","algorithms":["es256"]}]"#,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].algorithms(), ["RS256", "ES256"]);
        assert_eq!(ok[1].algorithms(), ["ES256"]);
        assert_eq!(ok[1].display_name(), "lab");
        assert!(!ok[1].provision);
        assert_eq!(ok[0].username_claim(), "preferred_username");
        for bad in [
            r#"[{"id":"Corp","issuer":"https://x","client-id":"a"}]"#,
            r#"[{"id":"a","issuer":"ftp://x","client-id":"a"}]"#,
            r#"[{"id":"a","issuer":"https://x","client-id":""}]"#,
            r#"[{"id":"a","issuer":"https://x","client-id":"a","algorithms":["none"]}]"#,
            r#"[{"id":"a","issuer":"https://x","client-id":"a","algorithms":["HS256"]}]"#,
            r#"[{"id":"a","issuer":"https://x","client-id":"a","typo":1}]"#,
            r#"[{"id":"a","issuer":"https://x","client-id":"a"},{"id":"a","issuer":"https://y","client-id":"b"}]"#,
            r#"{"id":"a"}"#,
        ] {
            assert!(parse_providers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_round_trip() {
        let q = parse_query("redirect_uri=http%3A%2F%2F127.0.0.1%3A5%2Fcb&challenge=abc&x=a+b&bad=%zz");
        assert_eq!(q[0], ("redirect_uri".into(), "http://127.0.0.1:5/cb".into()));
        assert_eq!(q[2].1, "a b");
        assert_eq!(q[3].1, "%zz");
        assert_eq!(
            with_query("http://127.0.0.1:5/cb", &[("error", "x y"), ("error_description", "a&b")]),
            "http://127.0.0.1:5/cb?error=x%20y&error_description=a%26b"
        );
        assert_eq!(with_query("http://127.0.0.1:5/cb?k=1", &[("code", "c")]), "http://127.0.0.1:5/cb?k=1&code=c");
    }
}
