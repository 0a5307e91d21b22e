//! The bundled email-gateway plugin (embedded in the binary under test) through real processes: a relay running the
//! `email-gateway` bot, real clients, a real SMTP server (PyPI aiosmtpd, tests/mail/smtp_sink.py: STARTTLS with a
//! test CA, AUTH, every message stored as a file) and a real IMAP server (Debian dovecot-imapd, started here with its
//! own base_dir, passwd-file and Maildir in a temp dir; mail is put in with Python's imaplib APPEND).
//! `.ci/deps/email-gateway.sh` installs both.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::common::*;

const SMTP_PASSWORD: &str = "smtp-secret-7f3a";
const IMAP_PASSWORD: &str = "imap-secret-91bc";
const BRIDGE: &str = "bridge@example.org";

/// The Python with aiosmtpd (the venv `.ci/deps/email-gateway.sh` makes, or `IMFREE_MAIL_PYTHON`).
fn mail_python() -> PathBuf {
    let python = std::env::var_os("IMFREE_MAIL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/imfree/venv-email/bin/python"));
    let ok = Command::new(&python).args(["-c", "import aiosmtpd"]).output().is_ok_and(|o| o.status.success());
    assert!(ok, "{} has no aiosmtpd: run `bash .ci/deps/email-gateway.sh` (or set IMFREE_MAIL_PYTHON)", python.display());
    python
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA and a certificate for 127.0.0.1 signed by it (openssl): `ca.pem`, `cert.pem`, `key.pem` in `dir`.
fn make_certs(dir: &Path) {
    let ssl = |args: &[&str], what: &str| run(Command::new("openssl").args(args).current_dir(dir), what);
    ssl(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=imfree test mail CA"], "openssl (CA)");
    ssl(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"], "openssl (CSR)");
    std::fs::write(dir.join("leaf.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    ssl(&["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "leaf.ext"], "openssl (sign)");
}

/// A child process ended with SIGTERM (so dovecot's master takes its children down) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// aiosmtpd on `port` (STARTTLS required, AUTH required), storing into `out`.
fn start_smtp(dir: &Path, port: u16, out: &Path, extra: &[&str]) -> Server {
    std::fs::create_dir_all(out).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mail/smtp_sink.py");
    let mut child = Command::new(mail_python())
        .arg(script)
        .arg(port.to_string())
        .arg(out)
        .arg(dir.join("cert.pem"))
        .arg(dir.join("key.pem"))
        .args(["bot", SMTP_PASSWORD])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(dir.join(format!("smtp-{port}.log"))).unwrap()))
        .spawn()
        .expect("start aiosmtpd");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let server = Server(child);
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) if l == "ready" => server,
        other => panic!("aiosmtpd did not start ({other:?}): {}", std::fs::read_to_string(dir.join(format!("smtp-{port}.log"))).unwrap_or_default()),
    }
}

