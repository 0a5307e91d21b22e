#!/usr/bin/env python3
"""An OpenAI-compatible speech-to-text endpoint for the transcription plugin's end-to-end test
(host/cli/tests/it/transcription.rs): `POST /v1/audio/transcriptions` takes multipart/form-data (`file`, `model`,
optional `language`, `response_format=json`), decodes Ogg Opus with opusdec (Debian opus-tools) to 16 kHz WAV, and
recognises it with PocketSphinx's bundled en-US model (PyPI pocketsphinx). Answers `{"text": ...}`.

For the test: `--fail-first N` answers the first N transcription requests with 500; `--api-key KEY` requires
`Authorization: Bearer KEY` (401 otherwise); `GET /requests` lists what was asked (fields, sizes, answers) as JSON.
Prints `listening on http://127.0.0.1:PORT` once ready. Standard library only, besides pocketsphinx.
"""

import argparse
import email.parser
import email.policy
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import wave
from http.server import BaseHTTPRequestHandler, HTTPServer

from pocketsphinx import Decoder

RATE = 16000


def parse_multipart(content_type, body):
    """The form's fields: name -> (value bytes, filename, part content type)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("not multipart/form-data")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise ValueError("a part without a name")
        fields[name] = (part.get_payload(decode=True) or b"", part.get_filename(), part.get_content_type())
    return fields


def to_pcm(audio):
    """16 kHz mono 16-bit samples of an Ogg Opus stream (via opusdec) or a WAV file."""
    with tempfile.TemporaryDirectory() as tmp:
        if audio.startswith(b"OggS"):
            source, target = os.path.join(tmp, "in.ogg"), os.path.join(tmp, "out.wav")
            with open(source, "wb") as f:
                f.write(audio)
            done = subprocess.run(["opusdec", "--quiet", "--rate", str(RATE), source, target], capture_output=True)
            if done.returncode != 0:
                raise ValueError("opusdec refused the stream: " + done.stderr.decode(errors="replace").strip())
            with open(target, "rb") as f:
                audio = f.read()
        with wave.open(io.BytesIO(audio)) as w:
            if w.getframerate() != RATE or w.getsampwidth() != 2:
                raise ValueError(f"need 16-bit {RATE} Hz audio, got {w.getsampwidth() * 8}-bit {w.getframerate()} Hz")
            frames = w.readframes(w.getnframes())
            if w.getnchannels() == 2:
                frames = b"".join(frames[i:i + 2] for i in range(0, len(frames), 4))
            elif w.getnchannels() != 1:
                raise ValueError("need mono or stereo audio")
            return frames


class Recogniser:
    def __init__(self):
        self.decoder = Decoder(samprate=RATE, logfn=os.devnull)
        self.lock = threading.Lock()

    def text(self, pcm):
        with self.lock:
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            return hyp.hypstr if hyp else ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("transcription server: " + (fmt % args) + "\n")

    def answer(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def do_GET(self):
        if self.path == "/requests":
            with self.server.state_lock:
                self.answer(200, self.server.requests)
        else:
            self.answer(404, {"error": {"message": "not found"}})

    def do_POST(self):
        body = self.read_body()
        if self.path != "/v1/audio/transcriptions":
            self.answer(404, {"error": {"message": "not found"}})
            return
        record = {"authorization": self.headers.get("authorization"), "bytes": len(body)}
        status, value = self.transcribe(body, record)
        record["status"] = status
        record["text"] = value.get("text")
        with self.server.state_lock:
            self.server.requests.append(record)
        self.answer(status, value)

    def transcribe(self, body, record):
        server = self.server
        with server.state_lock:
            if server.fail_left > 0:
                server.fail_left -= 1
                return 500, {"error": {"message": "the model is still loading"}}
        if server.api_key and self.headers.get("authorization") != f"Bearer {server.api_key}":
            return 401, {"error": {"message": "invalid api key"}}
        try:
            fields = parse_multipart(self.headers.get("content-type", ""), body)
        except ValueError as e:
            return 400, {"error": {"message": str(e)}}
        text_field = lambda name: fields[name][0].decode() if name in fields else None
        record.update(model=text_field("model"), language=text_field("language"), response_format=text_field("response_format"))
        if "file" not in fields or not record["model"]:
            return 400, {"error": {"message": "file and model are required"}}
        audio, filename, content_type = fields["file"]
        record.update(filename=filename, content_type=content_type, audio_bytes=len(audio))
        if record["response_format"] not in (None, "json"):
            return 400, {"error": {"message": "only response_format=json is served here"}}
        if record["language"] not in (None, "en"):
            return 400, {"error": {"message": "only English is recognised here"}}
        try:
            pcm = to_pcm(audio)
        except (ValueError, wave.Error, EOFError) as e:
            return 400, {"error": {"message": f"cannot decode the audio: {e}"}}
        record["seconds"] = len(pcm) / 2 / RATE
        return 200, {"text": server.recogniser.text(pcm)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--api-key", default="")
    args = parser.parse_args()
    server = HTTPServer(("127.0.0.1", args.port), Handler)
    server.recogniser = Recogniser()
    server.fail_left = args.fail_first
    server.api_key = args.api_key
    server.requests = []
    server.state_lock = threading.Lock()
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
