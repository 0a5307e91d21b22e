#!/usr/bin/env bash
# What the email-gateway tests (host/cli/tests/it/email_gateway.rs) need: a real SMTP server (PyPI aiosmtpd, in its
# own venv) and a real IMAP server (Debian dovecot-imapd, started unprivileged by the test), and openssl. Idempotent and quick
# when everything is there.
set -euo pipefail

# openssl makes the test CA and the servers' certificate.
if ! command -v dovecot >/dev/null 2>&1 || [ ! -x /usr/lib/dovecot/imap ] || ! command -v openssl >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y --no-install-recommends dovecot-imapd openssl >/dev/null
fi
# apt starts no services here (policy-rc.d); make sure a system dovecot is not left running all the same.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now dovecot >/dev/null 2>&1 || true; fi

VENV=/var/cache/imfree/venv-email
if ! "$VENV/bin/python" -c 'import aiosmtpd' >/dev/null 2>&1; then
    mkdir -p /var/cache/imfree/pip
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --cache-dir /var/cache/imfree/pip aiosmtpd
fi
echo "email-gateway deps: $(dovecot --version | head -1), aiosmtpd $("$VENV/bin/python" -c 'import aiosmtpd; print(aiosmtpd.__version__)')"
