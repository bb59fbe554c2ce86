#!/usr/bin/env bash
# Create .venv (Python 3.11) and install coldchain with the given extras.
#   scripts/setup.sh agent,compiler,cloud,dev
# Re-running is cheap: pip skips what is already installed at the pinned versions.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-agent,compiler,cloud,dev}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "coldchain needs Python 3.11; $python is $("$python" --version 2>&1)" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    "$python" -m venv .venv
fi
# This machine's pip configuration names local wheel folders that may be absent; pip says so once per
# package. Those lines are noise: drop them, keep every other message.
quiet_pip() {
    .venv/bin/python -m pip "$@" --quiet --disable-pip-version-check 2> >(grep -v "is ignored: it is neither" >&2)
}
quiet_pip install --upgrade "pip>=24"
echo "== installing coldchain[$extras]"
quiet_pip install -e ".[${extras}]"
