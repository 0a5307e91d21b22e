//! SSO: a relay-scope plugin that logs people in through OpenID Connect providers.
//!
//! The protocol runs here, inside the sandbox, with the `openidconnect` crate over the host's outbound HTTP: the
//! relay itself never parses a token. Routes (below `/plugins/sso`):
//!
//! - `GET /providers`: the configured providers as JSON, for clients to offer beside password login.
//! - `GET /login/<provider>?redirect_uri=…&challenge=…`: the CLI's loopback address and its PKCE challenge; answers
//!   302 to the provider with fresh state, nonce and PKCE S256 verifier, kept in kv until the callback.
//! - `GET /callback?code=…&state=…`: single-use state; code exchanged with the PKCE verifier; ID token verified
//!   (signature against the provider's keys with the allowed algorithms only, `iss`, `aud`/`azp`, `exp`, `iat`,
//!   `nonce`, nonce never seen before); the account found by issuer and subject, or provisioned; a login code bound to
//!   the CLI's challenge; 302 back to the CLI with `code` (or `error` and `error_description`).
//! - `GET /logout/<provider>`: 302 to the provider's `end_session_endpoint`, when it has one.
//!
//! It must not touch anything but its own kv keys (`pending/`, `nonce/`, `discovery/`, `sweep-timer`) and the
//! accounts interface; it never logs a token, code, verifier or secret.

pub mod oidc;
pub mod policy;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use imfree_plugin_sdk::types::{ExternalIdentity, HttpRequest, HttpResponse, Profile, TimerFired};
use imfree_plugin_sdk::{HostErrorExt, Plugin, accounts, config, export_plugin, http, kv, log, timers};
use serde::{Deserialize, Serialize};

use crate::oidc::{Discovery, Refusal};
use crate::policy::ProviderConfig;

/// How long a discovery document is reused before it is fetched again.
const DISCOVERY_TTL_SECS: i64 = 3600;
/// Default for `login-timeout-secs`: how long a started login waits for the provider's callback.
const DEFAULT_LOGIN_TIMEOUT_SECS: i64 = 600;

struct Sso;

/// A login between `/login` and `/callback`, stored under `pending/<state>`.
#[derive(Debug, Serialize, Deserialize)]
struct PendingLogin {
    provider: String,
    pkce_verifier: String,
    nonce: String,
    redirect_uri: String,
    challenge: String,
    created: i64,
}

/// A cached discovery document, under `discovery/<provider>`.
#[derive(Serialize, Deserialize)]
struct CachedDiscovery {
    fetched: i64,
    document: String,
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn providers() -> Result<Vec<ProviderConfig>, String> {
    match config::get("providers") {
        Some(json) if !json.trim().is_empty() => policy::parse_providers(&json),
        _ => Ok(Vec::new()),
    }
}

fn provider(id: &str) -> Result<Option<ProviderConfig>, String> {
    Ok(providers()?.into_iter().find(|p| p.id == id))
}

fn public_url() -> String {
    config::get_or("public-url", "https://127.0.0.1:7878").trim_end_matches('/').to_owned()
}

fn callback_url() -> String {
    format!("{}/plugins/sso/callback", public_url())
}

fn login_timeout_secs() -> i64 {
    config::parsed::<i64>("login-timeout-secs").filter(|s| *s > 0).unwrap_or(DEFAULT_LOGIN_TIMEOUT_SECS)
}

// ---------------------------------------------------------------------------------------------------------------
// Outbound HTTP for openidconnect: the host's client, so every request is checked against the grants.

/// `openidconnect`'s HTTP client, over [`imfree_plugin_sdk::http`].
struct HostHttp;

/// A request the host did not complete.
#[derive(Debug)]
struct HostHttpError(String);

impl std::fmt::Display for HostHttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostHttpError {}

impl openidconnect::SyncHttpClient for HostHttp {
    type Error = HostHttpError;

