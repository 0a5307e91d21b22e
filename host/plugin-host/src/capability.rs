//! The capability check: a capability works only when the manifest asks for it AND the administrator grants it.
//!
//! A small pure struct with no I/O so every combination is unit-tested here (Zed's extension host does the same).
//! The capability modules in [`crate::capabilities`] call [`CapabilityCheck::check`] before doing anything.

use std::fmt;

use crate::config::Grants;
use crate::manifest::RequestedCapabilities;

/// A capability a guest call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// The plugin's key-value store.
    Kv,
    /// Posting, replying and reacting as the plugin's bot.
    Messaging,
    /// Scheduling timers.
    Timers,
    /// The relay's accounts (linked identities, provisioning, login codes).
    Accounts,
    /// Reading and sending the files of the bot's conversations.
    Files,
    /// E-mail through the administrator's servers.
    Mail,
    /// An outbound HTTP request to this URL.
    HttpOutbound(String),
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::Kv => f.write_str("kv"),
            Capability::Messaging => f.write_str("messaging"),
            Capability::Timers => f.write_str("timers"),
            Capability::Accounts => f.write_str("accounts"),
            Capability::Files => f.write_str("files"),
            Capability::Mail => f.write_str("mail"),
            Capability::HttpOutbound(url) => {
                write!(f, "http.outbound({})", HttpOrigin::redacted(url))
            }
        }
    }
}

/// Why a capability was refused. The text is what the guest sees in `host-error::denied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The manifest does not ask for it.
    #[error("capability {0} is not requested in this plugin's plugin.toml")]
    NotRequested(Capability),
    /// The manifest asks but the administrator did not grant it.
    #[error("capability {0} is not granted by the administrator")]
    NotGranted(Capability),
}

/// `scheme://host[:port][/path-prefix]`, the unit of the outbound HTTP allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOrigin {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case host name or address literal.
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// Path prefix, `/` when none.
    pub path: String,
}

impl HttpOrigin {
    /// Parse an allowlist entry or a request URL (query and fragment ignored, userinfo refused).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text.split_once("://").ok_or("missing scheme (http:// or https://)")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not allowed".into());
        }
        // `[v6]` or `[v6]:port`; otherwise `host` or `host:port`.
        let (host, port) = match authority.strip_prefix('[') {
            Some(rest) => {
                let (inside, after) = rest.split_once(']').ok_or("unclosed [ in the host")?;
                let port = match after {
                    "" => default_port,
                    _ => {
                        let p = after.strip_prefix(':').ok_or("junk after ]")?;
                        p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?
                    }
                };
                (&authority[..inside.len() + 2], port)
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
                None => (authority, default_port),
            },
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        Ok(HttpOrigin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_owned(),
        })
    }

    /// Whether `url` falls under this entry: same scheme, host and port, and a path below the entry's path.
    pub fn covers(&self, url: &HttpOrigin) -> bool {
        self.scheme == url.scheme
            && self.host == url.host
            && self.port == url.port
            && (self.path == "/"
                || url.path == self.path
                || url.path.starts_with(&format!("{}/", self.path.trim_end_matches('/'))))
    }

    /// `scheme://host:port` of a URL for logs: paths and queries can carry secrets (webhook tokens), so never log them.
    pub fn redacted(url: &str) -> String {
        match HttpOrigin::parse(url) {
            Ok(o) => format!("{}://{}:{}", o.scheme, o.host, o.port),
            Err(_) => "<invalid url>".into(),
        }
    }
}

/// The effective capabilities of one loaded plugin.
#[derive(Debug, Clone, Default)]
pub struct CapabilityCheck {
    requested: RequestedCapabilities,
    granted: Grants,
    granted_http: Vec<HttpOrigin>,
}

impl CapabilityCheck {
    /// Combine what the manifest asks with what the administrator grants. Grant entries that do not parse are
    /// rejected when the admin config is validated, so here they are simply skipped.
    pub fn new(requested: RequestedCapabilities, granted: Grants) -> Self {
        let granted_http = granted
            .http_outbound
            .iter()
            .filter_map(|e| HttpOrigin::parse(e).ok())
            .collect();
        CapabilityCheck {
            requested,
            granted,
            granted_http,
        }
    }

