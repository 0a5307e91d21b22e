"""A real SMTP server for the email-gateway tests (PyPI aiosmtpd): STARTTLS with the test's certificate, AUTH
PLAIN/LOGIN with one user, and every accepted message stored as <n>.eml (the DATA) beside <n>.rcpt (the envelope
recipients, one a line) in OUT_DIR. `--defer N` answers the first N messages with 451 (a temporary failure) to
exercise the plugin's retries. Prints "ready" once it listens; runs until killed.

usage: smtp_sink.py PORT OUT_DIR CERT KEY USER PASSWORD [--defer N] [--no-tls]
"""

import argparse
import asyncio
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, out_dir, defer):
        self.out_dir = out_dir
        self.defer = defer
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        if self.defer > 0:
            self.defer -= 1
            return "451 4.3.0 try again later (test deferral)"
        self.count += 1
        base = os.path.join(self.out_dir, f"{self.count:04d}")
        with open(base + ".rcpt.tmp", "w") as f:
            f.write("\n".join(envelope.rcpt_tos) + "\n")
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".rcpt.tmp", base + ".rcpt")
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 stored"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("out_dir")
    p.add_argument("cert")
    p.add_argument("key")
    p.add_argument("user")
    p.add_argument("password")
    p.add_argument("--defer", type=int, default=0)
    p.add_argument("--no-tls", action="store_true")
    a = p.parse_args()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == a.user.encode() and auth_data.password == a.password.encode()
        return AuthResult(success=ok)

    options = dict(hostname="127.0.0.1", port=a.port, authenticator=authenticate, auth_required=True)
    if a.no_tls:
        # A server that offers no STARTTLS: a client configured for STARTTLS must refuse it.
        options.update(auth_require_tls=False)
    else:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        options.update(tls_context=ctx, require_starttls=True)
    controller = Controller(Sink(a.out_dir, a.defer), **options)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.new_event_loop().run_until_complete(asyncio.Event().wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
