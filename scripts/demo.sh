#!/usr/bin/env bash
# The end-to-end demo on embedded defaults, from a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh agent,compiler,cloud
exec .venv/bin/coldchain demo "$@"