    /// Allow or refuse one use of a capability.
    pub fn check(&self, capability: &Capability) -> Result<(), Refusal> {
        let (asked, allowed) = match capability {
            Capability::Kv => (self.requested.kv, self.granted.kv),
            Capability::Messaging => (self.requested.messaging, self.granted.messaging),
            Capability::Timers => (self.requested.timers, self.granted.timers),
            Capability::Accounts => (self.requested.accounts, self.granted.accounts),
            Capability::Files => (self.requested.files, self.granted.files),
            Capability::Mail => (self.requested.mail, self.granted.mail),
            Capability::HttpOutbound(url) => match HttpOrigin::parse(url) {
                Ok(target) => (
                    self.requested.http_outbound_any || self.requested.http_outbound.iter().any(|o| o.covers(&target)),
                    self.granted_http.iter().any(|o| o.covers(&target)),
                ),
                Err(_) => (false, false),
            },
        };
        if !asked {
            Err(Refusal::NotRequested(capability.clone()))
        } else if !allowed {
            Err(Refusal::NotGranted(capability.clone()))
        } else {
            Ok(())
        }
    }

    /// Whether outbound HTTP may reach private addresses (`grants.http-allow-private`).
    pub fn http_allow_private(&self) -> bool {
        self.granted.http_allow_private
    }