    fn call(&self, request: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, HostHttpError> {
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter(|(name, _)| name.as_str() != "host")
            .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
            .collect();
        let borrowed: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = request.body();
        let body = if body.is_empty() && request.method() == openidconnect::http::Method::GET { None } else { Some(&body[..]) };
        let response = http::request(request.method().as_str(), &request.uri().to_string(), &borrowed, body)
            .map_err(|e| HostHttpError(e.to_string()))?;
        let mut builder = openidconnect::http::Response::builder().status(response.status);
        for (name, value) in &response.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder.body(response.body).map_err(|e| HostHttpError(format!("the provider's response: {e}")))
    }
}

/// The provider's discovery document, from kv when fresh, else fetched (and stored).
fn discovery(provider: &ProviderConfig) -> Result<Discovery, Refusal> {
    let key = format!("discovery/{}", provider.id);
    if let Ok(Some(bytes)) = kv::get(&key)
        && let Ok(cached) = serde_json::from_slice::<CachedDiscovery>(&bytes)
        && now().timestamp() - cached.fetched < DISCOVERY_TTL_SECS
        && let Ok(d) = oidc::parse_discovery(&provider.issuer, cached.document.as_bytes())
    {
        return Ok(d);
    }
    let url = oidc::discovery_url(&provider.issuer);
    let response = http::get(&url, &[("accept", "application/json")]).map_err(|e| {
        Refusal::new("provider_unavailable", format!("cannot reach provider {:?}: {e}", provider.id))
    })?;
    if !response.is_success() {
        return Err(Refusal::new(
            "provider_unavailable",
            format!("provider {:?} answered {} for its discovery document", provider.id, response.status),
        ));
    }
    let parsed = oidc::parse_discovery(&provider.issuer, &response.body)?;
    let cached = CachedDiscovery { fetched: now().timestamp(), document: response.text() };
    if let Ok(bytes) = serde_json::to_vec(&cached)
        && let Err(e) = kv::set(&key, &bytes)
    {
        log::warn(&format!("sso: cannot cache the discovery document of {}: {}", provider.id, e.describe()));
    }
    Ok(parsed)
}

// ---------------------------------------------------------------------------------------------------------------
// Responses.

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn page(status: u16, title: &str, text: &str) -> HttpResponse {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>{t}</title><h1>{t}</h1><p>{x}</p>\n",
        t = escape_html(title),
        x = escape_html(text)
    );
    HttpResponse {
        status,
        headers: vec![
            ("content-type".into(), "text/html; charset=utf-8".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: body.into_bytes(),
    }
}

fn redirect(location: &str) -> HttpResponse {
    HttpResponse {
        status: 302,
        headers: vec![
            ("location".into(), location.to_owned()),
            ("cache-control".into(), "no-store".into()),
            ("referrer-policy".into(), "no-referrer".into()),
        ],
        body: Vec::new(),
    }
}

fn json(status: u16, value: &serde_json::Value) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: value.to_string().into_bytes(),
    }
}

/// Send the browser back to the CLI with the refusal.
fn refuse_to(redirect_uri: &str, provider: &str, refusal: &Refusal) -> HttpResponse {
    log::warn(&format!("sso: login refused: provider={provider} error={}: {}", refusal.code, refusal.text));
    redirect(&policy::with_query(redirect_uri, &[("error", refusal.code), ("error_description", &refusal.text)]))
}

// ---------------------------------------------------------------------------------------------------------------
// Routes.

fn list_providers() -> HttpResponse {
    match providers() {
        Ok(list) => json(
            200,
            &serde_json::Value::Array(
                list.iter()
                    .map(|p| {
                        serde_json::json!({
                            "id": p.id,
                            "name": p.display_name(),
                            "login": format!("/plugins/sso/login/{}", p.id),
                        })
                    })
                    .collect(),
            ),
        ),
        Err(e) => page(500, "SSO is misconfigured", &e),
    }
}

fn query_value<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn start_login(provider_id: &str, query: &str) -> HttpResponse {
    let provider = match provider(provider_id) {
        Ok(Some(p)) => p,
        Ok(None) => return page(404, "Unknown provider", &format!("There is no SSO provider {provider_id:?} here.")),
        Err(e) => return page(500, "SSO is misconfigured", &e),
    };
    let query = policy::parse_query(query);
    let redirect_uri = query_value(&query, "redirect_uri").unwrap_or_default();
    let challenge = query_value(&query, "challenge").unwrap_or_default();
    if let Err(why) = policy::check_redirect_uri(redirect_uri) {
        log::warn(&format!("sso: login refused before it started: provider={provider_id} error=invalid_redirect_uri"));
        return page(400, "Login refused", &why);
    }
    if let Err(why) = policy::check_challenge(challenge) {
        return page(400, "Login refused", &why);
    }
    let hint = query_value(&query, "login_hint")
        .filter(|h| !h.is_empty() && h.len() <= 256 && !h.chars().any(char::is_control));
    let discovery = match discovery(&provider) {
        Ok(d) => d,
        Err(r) => return refuse_to(redirect_uri, provider_id, &r),
    };
    let auth = match oidc::authorize(&provider, &discovery, &callback_url(), hint) {
        Ok(a) => a,
        Err(r) => return refuse_to(redirect_uri, provider_id, &r),
    };
    let pending = PendingLogin {
        provider: provider.id.clone(),
        pkce_verifier: auth.pkce_verifier,
        nonce: auth.nonce,
        redirect_uri: redirect_uri.to_owned(),
        challenge: challenge.to_owned(),
        created: now().timestamp(),
    };
    let stored = serde_json::to_vec(&pending)
        .map_err(|e| e.to_string())
        .and_then(|bytes| kv::set(&format!("pending/{}", auth.state), &bytes).map_err(|e| e.describe()));
    if let Err(e) = stored {
        log::error(&format!("sso: cannot store a pending login: {e}"));
        return refuse_to(redirect_uri, provider_id, &Refusal::new("server_error", "the relay cannot store the login"));
    }
    redirect(&auth.url)
}

fn callback(query: &str) -> HttpResponse {
    let query = policy::parse_query(query);
    let state = query_value(&query, "state").unwrap_or_default();
    if !policy::plausible_state(state) {
        log::warn("sso: callback refused: error=invalid_state (malformed)");
        return page(400, "Login refused", "This login is unknown (no valid state). Start again from imfree.");
    }
    let key = format!("pending/{state}");
    let pending = match kv::get(&key) {
        Ok(Some(bytes)) => serde_json::from_slice::<PendingLogin>(&bytes).ok(),
        Ok(None) => None,
        Err(e) => {
            log::error(&format!("sso: cannot read pending logins: {}", e.describe()));
            return page(503, "Try again", "The relay cannot check this login right now.");
        }
    };
    let Some(pending) = pending else {
        log::warn("sso: callback refused: error=invalid_state (unknown or already used)");
        return page(400, "Login refused", "This login is unknown or was already used. Start again from imfree.");
    };
    // Single use: gone before anything else happens, whatever the outcome.
    if let Err(e) = kv::delete(&key) {
        log::error(&format!("sso: cannot delete a pending login: {}", e.describe()));
        return page(503, "Try again", "The relay cannot complete this login right now.");
    }
    match finish_login(&pending, &query) {
        Ok(code) => redirect(&policy::with_query(&pending.redirect_uri, &[("code", &code)])),
        Err(r) => refuse_to(&pending.redirect_uri, &pending.provider, &r),
    }
}

fn host_refusal(what: &str, e: imfree_plugin_sdk::HostError) -> Refusal {
    log::error(&format!("sso: {what}: {}", e.describe()));
    Refusal::new("server_error", format!("the relay could not {what}"))
}

/// Everything after the pending login was taken: returns the login code.
fn finish_login(pending: &PendingLogin, query: &[(String, String)]) -> Result<String, Refusal> {
    let started = Utc.timestamp_opt(pending.created, 0).single().unwrap_or_else(now);
    if now().timestamp() - pending.created > login_timeout_secs() {
        return Err(Refusal::new("login_expired", "the login took too long; start again"));
    }
    if let Some(error) = query_value(query, "error") {
        let shown = |s: &str| s.chars().filter(|c| !c.is_control()).take(200).collect::<String>();
        let description = query_value(query, "error_description").map(shown).unwrap_or_default();
        return Err(Refusal::new(
            "provider_refused",
            format!("the provider refused the login: {} {description}", shown(error)).trim_end().to_owned(),
        ));
    }
    let code = query_value(query, "code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Refusal::new("invalid_request", "the provider sent no code"))?;
    let provider = provider(&pending.provider)
        .map_err(|e| Refusal::new("server_error", e))?
        .ok_or_else(|| Refusal::new("server_error", format!("provider {:?} is no longer configured", pending.provider)))?;
    // RFC 9207: a provider that names itself in the callback must be the one this login went to (mix-up attack).
    if let Some(iss) = query_value(query, "iss").filter(|iss| *iss != provider.issuer) {
        return Err(Refusal::new(
            "invalid_issuer",
            format!("the callback comes from issuer {iss:?}, not from this login's provider"),
        ));
    }
    let discovery = discovery(&provider)?;
    let grant = oidc::CodeGrant {
        code,
        pkce_verifier: &pending.pkce_verifier,
        nonce: &pending.nonce,
        login_started: started,
    };
    let verified = oidc::exchange_and_verify(&HostHttp, &provider, &discovery, &callback_url(), &grant)?;

    // Replay: a token's nonce is accepted once, and remembered until the token expires (keyed by the token's own
    // claim, so the record holds even if the comparison above were ever wrong).
    let token_nonce = verified.nonce.as_deref().unwrap_or(&pending.nonce);
    if !policy::plausible_state(token_nonce) {
        return Err(Refusal::new("invalid_nonce", "the ID token's nonce is malformed"));
    }
    let nonce_key = format!("nonce/{token_nonce}");
    match kv::get(&nonce_key) {
        Ok(Some(_)) => return Err(Refusal::new("nonce_replayed", "this ID token's nonce was already used")),
        Ok(None) => {}
        Err(e) => return Err(host_refusal("check the nonce", e)),
    }
    kv::set_string(&nonce_key, &verified.expires.to_string()).map_err(|e| host_refusal("record the nonce", e))?;

    let groups = policy::groups_from_claim(verified.claims.get(provider.groups_claim()));
    if !policy::login_allowed(&provider.allowed_groups, &groups) {
        return Err(Refusal::new(
            "not_allowed",
            format!("this account is not in a group allowed to log in here ({})", provider.allowed_groups.join(", ")),
        ));
    }
    let profile = Profile {
        display_name: verified.text_claim(provider.display_name_claim()),
        email: if verified.email_verified { verified.text_claim("email") } else { None },
        groups: policy::map_groups(&provider.group_map, &groups),
    };
    let identity = ExternalIdentity { issuer: verified.issuer.clone(), subject: verified.subject.clone() };

    let name = match accounts::find_linked(&identity).map_err(|e| host_refusal("look up the linked account", e))? {
        Some(name) => {
            accounts::update_profile(&name, &profile).map_err(|e| host_refusal("update the profile", e))?;
            log::info(&format!("sso: login: provider={} account={name} (linked)", provider.id));
            name
        }
        None if provider.provision => {
            let claim = verified.text_claim(provider.username_claim()).ok_or_else(|| {
                Refusal::new(
                    "invalid_id_token",
                    format!("the ID token has no {:?} claim to name the account", provider.username_claim()),
                )
            })?;
            let name = policy::sanitise_name(&claim).map_err(|e| Refusal::new("invalid_username", e))?;
            let taken = |name: &str| {
                Refusal::new(
                    "name_taken",
                    format!(
                        "the account name {name:?} is already taken on this relay; an administrator can link it \
                         to this provider, or choose another username claim"
                    ),
                )
            };
            if accounts::exists(&name).map_err(|e| host_refusal("check the account name", e))? {
                return Err(taken(&name));
            }
            match accounts::provision(&name, &identity, &profile) {
                Ok(()) => {}
                Err(imfree_plugin_sdk::HostError::Invalid(_)) => return Err(taken(&name)),
                Err(e) => return Err(host_refusal("create the account", e)),
            }
            log::info(&format!("sso: login: provider={} account={name} (provisioned)", provider.id));
            name
        }
        None => {
            return Err(Refusal::new(
                "not_provisioned",
                "no account on this relay is linked to this identity, and this provider does not create accounts",
            ));
        }
    };
    accounts::issue_login_code(&name, &pending.challenge).map_err(|e| host_refusal("issue a login code", e))
}

fn logout(provider_id: &str, query: &str) -> HttpResponse {
    let provider = match provider(provider_id) {
        Ok(Some(p)) => p,
        Ok(None) => return page(404, "Unknown provider", &format!("There is no SSO provider {provider_id:?} here.")),
        Err(e) => return page(500, "SSO is misconfigured", &e),
    };
    let end_session = match discovery(&provider) {
        Ok(d) => d.end_session_endpoint,
        Err(r) => return page(502, "Provider unavailable", &r.text),
    };
    let Some(endpoint) = end_session else {
        return page(200, "Signed out of imfree", "This provider has no logout endpoint; your imfree session has ended.");
    };
    let query = policy::parse_query(query);
    let mut params = vec![("client_id", provider.client_id.as_str())];
    if let Some(back) = query_value(&query, "post_logout_redirect_uri").filter(|u| policy::check_redirect_uri(u).is_ok()) {
        params.push(("post_logout_redirect_uri", back));
    }
    redirect(&policy::with_query(&endpoint, &params))
}

// ---------------------------------------------------------------------------------------------------------------
// Housekeeping: expired pending logins and remembered nonces go.

fn sweep() {
    let now = now().timestamp();
    let timeout = login_timeout_secs();
    if let Ok(keys) = kv::list_keys("pending/") {
        for key in keys {
            let expired = match kv::get(&key) {
                Ok(Some(bytes)) => serde_json::from_slice::<PendingLogin>(&bytes).map_or(true, |p| now - p.created > timeout),
                _ => false,
            };
            if expired {
                let _ = kv::delete(&key);
            }
        }
    }
    if let Ok(keys) = kv::list_keys("nonce/") {
        for key in keys {
            let expired = match kv::get_string(&key) {
                Ok(Some(exp)) => exp.parse::<i64>().map_or(true, |exp| exp < now),
                _ => false,
            };
            if expired {
                let _ = kv::delete(&key);
            }
        }
    }
}

impl Plugin for Sso {
    fn init() -> Result<(), String> {
        // A configuration error stops the plugin from starting, so the administrator sees it at once.
        let list = providers()?;
        if list.is_empty() {
            log::warn("sso: no providers are configured");
        }
        // Every fresh instance runs init: replace the sweep timer rather than add another.
        if let Ok(Some(id)) = kv::get_string("sweep-timer")
            && let Ok(id) = id.parse()
        {
            let _ = timers::cancel(id);
        }
        match timers::repeating("sweep", Duration::from_secs(60)) {
            Ok(id) => {
                let _ = kv::set_string("sweep-timer", &id.to_string());
            }
            Err(e) => log::warn(&format!("sso: no sweep timer ({}); expired logins stay in kv", e.describe())),
        }
        Ok(())
    }

    fn http(req: HttpRequest) -> HttpResponse {
        if req.method != "GET" {
            return page(405, "Method not allowed", "Use GET.");
        }
        let path = req.path.as_str();
        if path == "/providers" {
            list_providers()
        } else if path == "/callback" {
            callback(&req.query)
        } else if let Some(id) = path.strip_prefix("/login/") {
            start_login(id, &req.query)
        } else if let Some(id) = path.strip_prefix("/logout/") {
            logout(id, &req.query)
        } else {
            page(404, "Not found", "No such SSO page.")
        }
    }

    fn timer(t: TimerFired) {
        if t.name == "sweep" {
            sweep();
        }
    }
}

export_plugin!(Sso);
