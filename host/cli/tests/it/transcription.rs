//! The bundled transcription plugin (embedded in the binary under test) through real processes: a relay running the
//! `transcription` bot, real clients sending voice messages spoken by a real synthesiser (Debian `flite -voice rms`,
//! encoded to Ogg Opus by Debian `opus-tools`), and a real offline recogniser (PyPI `pocketsphinx` with its bundled
//! en-US model) behind an OpenAI-compatible `/v1/audio/transcriptions` endpoint on loopback
//! (tests/transcription/server.py, which decodes Ogg Opus with opusdec). `.ci/deps/transcription.sh` installs them.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// What `.ci/deps/transcription.sh` installs, checked with a clear failure (not a skip) when missing.
fn require_tools() -> PathBuf {
    for tool in ["flite", "opusenc", "opusdec"] {
        let found = Command::new(tool).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        assert!(found, "`{tool}` is not installed: run `bash .ci/deps/transcription.sh` (Debian flite and opus-tools)");
    }
    let python = std::env::var_os("IMFREE_TRANSCRIPTION_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/imfree/venv-transcription/bin/python"));
    let ok = Command::new(&python).args(["-c", "import pocketsphinx"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(ok, "{} cannot import pocketsphinx: run `bash .ci/deps/transcription.sh` (or set IMFREE_TRANSCRIPTION_PYTHON)", python.display());
    python
}

/// The speech-to-text server (tests/transcription/server.py) on a free loopback port, stopped when dropped.
struct SpeechServer {
    child: Child,
    port: u16,
}

impl SpeechServer {
    fn start(python: &Path, args: &[&str]) -> SpeechServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcription/server.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the speech server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("the speech server did not start: {line:?}"));
        SpeechServer { child, port }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it was asked so far (GET /requests): one object per transcription request.
    fn requests(&self) -> Vec<Value> {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(conn, "GET /requests HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str::<Value>(body).unwrap().as_array().cloned().unwrap_or_default()
    }
}

impl Drop for SpeechServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The 16-bit samples of a WAV file as flite writes it, and its rate.
fn wav_samples(wav: &[u8]) -> (u32, Vec<u8>) {
    assert!(wav.starts_with(b"RIFF") && &wav[8..12] == b"WAVE");
    let rate = u32::from_le_bytes(wav[24..28].try_into().unwrap());
    let mut at = 12;
    while at + 8 <= wav.len() {
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().unwrap()) as usize;
        if &wav[at..at + 4] == b"data" {
            return (rate, wav[at + 8..(at + 8 + size).min(wav.len())].to_vec());
        }
        at += 8 + size + (size & 1);
    }
    panic!("no data chunk in flite's output");
}