    /// Names of the capabilities that are both requested and granted, for `imfree plugin list`.
    pub fn effective(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (cap, name) in [
            (Capability::Kv, "kv"),
            (Capability::Messaging, "messaging"),
            (Capability::Timers, "timers"),
            (Capability::Accounts, "accounts"),
            (Capability::Files, "files"),
            (Capability::Mail, "mail"),
        ] {
            if self.check(&cap).is_ok() {
                out.push(name.to_owned());
            }
        }
        if self.requested.http_outbound_any {
            for origin in &self.granted_http {
                out.push(format!("http.outbound({}://{}:{}{})", origin.scheme, origin.host, origin.port, origin.path));
            }
        }
        for origin in self.requested.http_outbound.iter().filter(|_| !self.requested.http_outbound_any) {
            if self.granted_http.iter().any(|g| g.covers(origin)) {
                out.push(format!(
                    "http.outbound({}://{}:{}{})",
                    origin.scheme, origin.host, origin.port, origin.path
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(kv: bool, messaging: bool, timers: bool, http: &[&str]) -> RequestedCapabilities {
        RequestedCapabilities {
            kv,
            messaging,
            timers,
            http_outbound: http.iter().map(|h| HttpOrigin::parse(h).unwrap()).collect(),
            ..RequestedCapabilities::default()
        }
    }

    fn grants(kv: bool, messaging: bool, timers: bool, http: &[&str]) -> Grants {
        Grants {
            kv,
            messaging,
            timers,
            http_outbound: http.iter().map(|s| s.to_string()).collect(),
            ..Grants::default()
        }
    }

    #[test]
    fn needs_both_the_request_and_the_grant() {
        for (asked, granted) in [(false, false), (false, true), (true, false), (true, true)] {
            let check = CapabilityCheck::new(
                requested(asked, asked, asked, &[]),
                grants(granted, granted, granted, &[]),
            );
            for cap in [Capability::Kv, Capability::Messaging, Capability::Timers] {
                let got = check.check(&cap);
                match (asked, granted) {
                    (true, true) => assert_eq!(got, Ok(())),
                    (false, _) => assert_eq!(got, Err(Refusal::NotRequested(cap.clone()))),
                    (true, false) => assert_eq!(got, Err(Refusal::NotGranted(cap.clone()))),
                }
            }
        }
    }

    #[test]
    fn capabilities_are_independent() {
        let check = CapabilityCheck::new(requested(true, true, false, &[]), grants(true, false, true, &[]));
        assert!(check.check(&Capability::Kv).is_ok());
        assert!(matches!(
            check.check(&Capability::Messaging),
            Err(Refusal::NotGranted(_))
        ));
        assert!(matches!(
            check.check(&Capability::Timers),
            Err(Refusal::NotRequested(_))
        ));
        assert_eq!(check.effective(), vec!["kv".to_string()]);
    }

    #[test]
    fn http_needs_matching_origin_in_both_lists() {
        let check = CapabilityCheck::new(
            requested(
                false,
                false,
                false,
                &["https://hooks.slack.com", "https://api.example.com/v1"],
            ),
            grants(false, false, false, &["https://hooks.slack.com/services"]),
        );
        let ok = Capability::HttpOutbound("https://hooks.slack.com/services/T000/B000?x=1".into());
        assert_eq!(check.check(&ok), Ok(()));
        let not_granted_path = Capability::HttpOutbound("https://hooks.slack.com/other".into());
        assert!(matches!(check.check(&not_granted_path), Err(Refusal::NotGranted(_))));
        for url in [
            "http://hooks.slack.com/services/x",
            "https://hooks.slack.com:8443/services/x",
            "https://evil.com/",
        ] {
            assert!(
                matches!(
                    check.check(&Capability::HttpOutbound(url.into())),
                    Err(Refusal::NotRequested(_))
                ),
                "{url}"
            );
        }
        let not_granted = Capability::HttpOutbound("https://api.example.com/v1/x".into());
        assert!(matches!(check.check(&not_granted), Err(Refusal::NotGranted(_))));
        assert!(matches!(
            check.check(&Capability::HttpOutbound("https://api.example.com/v10".into())),
            Err(Refusal::NotRequested(_))
        ));
    }

    #[test]
    fn origins_parse_and_redact() {
        let o = HttpOrigin::parse("HTTPS://Example.COM:8443/a/b?secret=1").unwrap();
        assert_eq!(
            (o.scheme.as_str(), o.host.as_str(), o.port, o.path.as_str()),
            ("https", "example.com", 8443, "/a/b")
        );
        assert!(HttpOrigin::parse("https://user:pw@example.com").is_err());
        let v6 = HttpOrigin::parse("http://[::1]/x").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 80));
        let v6 = HttpOrigin::parse("http://[::1]:8080").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.path.as_str()), ("[::1]", 8080, "/"));
        assert!(HttpOrigin::parse("http://[::1").is_err());
        assert!(HttpOrigin::parse("http://[::1]x").is_err());
        assert!(HttpOrigin::parse("file:///etc/passwd").is_err());
        assert_eq!(
            HttpOrigin::redacted("https://hooks.slack.com/services/SECRET"),
            "https://hooks.slack.com:443"
        );
        let refusal = Refusal::NotGranted(Capability::HttpOutbound("https://h.example/token/SECRET".into()));
        assert!(!refusal.to_string().contains("SECRET"));
    }

    #[test]
    fn a_wildcard_request_leaves_the_choice_to_the_grant_and_accounts_need_both() {
        let requested = RequestedCapabilities { http_outbound_any: true, accounts: true, ..RequestedCapabilities::default() };
        let check = CapabilityCheck::new(requested.clone(), grants(false, false, false, &["https://hooks.slack.com/services"]));
        assert!(check.check(&Capability::HttpOutbound("https://hooks.slack.com/services/T/B/X".into())).is_ok());
        assert_eq!(
            check.check(&Capability::HttpOutbound("https://evil.example/x".into())),
            Err(Refusal::NotGranted(Capability::HttpOutbound("https://evil.example/x".into())))
        );
        assert_eq!(check.check(&Capability::Accounts), Err(Refusal::NotGranted(Capability::Accounts)));
        assert!(check.effective().contains(&"http.outbound(https://hooks.slack.com:443/services)".to_owned()));
        let granted = CapabilityCheck::new(requested, Grants { accounts: true, ..Grants::default() });
        assert!(granted.check(&Capability::Accounts).is_ok());
        let unasked = CapabilityCheck::new(RequestedCapabilities::default(), Grants { accounts: true, ..Grants::default() });
        assert_eq!(unasked.check(&Capability::Accounts), Err(Refusal::NotRequested(Capability::Accounts)));
    }
}
