#!/usr/bin/env bash
# What the transcription plugin's end-to-end test (host/cli/tests/it/transcription.rs) needs: Debian `flite` (speech
# synthesis, voice rms) and `opus-tools` (opusenc/opusdec), and PyPI `pocketsphinx` (an offline recogniser whose wheel
# ships an en-US model) in a virtual environment the test finds at /var/cache/imfree/venv-transcription
# (IMFREE_TRANSCRIPTION_PYTHON overrides). Idempotent and quick when everything is there.
set -euo pipefail

missing=()
command -v flite >/dev/null || missing+=(flite)
{ command -v opusenc >/dev/null && command -v opusdec >/dev/null; } || missing+=(opus-tools)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

venv=/var/cache/imfree/venv-transcription
if ! "$venv/bin/python" -c 'import pocketsphinx' 2>/dev/null; then
    echo "installing pocketsphinx into $venv"
    mkdir -p /var/cache/imfree/pip
    rm -rf "$venv"
    python3 -m venv "$venv"
    PIP_CACHE_DIR=/var/cache/imfree/pip "$venv/bin/pip" install --quiet 'pocketsphinx==5.*'
fi
flite -lv | head -1 >/dev/null
"$venv/bin/python" -c 'import pocketsphinx; pocketsphinx.get_model_path()'