/// dovecot with IMAP on `port` (STARTTLS with the test certificate in `dir`; with `tls` false no TLS at all, so no
/// STARTTLS offered), one user `bot`, Maildir under `dir/mail`.
fn start_dovecot(dir: &Path, port: u16, tls: bool) -> Server {
    assert!(Path::new("/usr/lib/dovecot/imap").exists(), "dovecot-imapd is not installed: run `bash .ci/deps/email-gateway.sh`");
    let root = my_uid() == 0;
    // As root, mail is owned by the dovecot user (dovecot refuses uid 0 for mail); otherwise by whoever runs this.
    let (mail_user, extra) = if root {
        ("uid=dovecot gid=dovecot".to_owned(), String::new())
    } else {
        let user = std::env::var("USER").unwrap_or_else(|_| "nobody".into());
        (format!("uid={} gid={}", my_uid(), gid()), format!("default_login_user = {user}\ndefault_internal_user = {user}\n"))
    };
    for d in ["run", "state", "mail"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    // dovecot's unprivileged processes reach their sockets and the Maildir through this directory.
    run(Command::new("chmod").arg("755").arg(dir), "chmod");
    if root {
        run(Command::new("chown").arg("dovecot:dovecot").arg(dir.join("mail")), "chown");
    }
    std::fs::write(dir.join("passwd"), format!("bot:{{PLAIN}}{IMAP_PASSWORD}::::::\n")).unwrap();
    let d = dir.display();
    let ssl = if tls { format!("ssl = required\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem") } else { "ssl = no".to_owned() };
    let config = format!(
        r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
auth_mechanisms = plain login
first_valid_uid = 1
first_valid_gid = 1
{extra}passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = {mail_user} home={d}/mail/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"#
    );
    std::fs::write(dir.join("dovecot.conf"), config).unwrap();
    let child = Command::new("dovecot")
        .arg("-F")
        .arg("-c")
        .arg(dir.join("dovecot.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("dovecot.stderr")).unwrap()))
        .spawn()
        .expect("start dovecot");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "dovecot did not start: {}{}",
            std::fs::read_to_string(dir.join("dovecot.stderr")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn my_uid() -> u32 {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
}

fn gid() -> u32 {
    std::os::unix::fs::MetadataExt::gid(&std::fs::metadata("/proc/self").unwrap())
}

/// Run Python's imaplib against the test dovecot: `body` is the code after `m` is logged in (STARTTLS, the CA).
fn imap(dir: &Path, port: u16, body: &str) -> String {
    let code = format!(
        "import imaplib, ssl, sys\nctx = ssl.create_default_context(cafile={ca:?})\nm = imaplib.IMAP4('127.0.0.1', {port})\nm.starttls(ctx)\nm.login('bot', {pw:?})\n{body}\nm.logout()\n",
        ca = dir.join("ca.pem").display().to_string(),
        pw = IMAP_PASSWORD,
    );
    let out = Command::new(mail_python()).arg("-c").arg(code).output().expect("python imaplib");
    assert!(out.status.success(), "imaplib failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Put `raw` (LF line ends are made CRLF) into the bot's INBOX.
fn deliver_to_mailbox(dir: &Path, port: u16, raw: &str) {
    let raw = raw.replace("\r\n", "\n").replace('\n', "\r\n");
    let path = dir.join(format!("append-{}.eml", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()));
    std::fs::write(&path, raw).unwrap();
    let out = imap(dir, port, &format!("print(m.append('INBOX', None, None, open({:?}, 'rb').read())[0])", path.display().to_string()));
    assert!(out.contains("OK"), "APPEND: {out}");
}

/// Messages in the bot's INBOX.
fn mailbox_count(dir: &Path, port: u16) -> usize {
    imap(dir, port, "typ, data = m.select('INBOX')\nprint(int(data[0]))").trim().parse().unwrap()
}

/// One mail the SMTP server accepted.
#[derive(Debug, Clone)]
struct Sent {
    recipients: Vec<String>,
    raw: String,
}

impl Sent {
    /// A header's value (unfolded), case-insensitive name; the first occurrence in the top-level header block.
    fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }
}

fn sent_mails(out: &Path) -> Vec<Sent> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(out)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "eml")).collect())
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|p| Sent {
            recipients: std::fs::read_to_string(p.with_extension("rcpt")).unwrap_or_default().lines().map(str::to_owned).collect(),
            raw: String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
        })
        .collect()
}

/// The whole set-up: certificates, aiosmtpd, dovecot and a relay running the bot.
struct Setup {
    dir: tempfile::TempDir,
    relay: RelayProc,
    smtp_port: u16,
    imap_port: u16,
    out: PathBuf,
    _smtp: Server,
    _imap: Server,
}

impl Setup {
    fn start(smtp_extra: &[&str]) -> Setup {
        let dir = tempdir();
        make_certs(dir.path());
        let (smtp_port, imap_port) = (free_port(), free_port());
        let out = dir.path().join("smtp-out");
        let smtp = start_smtp(dir.path(), smtp_port, &out, smtp_extra);
        let imap = start_dovecot(dir.path(), imap_port, true);
        std::fs::write(dir.path().join("smtp-password"), format!("{SMTP_PASSWORD}\n")).unwrap();
        std::fs::write(dir.path().join("imap-password"), format!("{IMAP_PASSWORD}\n")).unwrap();
        let config = write_config(dir.path(), smtp_port, imap_port, "[]", "starttls", "smtp-password");
        let relay = RelayProc::start_on(&dir.path().join("relay"), free_port(), Some(&config));
        Setup { dir, relay, smtp_port, imap_port, out, _smtp: smtp, _imap: imap }
    }

    fn write_config(&self, bridges: &str, smtp_tls: &str, smtp_password_file: &str) {
        write_config(self.dir.path(), self.smtp_port, self.imap_port, bridges, smtp_tls, smtp_password_file);
    }

    /// Restart the relay with `bridges` and wait for the bot.
    fn restart_with(&mut self, bridges: &str, smtp_tls: &str) {
        self.write_config(bridges, smtp_tls, "smtp-password");
        let before = self.relay.log().matches("bot running").count();
        self.relay.restart();
        self.wait("the bot to start again", || self.relay.log().matches("bot running").count() > before);
    }

    /// Wait up to 90 s for `done` (a poll every 5 s, retries, a debug build); on a time-out, fail with the logs.
    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; relay log:\n{}\ndovecot log:\n{}",
                self.relay.log(),
                std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn user(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        register(&self.relay, &home, name, &format!("{name}-password-1"));
        home
    }

    fn sent(&self) -> Vec<Sent> {
        sent_mails(&self.out)
    }
}

/// The relay's configuration (`d/imfree.toml`): the bundled plugin with the test's servers and `bridges`.
fn write_config(d: &Path, smtp_port: u16, imap_port: u16, bridges: &str, smtp_tls: &str, smtp_password_file: &str) -> PathBuf {
    bot_config(
        d,
        &format!(
            r#"# No path: the email-gateway plugin bundled in the binary under test.
[plugins.email-gateway]
grants = {{ kv = true, messaging = true, timers = true, files = true, mail = true }}
limits = {{ cpu-ms-per-call = 10000, wall-ms-per-call = 60000 }}

[plugins.email-gateway.settings]
poll-seconds = 5
backoff-base-ms = 1000
bridges = {bridges}
identities = [{{ email = "carol@example.net", user = "carol" }}]

[plugins.email-gateway.mail]
from = "{BRIDGE}"

[plugins.email-gateway.mail.smtp]
host = "127.0.0.1"
port = {smtp}
tls = "{smtp_tls}"
ca-file = "{d}/ca.pem"
user = "bot"
password-file = "{d}/{smtp_password_file}"

[plugins.email-gateway.mail.imap]
host = "127.0.0.1"
port = {imap}
tls = "starttls"
ca-file = "{d}/ca.pem"
user = "bot"
password-file = "{d}/imap-password"
"#,
            smtp = smtp_port,
            imap = imap_port,
            d = d.display(),
        ),
    )
}

/// Everything `home` receives until `done` says it has enough: common's `recv_until`, with the longer wait and the
/// servers' logs on a time-out of [`Setup::wait`].
fn recv_with_logs(setup: &Setup, home: &Path, what: &str, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    setup.wait(what, || {
        seen.extend(parse_json_lines(&ok(home, &["recv", "--json"])));
        done(&seen)
    });
    seen
}

fn from_bot(messages: &[Value]) -> Vec<&Value> {
    messages.iter().filter(|m| m["from"] == "email-gateway").collect()
}

/// The id of `home`'s own message whose body is `body`, from its history of `conversation`.
fn own_message_id(home: &Path, conversation: &str, body: &str) -> String {
    parse_json_lines(&ok(home, &["history", conversation, "--json"]))
        .into_iter()
        .find(|m| m["body"] == body)
        .and_then(|m| m["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no message {body:?} in the history of {conversation}"))
}

#[test]
fn messages_go_out_threaded_and_mail_comes_back_threaded_trimmed_and_without_loops() {
    // The SMTP server defers the first message once: it arrives all the same, after a retry.
    let mut setup = Setup::start(&["--defer", "1"]);
    setup.wait("the email-gateway bot to start", || setup.relay.log().contains("bot running"));
    let alice = setup.user("alice");
    let g = ok(&alice, &["group", "create", "mail bridge"]).trim().to_owned();
    ok(&alice, &["group", "add", &g, "email-gateway"]);
    setup.restart_with(&format!(r#"[{{ conversation = "{g}", addresses = ["team@example.net", "bob@example.net"] }}]"#), "starttls");

    // Out: a Markdown message becomes a mail with a text and an HTML part, from "alice (via imfree)".
    ok(&alice, &["send", "--markdown", &g, "Plans for **Friday**"]);
    setup.wait("the first mail (deferred once, then retried)", || setup.sent().len() == 1);
    assert!(setup.relay.log().contains("deferred (attempt 1)"), "the deferral was not retried through the backoff path");
    let first = setup.sent().remove(0);
    assert_eq!(first.recipients, ["team@example.net", "bob@example.net"]);
    let from = first.header("From").unwrap();
    assert!(from.contains("alice (via imfree)") && from.contains(BRIDGE), "{from}");
    let to = first.header("To").unwrap();
    assert!(to.contains("team@example.net") && to.contains("bob@example.net"), "{to}");
    let first_id = first.header("Message-ID").unwrap();
    assert!(first_id.starts_with("<imfree.") && first_id.ends_with("@example.org>"), "{first_id}");
    assert_eq!(first.header("In-Reply-To"), None);
    assert_eq!(first.header("Subject").as_deref(), Some("Plans for **Friday**"));
    assert!(first.header("X-Imfree-Bridge").is_some());
    assert!(first.header("Content-Type").unwrap().starts_with("multipart/alternative"), "{}", first.raw);
    assert!(first.raw.contains("text/plain") && first.raw.contains("text/html"));
    assert!(first.raw.contains("<strong>Friday</strong>"), "{}", first.raw);

    // A reply in imfree: In-Reply-To and References name the first mail.
    let first_msg = own_message_id(&alice, &g, "Plans for **Friday**");
    ok(&alice, &["reply", &first_msg, "Bring the slides"]);
    setup.wait("the reply's mail", || setup.sent().len() == 2);
    let second = setup.sent().remove(1);
    let second_id = second.header("Message-ID").unwrap();
    assert_eq!(second.header("In-Reply-To").as_deref(), Some(first_id.as_str()));
    assert_eq!(second.header("References").as_deref(), Some(first_id.as_str()));
    assert_eq!(second.header("Subject").as_deref(), Some("Re: Plans for **Friday**"));
    let reply_msg = own_message_id(&alice, &g, "Bring the slides");

    // In: Bob answers the reply by mail; it is posted as a reply to alice's reply, quote and signature trimmed.
    deliver_to_mailbox(
        setup.dir.path(),
        setup.imap_port,
        &format!(
            "From: Bob Example <bob@example.net>\nTo: {BRIDGE}\nCc: team@example.net\nSubject: Re: Plans for **Friday**\nMessage-ID: <bob-1@example.net>\nIn-Reply-To: {second_id}\nReferences: {first_id} {second_id}\nContent-Type: text/plain; charset=utf-8\n\nI will bring the projector.\n\nOn Fri, 27 Nov 2026, alice (via imfree) wrote:\n> Bring the slides\n\n-- \nBob, sent from the field\n"
        ),
    );
    let got = recv_with_logs(&setup, &alice, "Bob's mail in the conversation", |m| !from_bot(m).is_empty());
    let posted = from_bot(&got)[0].clone();
    let text = posted["body"].as_str().unwrap();
    assert!(text.contains("Bob Example") && text.contains("I will bring the projector."), "{text}");
    assert!(!text.contains("Bring the slides") && !text.contains("sent from the field"), "quote or signature not trimmed: {text}");
    assert_eq!(posted["reply_to"].as_str(), Some(reply_msg.as_str()), "{posted}");
    assert_eq!(posted["to"].as_str(), Some(g.as_str()));

    // Loops: an auto-reply, a bounce and the bridge's own first mail coming back (a list echoing it) are dropped;
    // the mail after them (from a mapped identity, answering Bob's mail) is posted, threaded to Bob's.
    deliver_to_mailbox(setup.dir.path(), setup.imap_port, &format!("From: dave@example.net\nTo: {BRIDGE}\nSubject: Out of office\nAuto-Submitted: auto-replied\nMessage-ID: <ooo@example.net>\n\nAUTOREPLY-CANARY I am away.\n"));
    deliver_to_mailbox(
        setup.dir.path(),
        setup.imap_port,
        &format!("From: MAILER-DAEMON@example.net\nTo: {BRIDGE}\nSubject: Undelivered Mail\nMessage-ID: <bounce@example.net>\nContent-Type: multipart/report; report-type=delivery-status; boundary=b1\n\n--b1\nContent-Type: text/plain\n\nBOUNCE-CANARY could not deliver\n--b1--\n"),
    );
    deliver_to_mailbox(setup.dir.path(), setup.imap_port, &first.raw);
    deliver_to_mailbox(
        setup.dir.path(),
        setup.imap_port,
        "From: Carol <carol@example.net>\nTo: team@example.net\nSubject: Re: Plans\nMessage-ID: <carol-1@example.net>\nIn-Reply-To: <bob-1@example.net>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=cut\n\n--cut\nContent-Type: text/plain; charset=utf-8\n\nAnd I bring coffee.\n--cut\nContent-Type: text/plain\nContent-Disposition: attachment; filename=\"agenda.txt\"\nContent-Transfer-Encoding: base64\n\nQUdFTkRBLUNBTkFSWQ==\n--cut--\n",
    );
    let is_file = |m: &&Value| m.get("file").is_some();
    let got = recv_with_logs(&setup, &alice, "Carol's mail and its attachment", |m| {
        from_bot(m).iter().any(|p| p["body"].as_str().unwrap_or("").contains("coffee")) && from_bot(m).iter().any(is_file)
    });
    let texts: Vec<&Value> = from_bot(&got).into_iter().filter(|m| !is_file(m)).collect();
    let bodies: Vec<&str> = texts.iter().map(|p| p["body"].as_str().unwrap_or("")).collect();
    assert_eq!(bodies.len(), 1, "only Carol's mail is posted: {bodies:?}");
    assert!(bodies[0].starts_with("✉ @carol"), "{}", bodies[0]);
    assert_eq!(texts[0]["reply_to"].as_str(), Some(posted["id"].as_str().unwrap()));
    let files: Vec<&Value> = from_bot(&got).into_iter().filter(is_file).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["file"]["name"], "agenda.txt");
    assert_eq!(files[0]["file"]["size"], 13);
    setup.wait("every handled mail to be removed from the mailbox", || mailbox_count(setup.dir.path(), setup.imap_port) == 0);
    let log = setup.relay.log();
    for reason in ["dropped: auto-submitted", "dropped: bounce", "dropped: a bridge's own mail"] {
        assert!(log.contains(reason), "no {reason:?} in the log");
    }
    assert!(!log.contains("I will bring the projector") && !log.contains(SMTP_PASSWORD) && !log.contains(IMAP_PASSWORD), "contents or secrets in the log");

    // The bot's own posts never went out as mail: the next mail is alice's next message.
    ok(&alice, &["send", &g, "See you all"]);
    setup.wait("the third mail", || setup.sent().len() == 3);
    let sent = setup.sent();
    assert!(sent[2].raw.contains("See you all"), "{}", sent[2].raw);
    assert!(sent.iter().all(|m| !m.raw.contains("projector") && !m.raw.contains("coffee")), "a mail that came in went out again");

    // A file posted in the conversation goes out as an attachment.
    let path = setup.dir.path().join("notes.txt");
    std::fs::write(&path, "NOTES-CANARY for the meeting\n").unwrap();
    ok(&alice, &["file", "send", &g, path.to_str().unwrap()]);
    setup.wait("the file's mail", || setup.sent().len() == 4);
    let file_mail = setup.sent().remove(3);
    assert!(file_mail.header("Content-Type").unwrap().starts_with("multipart/mixed"), "{}", file_mail.raw);
    assert!(file_mail.raw.contains("filename=\"notes.txt\"") || file_mail.raw.contains("filename=notes.txt"), "{}", file_mail.raw);
    let encoded = base64::engine::general_purpose::STANDARD.encode("NOTES-CANARY for the meeting\n");
    assert!(file_mail.raw.contains("NOTES-CANARY") || file_mail.raw.contains(&encoded), "{}", file_mail.raw);
    assert!(file_mail.raw.contains("alice sent a file: notes.txt"), "{}", file_mail.raw);
}

#[test]
fn servers_without_starttls_and_a_missing_password_file_are_refused() {
    // aiosmtpd offering no STARTTLS, while the plugin's SMTP is configured for it: nothing is sent in clear.
    let mut setup = Setup::start(&["--no-tls"]);
    setup.wait("the email-gateway bot to start", || setup.relay.log().contains("bot running"));
    let alice = setup.user("alice");
    let g = ok(&alice, &["group", "create", "refusals"]).trim().to_owned();
    ok(&alice, &["group", "add", &g, "email-gateway"]);
    setup.restart_with(&format!(r#"[{{ conversation = "{g}", addresses = ["team@example.net"] }}]"#), "starttls");
    ok(&alice, &["send", &g, "not in clear"]);
    setup.wait("the refused submission in the log", || setup.relay.log().contains("SMTP submission failed"));
    assert!(setup.sent().is_empty(), "a mail went out without STARTTLS");

    // An IMAP server that offers no STARTTLS: the bridge does not log in (the password would travel in clear).
    let plain_dir = setup.dir.path().join("plain-imap");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let plain_port = free_port();
    let _plain = start_dovecot(&plain_dir, plain_port, false);
    write_config(setup.dir.path(), setup.smtp_port, plain_port, "[]", "starttls", "smtp-password");
    let before = setup.relay.log().len();
    setup.relay.restart();
    setup.wait("the refused IMAP STARTTLS in the log", || {
        let log = setup.relay.log();
        log[before..].lines().any(|l| l.contains("IMAP connection failed") && l.contains("STARTTLS refused"))
    });
    let plain_log = std::fs::read_to_string(plain_dir.join("dovecot.log")).unwrap_or_default();
    assert!(!plain_log.contains("Login: user=<bot>"), "the bridge logged in without TLS: {plain_log}");

    // A password file that does not exist: the bot is not started, and the log says why.
    setup.write_config("[]", "starttls", "no-such-password-file");
    setup.relay.restart();
    setup.wait("the refusal in the log", || setup.relay.log().contains("[plugins.<name>.mail] refused; bot not started"));
    assert!(setup.relay.log().contains("no-such-password-file"));
}
