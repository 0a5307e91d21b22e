//! The OpenID Connect protocol, with the `openidconnect` crate over whatever [`SyncHttpClient`] the caller gives (the
//! host's outbound HTTP in the plugin): discovery, the authorization URL (state, nonce, PKCE S256), the code
//! exchange and the ID token checks. It decides nothing about accounts; `lib.rs` does that with what this returns.

use chrono::{DateTime, Duration, Utc};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IdToken,
    JsonWebKeySet, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
    SyncHttpClient, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::policy::ProviderConfig;

/// How much the provider's clock may differ from ours when `iat` is checked.
const CLOCK_SKEW_SECS: i64 = 120;

/// A refusal: a machine code (sent to the CLI as `error`) and a sentence for people (`error_description`). Neither
/// ever carries a token, code or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable code, e.g. `invalid_issuer`.
    pub code: &'static str,
    /// What happened, for the person logging in.
    pub text: String,
}

impl Refusal {
    /// A refusal with `code` and `text`.
    pub fn new(code: &'static str, text: impl Into<String>) -> Self {
        Refusal { code, text: text.into() }
    }
}

/// What the relay learns from the provider's discovery document.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The parsed metadata (without keys; those are fetched at each callback).
    pub metadata: CoreProviderMetadata,
    /// `end_session_endpoint`, which the core metadata type does not carry.
    pub end_session_endpoint: Option<String>,
}

#[derive(Deserialize)]
struct LogoutMetadata {
    end_session_endpoint: Option<String>,
}

/// Parse a discovery document and check that it speaks for `issuer` (OpenID Connect Discovery 1.0, section 4.3).
pub fn parse_discovery(issuer: &str, json: &[u8]) -> Result<Discovery, Refusal> {
    let metadata: CoreProviderMetadata = serde_json::from_slice(json).map_err(|e| {
        Refusal::new("provider_unavailable", format!("the provider's discovery document is not valid: {e}"))
    })?;
    if metadata.issuer().as_str() != issuer {
        return Err(Refusal::new(
            "provider_unavailable",
            format!("the provider's discovery document names issuer {:?}, not {issuer:?}", metadata.issuer().as_str()),
        ));
    }
    let logout: LogoutMetadata =
        serde_json::from_slice(json).unwrap_or(LogoutMetadata { end_session_endpoint: None });
    Ok(Discovery { metadata, end_session_endpoint: logout.end_session_endpoint })
}

/// The URL of the discovery document of `issuer`.
pub fn discovery_url(issuer: &str) -> String {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
}

/// What `/login` keeps until the callback, and sends the browser to.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The provider's authorization URL with every parameter.
    pub url: String,
    /// The state parameter (the key of the pending login).
    pub state: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier for the code exchange.
    pub pkce_verifier: String,
}

fn client(
    provider: &ProviderConfig,
    discovery: &Discovery,
    callback_url: &str,
) -> Result<
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    Refusal,
> {
    let redirect = RedirectUrl::new(callback_url.to_owned())
        .map_err(|e| Refusal::new("server_error", format!("public-url gives no valid callback URL: {e}")))?;
    Ok(CoreClient::from_provider_metadata(
        discovery.metadata.clone(),
        ClientId::new(provider.client_id.clone()),
        provider.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(redirect))
}

/// Build the authorization request: fresh state, nonce and PKCE S256 verifier.
pub fn authorize(
    provider: &ProviderConfig,
    discovery: &Discovery,
    callback_url: &str,
    login_hint: Option<&str>,
) -> Result<Authorization, Refusal> {
    let client = client(provider, discovery, callback_url)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .set_pkce_challenge(challenge);
    // `openid` is added by the crate itself.
    for scope in provider.all_scopes().into_iter().filter(|s| s != "openid") {
        request = request.add_scope(Scope::new(scope));
    }
    if let Some(hint) = login_hint {
        request = request.add_extra_param("login_hint", hint.to_owned());
    }
    let (url, state, nonce) = request.url();
    Ok(Authorization {
        url: url.to_string(),
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
    })
}

/// Every claim of the ID token, kept as JSON so the administrator can name any claim in the settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AllClaims {
    /// The claims by name.
    #[serde(flatten)]
    pub claims: Map<String, Value>,
}

impl AdditionalClaims for AllClaims {}