fn write_wav(path: &Path, rate: u32, samples: &[u8]) {
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    out.extend_from_slice(samples);
    std::fs::write(path, out).unwrap();
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// `sentences` spoken by flite's rms voice (16 kHz), one after the other with 1.2 s of silence between them, as
/// `name.wav`; with `ogg`, also encoded to Ogg Opus as `name.ogg` (opusenc's defaults, as a recorder would).
fn speak(dir: &Path, name: &str, sentences: &[&str], ogg: bool) -> PathBuf {
    let mut all = Vec::new();
    let mut rate = 0;
    for (i, s) in sentences.iter().enumerate() {
        let one = dir.join(format!("{name}-{i}.wav"));
        run(Command::new("flite").args(["-voice", "rms", "-t", s, "-o"]).arg(&one));
        let (r, samples) = wav_samples(&std::fs::read(&one).unwrap());
        rate = r;
        if i > 0 {
            all.extend(std::iter::repeat_n(0u8, (r as usize * 12 / 10) * 2));
        }
        all.extend(samples);
    }
    assert_eq!(rate, 16_000, "flite -voice rms speaks at 16 kHz");
    let wav = dir.join(format!("{name}.wav"));
    write_wav(&wav, rate, &all);
    if !ogg {
        return wav;
    }
    let out = dir.join(format!("{name}.ogg"));
    run(Command::new("opusenc").arg("--quiet").arg(&wav).arg(&out));
    out
}

/// A relay with the transcription bot talking to `speech`; `settings` adds to `[plugins.transcription.settings]`.
struct Setup {
    dir: tempfile::TempDir,
    relay: RelayProc,
}

impl Setup {
    fn start(speech: &SpeechServer, settings: &str) -> Setup {
        let dir = tempdir();
        let config = bot_config(
            dir.path(),
            &format!(
                r#"# No path: the transcription plugin bundled in the binary under test, with its own manifest. The recogniser is
# slow on a loaded machine: generous per-call limits.
[plugins.transcription]
grants = {{ kv = true, messaging = true, timers = true, files = true, http-outbound = ["{origin}"], http-allow-private = true }}
limits = {{ cpu-ms-per-call = 10000, wall-ms-per-call = 120000, http-timeout-ms = 100000 }}

[plugins.transcription.settings]
base-url = "{origin}"
language = "en"
backoff-base-ms = 500
tick-ms = 1000
{settings}
"#,
                origin = speech.origin(),
            ),
        );
        let relay = RelayProc::start(&dir.path().join("relay"), Some(&config));
        wait_until("the transcription bot to start", || relay.log().contains("bot running"));
        Setup { dir, relay }
    }

    fn user(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        register(&self.relay, &home, name, &format!("{name}-password-1"));
        home
    }

    /// Everything `home` receives until `done` says it has enough (up to 3 minutes: the recogniser is slow under
    /// load); on a time-out, fail with what arrived and the server's log.
    fn recv_until(&self, home: &Path, what: &str, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut seen = Vec::new();
        loop {
            seen.extend(parse_json_lines(&ok(home, &["recv", "--json"])));
            if done(&seen) {
                return seen;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; received {seen:?}\nserver log:\n{}", self.relay.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The group `owner` creates with `members` and the bot.
fn group_with_bot(owner: &Path, members: &[&str]) -> String {
    let g = ok(owner, &["group", "create", "voice notes"]).trim().to_owned();
    for m in members.iter().chain(&["transcription"]) {
        ok(owner, &["group", "add", &g, m]);
    }
    g
}

/// The bot's replies to message `id`.
fn replies_to<'a>(messages: &'a [Value], id: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["from"] == "transcription" && m["reply_to"] == id).collect()
}

/// Send `file` as a voice message to `to`; its message id.
fn voice(home: &Path, to: &str, file: &Path) -> String {
    ok(home, &["voice", "send", to, file.to_str().unwrap()]).trim().to_owned()
}

const SHORT: &str = "please send me the weather report for tomorrow morning";
const LONG: [&str; 4] = [
    "Please send me the weather report for tomorrow morning.",
    "The meeting starts at ten o'clock.",
    "Turn left at the next corner.",
    "We need more coffee in the kitchen.",
];
const LONG_TEXT: &str = "please send me the weather report for tomorrow morning the meeting starts at ten o'clock turn left at the next corner we need more coffee in the kitchen";

#[test]
fn voice_messages_are_answered_with_their_transcripts_and_long_ones_are_split() {
    let python = require_tools();
    let speech = SpeechServer::start(&python, &["--api-key", "test-key-3f9a"]);
    let s = Setup::start(&speech, "api-key = \"test-key-3f9a\"\nmax-chunk-seconds = 4");
    let (alice, bob) = (s.user("alice"), s.user("bob"));
    let g = group_with_bot(&alice, &["bob"]);

    // One sentence, Ogg Opus, in a group: everyone sees the transcript, as a reply to the voice message.
    let short = speak(s.dir.path(), "short", &["Please send me the weather report for tomorrow morning."], true);
    let id = voice(&alice, &g, &short);
    let got = s.recv_until(&bob, "the transcript of the short message", |m| !replies_to(m, &id).is_empty());
    let reply = replies_to(&got, &id);
    assert_eq!(reply.len(), 1, "{got:?}");
    assert_eq!(reply[0]["body"], SHORT);
    assert_eq!(reply[0]["group"].as_str().map(|id| format!("group:{id}")), Some(g.clone()));
    let asked = speech.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    let r = &asked[0];
    assert_eq!((r["status"].as_u64(), r["authorization"].as_str()), (Some(200), Some("Bearer test-key-3f9a")));
    assert_eq!((r["model"].as_str(), r["language"].as_str(), r["response_format"].as_str()), (Some("whisper-1"), Some("en"), Some("json")));
    assert_eq!((r["filename"].as_str(), r["content_type"].as_str()), (Some("part-1.ogg"), Some("audio/ogg")));
    assert_eq!(r["audio_bytes"].as_u64(), Some(std::fs::metadata(&short).unwrap().len()), "a short recording goes as it is");

    // Four sentences (about 14 s) in parts of at most 4 s, 1:1 with the bot: each part is a standalone Ogg Opus
    // stream that opusdec decodes, cut in the pauses, so the joined transcript is word for word.
    let long = speak(s.dir.path(), "long", &LONG, true);
    let id = voice(&alice, "transcription", &long);
    let got = s.recv_until(&alice, "the transcript of the long message", |m| !replies_to(m, &id).is_empty());
    let reply = replies_to(&got, &id);
    assert_eq!(reply.len(), 1, "{got:?}");
    assert_eq!(reply[0]["body"], LONG_TEXT);
    let parts: Vec<Value> = speech.requests().into_iter().skip(1).collect();
    assert!(parts.len() >= 4, "split into parts of at most 4 s: {parts:?}");
    for (n, p) in parts.iter().enumerate() {
        assert_eq!(p["status"], 200, "{p}");
        assert_eq!(p["filename"].as_str(), Some(format!("part-{}.ogg", n + 1).as_str()));
        assert!(p["seconds"].as_f64().is_some_and(|s| s <= 4.05), "{p}");
    }
    let said: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).filter(|t| !t.is_empty()).collect();
    assert_eq!(said.join(" "), LONG_TEXT, "the parts in order, each sentence whole");
}

#[test]
fn failures_are_retried_into_success_and_refusals_reported_once() {
    let python = require_tools();
    // The first two requests get 500 (a model still loading); everything after is served.
    let speech = SpeechServer::start(&python, &["--fail-first", "2"]);
    let s = Setup::start(&speech, "max-chunk-seconds = 10");
    let alice = s.user("alice");

    // A WAV voice message meets the failures: one polite note that the transcript is delayed, then the transcript.
    let wav = speak(s.dir.path(), "memo", &["Turn left at the next corner."], false);
    let id = voice(&alice, "transcription", &wav);
    let got = s.recv_until(&alice, "the transcript after the retries", |m| replies_to(m, &id).iter().any(|r| r["body"] == "turn left at the next corner"));
    let replies: Vec<&str> = replies_to(&got, &id).iter().filter_map(|r| r["body"].as_str()).collect();
    assert_eq!(replies.len(), 2, "one delay note and the transcript: {replies:?}");
    assert!(replies[0].contains("delayed") && replies[0].contains("keep trying"), "{replies:?}");
    assert!(!replies[0].contains("500") && !replies[0].contains("127.0.0.1"), "no internals in the note: {replies:?}");
    let asked = speech.requests();
    let statuses: Vec<u64> = asked.iter().filter_map(|r| r["status"].as_u64()).collect();
    assert_eq!(statuses, [500, 500, 200], "{asked:?}");
    assert_eq!(asked[2]["content_type"], "audio/wav");
    assert!(asked[2]["authorization"].is_null(), "no api-key set, no Authorization header");

    // A refusal (the server takes 16 kHz only and answers 400 to this 8 kHz recording) is permanent: one short
    // apology, no retry. A message sent after it is transcribed as usual.
    let narrow = s.dir.path().join("narrow.wav");
    let (_, samples) = wav_samples(&std::fs::read(&wav).unwrap());
    write_wav(&narrow, 8000, &samples);
    let refused = voice(&alice, "transcription", &narrow);
    let after = voice(&alice, "transcription", &speak(s.dir.path(), "after", &["Open the door."], true));
    let got = s.recv_until(&alice, "the apology and the next transcript", |m| !replies_to(m, &refused).is_empty() && !replies_to(m, &after).is_empty());
    let apology = replies_to(&got, &refused);
    assert_eq!(apology.len(), 1, "{got:?}");
    assert_eq!(apology[0]["body"], "Sorry, the speech service could not transcribe this voice message (HTTP 400).");
    assert_eq!(replies_to(&got, &after)[0]["body"], "open the door");
    let statuses: Vec<u64> = speech.requests().iter().filter_map(|r| r["status"].as_u64()).collect();
    assert_eq!(statuses, [500, 500, 200, 400, 200], "the refused one was asked once");
    // Nothing more arrives for the refused message after the later one was answered.
    let later = parse_json_lines(&ok(&alice, &["recv", "--json"]));
    assert!(replies_to(&later, &refused).is_empty(), "{later:?}");
}
