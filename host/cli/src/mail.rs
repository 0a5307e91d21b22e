//! E-mail for bot-scope plugins: the [`MailTransport`] behind the `mail` interface, built from a plugin's
//! `[plugins.<name>.mail]` table. SMTP submission goes through `lettre` (STARTTLS required or implicit TLS, AUTH when
//! a user is set); the mailbox is read over IMAP with `async-imap` (LOGIN, SELECT, UID FETCH oldest first, removal by
//! `\Deleted` + UID EXPUNGE). Both use the workspace's rustls with the ring provider, Mozilla's roots and the
//! administrator's `ca-file`.
//!
//! Passwords are read once, when the bot starts, and never logged; what reaches the guest is a short reason without
//! server names, user names or server replies (those go to the host's log). This module owns no message contents:
//! the plugin composes and parses the mail.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use imfree_plugin_host::config::{MailServer, MailSettings, MailTls};
use imfree_plugin_host::{InboundMail, MailError, MailTransport, PluginIdentity};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

/// How long one SMTP or IMAP exchange may take before it counts as unavailable.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a `[plugins.<name>.mail]` table cannot be used; the bot is not started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MailConfigError {
    /// A password file named in the table cannot be read.
    #[error("the {server} password file {path} cannot be read ({reason})")]
    PasswordFile { server: &'static str, path: PathBuf, reason: String },
    /// A password environment variable is not set.
    #[error("the {server} password variable {name} is not set")]
    PasswordEnv { server: &'static str, name: String },
    /// A user without any password source.
    #[error("the {server} user is set but neither password-file nor password-env is")]
    NoPassword { server: &'static str },
    /// The CA file cannot be read or holds no certificate.
    #[error("the {server} ca-file {path} cannot be used ({reason})")]
    CaFile { server: &'static str, path: PathBuf, reason: String },
    /// The `from` address is not an address.
    #[error("mail.from {0:?} is not an e-mail address")]
    From(String),
    /// The TLS parameters were refused.
    #[error("the {server} TLS set-up failed ({reason})")]
    Tls { server: &'static str, reason: String },
}

/// The transport for `mail` in the bot scope: the plugin's servers, or refusal when it has none.
pub(crate) fn transport(settings: Option<&MailSettings>, base_dir: &Path) -> Result<Arc<dyn MailTransport>, MailConfigError> {
    match settings {
        None => Ok(Arc::new(imfree_plugin_host::NoMail)),
        Some(s) => Ok(Arc::new(BotMail::new(s, base_dir)?)),
    }
}

/// A plugin's SMTP and IMAP servers, with the secrets read at start.
pub(crate) struct BotMail {
    from: lettre::Address,
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    imap: Option<Imap>,
}

/// A user and the password read at start.
struct Login {
    user: String,
    password: Zeroizing<String>,
}

fn read_password(server: &'static str, s: &MailServer, base_dir: &Path) -> Result<Option<Login>, MailConfigError> {
    let Some(user) = s.user.clone() else { return Ok(None) };
    let password = if let Some(file) = &s.password_file {
        let path = base_dir.join(file);
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| MailConfigError::PasswordFile {
            server,
            path: path.clone(),
            reason: e.kind().to_string(),
        })?);
        Zeroizing::new(text.lines().next().unwrap_or("").to_owned())
    } else if let Some(name) = &s.password_env {
        Zeroizing::new(std::env::var(name).map_err(|_| MailConfigError::PasswordEnv { server, name: name.clone() })?)
    } else {
        return Err(MailConfigError::NoPassword { server });
    };
    Ok(Some(Login { user, password }))
}

fn read_ca(server: &'static str, s: &MailServer, base_dir: &Path) -> Result<Option<Vec<u8>>, MailConfigError> {
    let Some(file) = &s.ca_file else { return Ok(None) };
    let path = base_dir.join(file);
    let pem = std::fs::read(&path).map_err(|e| MailConfigError::CaFile { server, path: path.clone(), reason: e.kind().to_string() })?;
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>();
    match certs {
        Ok(c) if !c.is_empty() => Ok(Some(pem)),
        _ => Err(MailConfigError::CaFile { server, path, reason: "no PEM certificate in it".into() }),
    }
}

impl BotMail {
    fn new(settings: &MailSettings, base_dir: &Path) -> Result<Self, MailConfigError> {
        let from: lettre::Address = settings.from.parse().map_err(|_| MailConfigError::From(settings.from.clone()))?;
        let smtp = settings.smtp.as_ref().map(|s| smtp_transport(s, base_dir)).transpose()?;
        let imap = settings.imap.as_ref().map(|s| Imap::new(s, base_dir)).transpose()?;
        Ok(BotMail { from, smtp, imap })
    }
}

fn smtp_transport(s: &MailServer, base_dir: &Path) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailConfigError> {
    let credentials = read_password("SMTP", s, base_dir)?;
    let ca = read_ca("SMTP", s, base_dir)?;
    let params = || -> Result<TlsParameters, MailConfigError> {
        let mut b = TlsParameters::builder(s.host.clone());
        if let Some(pem) = &ca {
            b = b.add_root_certificate(Certificate::from_pem(pem).map_err(|e| MailConfigError::Tls { server: "SMTP", reason: e.to_string() })?);
        }
        b.build_rustls().map_err(|e| MailConfigError::Tls { server: "SMTP", reason: e.to_string() })
    };
    let (tls, port) = match s.tls {
        // Tls::Required: a server that does not offer STARTTLS is refused, never used in clear.
        MailTls::Starttls => (Tls::Required(params()?), 587),
        MailTls::Tls => (Tls::Wrapper(params()?), 465),
        MailTls::None => (Tls::None, 25),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
        .port(s.port.unwrap_or(port))
        .tls(tls)
        .timeout(Some(IO_TIMEOUT));
    if let Some(c) = credentials {
        builder = builder.credentials(Credentials::new(c.user, c.password.to_string()));
    }
    Ok(builder.build())
}

/// What the guest is told about an SMTP failure: permanent refusals are `invalid`, the rest `unavailable`; the
/// server's reply text stays in the host's log.
fn smtp_error(plugin: &str, e: &lettre::transport::smtp::Error) -> MailError {
    tracing::warn!(plugin = %plugin, error = %e, "SMTP submission failed");
    let code = e.status().map(|c| format!(" ({c})")).unwrap_or_default();
    if e.is_permanent() {
        MailError::Invalid(format!("the SMTP server refused the message for good{code}"))
    } else if e.is_transient() {
        MailError::Unavailable(format!("the SMTP server deferred the message{code}"))
    } else {
        MailError::Unavailable("the SMTP server could not be reached or the connection failed".into())
    }
}

#[async_trait]
impl MailTransport for BotMail {
    async fn address(&self, _bot: &PluginIdentity) -> Result<String, MailError> {
        Ok(self.from.to_string())
    }

    async fn send(&self, bot: &PluginIdentity, recipients: &[String], message: &[u8]) -> Result<(), MailError> {
        let Some(smtp) = &self.smtp else {
            return Err(MailError::Invalid("no SMTP server is configured for this plugin ([plugins.<name>.mail.smtp])".into()));
        };
        let to = recipients
            .iter()
            .map(|r| r.parse::<lettre::Address>().map_err(|_| MailError::Invalid(format!("{r:?} is not an e-mail address"))))
            .collect::<Result<Vec<_>, _>>()?;
        let envelope = Envelope::new(Some(self.from.clone()), to).map_err(|e| MailError::Invalid(e.to_string()))?;
        smtp.send_raw(&envelope, message).await.map(|_| ()).map_err(|e| smtp_error(&bot.name, &e))
    }

    async fn fetch(&self, bot: &PluginIdentity, max: u32) -> Result<Vec<InboundMail>, MailError> {
        let imap = self.imap.as_ref().ok_or_else(no_mailbox)?;
        imap.fetch(&bot.name, max).await
    }

    async fn remove(&self, bot: &PluginIdentity, ids: &[String]) -> Result<(), MailError> {
        let imap = self.imap.as_ref().ok_or_else(no_mailbox)?;
        imap.remove(&bot.name, ids).await
    }
}

fn no_mailbox() -> MailError {
    MailError::Invalid("no mailbox is configured for this plugin ([plugins.<name>.mail.imap])".into())
}

/// A byte stream IMAP runs over: plain TCP or TLS.
trait ImapStream: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> ImapStream for T {}

type Session = async_imap::Session<Box<dyn ImapStream>>;

/// The IMAP side: one logged-in session kept between calls, opened again when it breaks.
struct Imap {
    host: String,
    port: u16,
    tls: MailTls,
    connector: tokio_rustls::TlsConnector,
    credentials: Option<Login>,
    mailbox: String,
    session: Mutex<Option<Session>>,
}

/// An IMAP failure: what the host's log gets, and what the guest is told.
struct ImapFailure {
    log: String,
    guest: MailError,
}

impl ImapFailure {
    fn unavailable(log: impl fmt::Display) -> Self {
        ImapFailure { log: log.to_string(), guest: MailError::Unavailable("the mailbox could not be read now".into()) }
    }
    fn refused(log: impl fmt::Display, guest: &str) -> Self {
        ImapFailure { log: log.to_string(), guest: MailError::Invalid(guest.into()) }
    }
}

async fn timed<T>(what: &str, f: impl Future<Output = Result<T, ImapFailure>>) -> Result<T, ImapFailure> {
    tokio::time::timeout(IO_TIMEOUT, f).await.map_err(|_| ImapFailure::unavailable(format!("{what}: timed out")))?
}

impl Imap {
    fn new(s: &MailServer, base_dir: &Path) -> Result<Self, MailConfigError> {
        let credentials = read_password("IMAP", s, base_dir)?;
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(pem) = read_ca("IMAP", s, base_dir)? {
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                roots.add(cert).map_err(|e| MailConfigError::CaFile {
                    server: "IMAP",
                    path: s.ca_file.clone().unwrap_or_default(),
                    reason: e.to_string(),
                })?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| MailConfigError::Tls { server: "IMAP", reason: e.to_string() })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let port = s.port.unwrap_or(if s.tls == MailTls::Tls { 993 } else { 143 });
        Ok(Imap {
            host: s.host.clone(),
            port,
            tls: s.tls,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            credentials,
            mailbox: s.mailbox.clone().unwrap_or_else(|| "INBOX".into()),
            session: Mutex::new(None),
        })
    }

    async fn tls(&self, tcp: TcpStream) -> Result<Box<dyn ImapStream>, ImapFailure> {
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| ImapFailure::refused("host is not a valid TLS server name", "the IMAP server's name is not valid for TLS"))?;
        let stream = self.connector.connect(name, tcp).await.map_err(|e| ImapFailure::unavailable(format!("TLS handshake: {e}")))?;
        Ok(Box::new(stream))
    }

    async fn connect(&self) -> Result<Session, ImapFailure> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| ImapFailure::unavailable(format!("connect: {e}")))?;
        let client = match self.tls {
            MailTls::Tls => {
                let mut client = async_imap::Client::new(self.tls(tcp).await?);
                greeting(&mut client).await?;
                client
            }
            MailTls::None => {
                let mut client = async_imap::Client::new(Box::new(tcp) as Box<dyn ImapStream>);
                greeting(&mut client).await?;
                client
            }
            MailTls::Starttls => {
                let mut plain = async_imap::Client::new(tcp);
                greeting(&mut plain).await?;
                // A server that refuses STARTTLS is not used in clear (the credentials would travel unprotected).
                plain.run_command_and_check_ok("STARTTLS", None).await.map_err(|e| {
                    ImapFailure::refused(format!("STARTTLS refused: {e}"), "the IMAP server does not offer STARTTLS (tls = \"starttls\")")
                })?;
                // No greeting after STARTTLS (RFC 9051 section 6.2.1).
                async_imap::Client::new(self.tls(plain.into_inner()).await?)
            }
        };
        let Some(c) = &self.credentials else {
            return Err(ImapFailure::refused("no user configured", "reading an IMAP mailbox needs a user (mail.imap.user)"));
        };
        let mut session = client
            .login(&c.user, c.password.as_str())
            .await
            .map_err(|(e, _)| ImapFailure::refused(format!("LOGIN refused: {e}"), "the IMAP server refused the login"))?;
        session.select(&self.mailbox).await.map_err(|e| {
            ImapFailure::refused(format!("SELECT failed: {e}"), "the configured IMAP mailbox cannot be selected")
        })?;
        Ok(session)
    }

    /// Run `op` on the kept session, or on a fresh one; a kept session that fails is replaced once (servers close
    /// idle connections).
    async fn with_session<T>(
        &self,
        plugin: &str,
        op: impl for<'a> Fn(&'a mut Session) -> std::pin::Pin<Box<dyn Future<Output = Result<T, ImapFailure>> + Send + 'a>>,
    ) -> Result<T, MailError> {
        let mut kept = self.session.lock().await;
        let reused = kept.is_some();
        for attempt in 0..2 {
            let session = match kept.take() {
                Some(s) => s,
                None => match timed("connect", self.connect()).await {
                    Ok(s) => s,
                    Err(f) => {
                        tracing::warn!(plugin = %plugin, error = %f.log, "IMAP connection failed");
                        return Err(f.guest);
                    }
                },
            };
            let mut session = session;
            match timed("command", op(&mut session)).await {
                Ok(v) => {
                    *kept = Some(session);
                    return Ok(v);
                }
                Err(f) if reused && attempt == 0 => {
                    tracing::debug!(plugin = %plugin, error = %f.log, "kept IMAP session failed; reconnecting");
                }
                Err(f) => {
                    tracing::warn!(plugin = %plugin, error = %f.log, "IMAP command failed");
                    return Err(f.guest);
                }
            }
        }
        Err(MailError::Unavailable("the mailbox could not be read now".into()))
    }

    async fn fetch(&self, plugin: &str, max: u32) -> Result<Vec<InboundMail>, MailError> {
        let mailbox = self.mailbox.clone();
        self.with_session(plugin, move |session| {
            let mailbox = mailbox.clone();
            Box::pin(async move {
                // SELECT again: it reports UIDVALIDITY, and new mail since the last call.
                let selected = session.select(&mailbox).await.map_err(|e| ImapFailure::unavailable(format!("SELECT: {e}")))?;
                let validity = selected.uid_validity.unwrap_or(0);
                let mut uids: Vec<u32> = session
                    .uid_search("UNDELETED")
                    .await
                    .map_err(|e| ImapFailure::unavailable(format!("UID SEARCH: {e}")))?
                    .into_iter()
                    .collect();
                uids.sort_unstable();
                uids.truncate(max as usize);
                if uids.is_empty() {
                    return Ok(Vec::new());
                }
                let set = uid_set(&uids);
                let fetched = collect("UID FETCH", session.uid_fetch(&set, "(UID BODY.PEEK[])").await).await?;
                let mut mails: Vec<(u32, InboundMail)> = fetched
                    .iter()
                    .filter_map(|f| {
                        let uid = f.uid?;
                        Some((uid, InboundMail { id: format!("{validity}.{uid}"), raw: f.body().unwrap_or_default().to_vec() }))
                    })
                    .collect();
                mails.sort_by_key(|(uid, _)| *uid);
                while session.unsolicited_responses.try_recv().is_ok() {}
                Ok(mails.into_iter().map(|(_, m)| m).collect())
            })
        })
        .await
    }

    async fn remove(&self, plugin: &str, ids: &[String]) -> Result<(), MailError> {
        let mut wanted: Vec<(u32, u32)> = Vec::new();
        for id in ids {
            let parsed = id.split_once('.').and_then(|(v, u)| Some((v.parse::<u32>().ok()?, u.parse::<u32>().ok()?)));
            wanted.push(parsed.ok_or_else(|| MailError::Invalid(format!("{id:?} is not a mail id from fetch")))?);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let mailbox = self.mailbox.clone();
        self.with_session(plugin, move |session| {
            let (mailbox, wanted) = (mailbox.clone(), wanted.clone());
            Box::pin(async move {
                let selected = session.select(&mailbox).await.map_err(|e| ImapFailure::unavailable(format!("SELECT: {e}")))?;
                let validity = selected.uid_validity.unwrap_or(0);
                // Ids from before a UIDVALIDITY change name other messages now (or none): they are not touched.
                let mut uids: Vec<u32> = wanted.iter().filter(|(v, _)| *v == validity).map(|(_, u)| *u).collect();
                uids.sort_unstable();
                uids.dedup();
                if uids.is_empty() {
                    return Ok(());
                }
                let set = uid_set(&uids);
                collect("UID STORE", session.uid_store(&set, "+FLAGS.SILENT (\\Deleted)").await).await?;
                let caps = session.capabilities().await.map_err(|e| ImapFailure::unavailable(format!("CAPABILITY: {e}")))?;
                // UID EXPUNGE (UIDPLUS) removes only these; plain EXPUNGE would also remove messages someone else
                // flagged, which is still what \Deleted asks for.
                if caps.has_str("UIDPLUS") {
                    collect("UID EXPUNGE", session.uid_expunge(&set).await).await?;
                } else {
                    collect("EXPUNGE", session.expunge().await).await?;
                }
                while session.unsolicited_responses.try_recv().is_ok() {}
                Ok(())
            })
        })
        .await
    }
}