type FullIdToken =
    IdToken<AllClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// The verified identity.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `exp`, seconds since the epoch (how long the nonce must be remembered).
    pub expires: i64,
    /// Every claim of the token (the standard ones too), for the settings' claim names.
    pub claims: Map<String, Value>,
    /// Whether `email_verified` was true.
    pub email_verified: bool,
    /// The token's `nonce` claim (equal to the login's after verification).
    pub nonce: Option<String>,
}

impl Verified {
    /// A claim as text (strings as-is, numbers as written), if present.
    pub fn text_claim(&self, name: &str) -> Option<String> {
        match self.claims.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// What the callback brings and the pending login kept: the code and what it must be checked against.
#[derive(Debug, Clone, Copy)]
pub struct CodeGrant<'a> {
    /// The authorization code from the callback.
    pub code: &'a str,
    /// The PKCE verifier made at `/login`.
    pub pkce_verifier: &'a str,
    /// The nonce the ID token must carry.
    pub nonce: &'a str,
    /// When `/login` ran: the token may not be issued before.
    pub login_started: DateTime<Utc>,
}

/// Exchange the code (with the PKCE verifier) and verify the ID token: signature against the provider's current
/// keys with only the allowed algorithms, `iss`, `aud` (and `azp` when there are several audiences), `exp`, `iat`
/// (not before the login started, not in the future) and `nonce`.
pub fn exchange_and_verify<C: SyncHttpClient>(
    http: &C,
    provider: &ProviderConfig,
    discovery: &Discovery,
    callback_url: &str,
    grant: &CodeGrant<'_>,
) -> Result<Verified, Refusal> {
    let mut discovery = discovery.clone();
    let jwks = JsonWebKeySet::<CoreJsonWebKey>::fetch(discovery.metadata.jwks_uri(), http)
        .map_err(|e| Refusal::new("provider_unavailable", format!("cannot fetch the provider's keys: {e}")))?;
    discovery.metadata = discovery.metadata.set_jwks(jwks);
    let client = client(provider, &discovery, callback_url)?;

    let response = client
        .exchange_code(AuthorizationCode::new(grant.code.to_owned()))
        .map_err(|e| Refusal::new("provider_unavailable", format!("the provider has no token endpoint: {e}")))?
        .set_pkce_verifier(PkceCodeVerifier::new(grant.pkce_verifier.to_owned()))
        .request(http)
        .map_err(|e| exchange_refusal(&e))?;
    let raw = response
        .id_token()
        .ok_or_else(|| Refusal::new("invalid_id_token", "the provider returned no ID token"))?
        .to_string();
    let token: FullIdToken = raw
        .parse()
        .map_err(|e| Refusal::new("invalid_id_token", format!("the ID token is malformed: {e}")))?;

    let mut algorithms = Vec::new();
    for name in provider.algorithms() {
        let alg: CoreJwsSigningAlgorithm = serde_json::from_value(Value::String(name.clone()))
            .map_err(|_| Refusal::new("server_error", format!("algorithm {name:?} is unknown")))?;
        algorithms.push(alg);
    }
    let not_before = grant.login_started - Duration::seconds(CLOCK_SKEW_SECS);
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs(algorithms)
        .set_issue_time_verifier_fn(move |iat| {
            let now = Utc::now();
            if iat > now + Duration::seconds(CLOCK_SKEW_SECS) {
                Err("the ID token is issued in the future".to_owned())
            } else if iat < not_before {
                Err("the ID token was issued before this login started".to_owned())
            } else {
                Ok(())
            }
        });
    let claims = token.claims(&verifier, &Nonce::new(grant.nonce.to_owned())).map_err(refusal_for)?;

    let mut all = claims.additional_claims().claims.clone();
    // The standard claims are parsed into their own fields; put the ones an administrator may name back in.
    let standard = serde_json::to_value(claims).unwrap_or(Value::Null);
    if let Value::Object(map) = standard {
        for (k, v) in map {
            all.entry(k).or_insert(v);
        }
    }
    Ok(Verified {
        issuer: claims.issuer().as_str().to_owned(),
        subject: claims.subject().as_str().to_owned(),
        expires: claims.expiration().timestamp(),
        email_verified: claims.email_verified() == Some(true),
        nonce: claims.nonce().map(|n| n.secret().clone()),
        claims: all,
    })
}

/// The machine code and sentence for each way an ID token fails.
fn refusal_for(e: ClaimsVerificationError) -> Refusal {
    use ClaimsVerificationError as E;
    match e {
        E::InvalidIssuer(d) => Refusal::new("invalid_issuer", format!("the ID token is from the wrong issuer: {d}")),
        E::InvalidAudience(d) => Refusal::new("invalid_audience", format!("the ID token is not for this relay: {d}")),
        E::Expired(d) => Refusal::new("token_expired", format!("the ID token has expired: {d}")),
        E::InvalidNonce(_) => Refusal::new(
            "invalid_nonce",
            "the ID token's nonce is not this login's (a replayed or substituted token)",
        ),
        E::SignatureVerification(SignatureVerificationError::DisallowedAlg(d))
        | E::SignatureVerification(SignatureVerificationError::UnsupportedAlg(d)) => Refusal::new(
            "invalid_signature",
            format!("the ID token is signed with an algorithm this relay does not accept: {d}"),
        ),
        E::SignatureVerification(SignatureVerificationError::NoSignature) => {
            Refusal::new("invalid_signature", "the ID token is not signed (alg none)")
        }
        E::SignatureVerification(s) => {
            Refusal::new("invalid_signature", format!("the ID token's signature does not verify: {s}"))
        }
        E::Other(d) if d.contains("issued") => Refusal::new("invalid_id_token", d),
        other => Refusal::new("invalid_id_token", format!("the ID token is not valid: {other}")),
    }
}

/// Why the code exchange failed, without the response body (it could echo the code).
fn exchange_refusal<E: std::error::Error>(
    e: &openidconnect::RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> Refusal {
    use openidconnect::RequestTokenError as R;
    match e {
        R::ServerResponse(r) => Refusal::new(
            "token_exchange_failed",
            match r.error_description() {
                Some(d) => format!("the provider refused the code: {} ({d})", r.error().as_ref()),
                None => format!("the provider refused the code: {}", r.error().as_ref()),
            },
        ),
        R::Request(e) => Refusal::new("provider_unavailable", format!("the token request failed: {e}")),
        // The token response is parsed with its ID token, so a malformed or unparsable token lands here.
        R::Parse(e, _) => Refusal::new(
            "invalid_id_token",
            // Only the field's path: serde's message could quote the token.
            format!("the provider's token response is malformed or its ID token cannot be read (at {})", e.path()),
        ),
        R::Other(d) => Refusal::new("token_exchange_failed", d.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_must_name_the_configured_issuer() {
        let doc = br#"{"issuer":"http://127.0.0.1:9000","authorization_endpoint":"http://127.0.0.1:9000/auth",
            "token_endpoint":"http://127.0.0.1:9000/token","jwks_uri":"http://127.0.0.1:9000/jwks",
            "response_types_supported":["code"],"subject_types_supported":["public"],
            "id_token_signing_alg_values_supported":["RS256"],"end_session_endpoint":"http://127.0.0.1:9000/logout"}"#;
        let d = parse_discovery("http://127.0.0.1:9000", doc).unwrap();
        assert_eq!(d.end_session_endpoint.as_deref(), Some("http://127.0.0.1:9000/logout"));
        assert_eq!(parse_discovery("http://127.0.0.1:9001", doc).unwrap_err().code, "provider_unavailable");
        assert!(parse_discovery("http://127.0.0.1:9000", b"{}").is_err());

        let provider = crate::policy::parse_providers(
            r#"[{"id":"lab","issuer":"http://127.0.0.1:9000","client-id":"relay","client-secret":"s","scopes":["groups"]}]"#,
        )
        .unwrap()
        .remove(0);
        let a = authorize(&provider, &d, "https://relay.example/plugins/sso/callback", Some("alice")).unwrap();
        assert!(a.url.starts_with("http://127.0.0.1:9000/auth?"), "{}", a.url);
        for part in ["response_type=code", "client_id=relay", "code_challenge_method=S256", "login_hint=alice",
            "redirect_uri=https%3A%2F%2Frelay.example%2Fplugins%2Fsso%2Fcallback", "groups"] {
            assert!(a.url.contains(part), "{part} in {}", a.url);
        }
        assert!(a.url.contains(&format!("state={}", a.state)));
        assert!(a.url.contains(&format!("nonce={}", a.nonce)));
        assert!(crate::policy::plausible_state(&a.state));
        assert!(a.pkce_verifier.len() >= 43);
        let b = authorize(&provider, &d, "https://relay.example/plugins/sso/callback", None).unwrap();
        assert_ne!((a.state, a.nonce, a.pkce_verifier), (b.state, b.nonce, b.pkce_verifier));
    }
}
