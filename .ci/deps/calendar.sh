#!/usr/bin/env bash
# The calendar plugin's tests need a real CalDAV server: PyPI `radicale` 3, started on loopback by the tests
# (host/plugin-host/tests/it/calendar.rs, host/cli/tests/it/calendar.rs) with their own storage folder.
# Idempotent and quick when radicale is already there.
set -euo pipefail
if python3 -c 'import radicale, sys; sys.exit(0 if radicale.VERSION.startswith("3") else 1)' 2>/dev/null; then
    echo "radicale $(python3 -c 'import radicale; print(radicale.VERSION)') already installed"
    exit 0
fi
mkdir -p /var/cache/imfree/pip
python3 -m pip install --quiet --cache-dir /var/cache/imfree/pip 'radicale>=3,<4'
python3 -c 'import radicale; print("radicale", radicale.VERSION, "installed")'