/// Every item of an IMAP response stream, or the failure of `what`.
async fn collect<T>(
    what: &str,
    stream: async_imap::error::Result<impl futures_util::Stream<Item = async_imap::error::Result<T>>>,
) -> Result<Vec<T>, ImapFailure> {
    let stream = stream.map_err(|e| ImapFailure::unavailable(format!("{what}: {e}")))?;
    stream.try_collect().await.map_err(|e| ImapFailure::unavailable(format!("{what}: {e}")))
}

async fn greeting<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug>(client: &mut async_imap::Client<T>) -> Result<(), ImapFailure> {
    match client.read_response().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ImapFailure::unavailable("the server closed the connection before its greeting")),
        Err(e) => Err(ImapFailure::unavailable(format!("greeting: {e}"))),
    }
}

/// A UID set (`1,3,5`); ranges are not needed for the at most 100 messages of one call.
fn uid_set(uids: &[u32]) -> String {
    uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(user: Option<&str>, file: Option<&str>) -> MailServer {
        MailServer {
            host: "127.0.0.1".into(),
            port: Some(1),
            tls: MailTls::None,
            ca_file: None,
            user: user.map(str::to_owned),
            password_file: file.map(PathBuf::from),
            password_env: None,
            mailbox: None,
        }
    }

    #[test]
    fn a_missing_password_file_refuses_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let settings = MailSettings { from: "bot@example.org".into(), smtp: Some(server(Some("bot"), Some("nope"))), imap: None };
        let err = transport(Some(&settings), dir.path()).err().unwrap();
        assert!(matches!(err, MailConfigError::PasswordFile { .. }), "{err}");
        let settings = MailSettings { from: "bot@example.org".into(), smtp: None, imap: Some(server(Some("bot"), None)) };
        assert!(matches!(transport(Some(&settings), dir.path()).err().unwrap(), MailConfigError::NoPassword { .. }));
        std::fs::write(dir.path().join("pw"), "s3cret\nignored\n").unwrap();
        let settings = MailSettings { from: "bot@example.org".into(), smtp: Some(server(Some("bot"), Some("pw"))), imap: Some(server(Some("bot"), Some("pw"))) };
        assert!(transport(Some(&settings), dir.path()).is_ok());
        let settings = MailSettings { from: "not an address".into(), smtp: None, imap: None };
        assert!(matches!(transport(Some(&settings), dir.path()).err().unwrap(), MailConfigError::From(_)));
    }

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[3]), "3");
        assert_eq!(uid_set(&[1, 2, 9]), "1,2,9");
    }
}
