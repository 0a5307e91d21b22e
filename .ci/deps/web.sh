#!/usr/bin/env bash
# What the web client's browser tests (host/cli/tests/it/web.rs) need: Debian's Chromium (driven headless by npm
# playwright-core, pinned by host/cli/tests/web/package-lock.json and installed by the test's own `npm ci` into a
# cache outside the clone), and a colour emoji font so that reactions show in the screenshots. Idempotent and quick
# when both are there.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -d /usr/share/fonts/truetype/noto ]; then
    echo "$(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y --no-install-recommends chromium fonts-dejavu-core fonts-noto-color-emoji >/dev/null
/usr/bin/chromium --version
