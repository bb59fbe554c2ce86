#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, lint, types, import contracts, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh agent,compiler,cloud,litert,train,dev

# Mosquitto (MQTT v5) for the integration tests; tests start their own instance on a free port.
if ! command -v mosquitto >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing mosquitto from apt"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi

# PostgreSQL for the store tests (they start a throwaway cluster of their own on a free port).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing postgresql from apt"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

# Debian's chromium for the dashboard's browser tests (Playwright drives it; it downloads no browser of its own).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium from apt"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# onnx2tf (TensorFlow, numpy 1.26) in its own environment, for the arm64-litert conversion tests.
scripts/setup-onnx2tf.sh

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy (strict for contract/, transport/ and agent/)"
.venv/bin/mypy
echo "== Python 3.10 for coldchain[agent] (ruff: per-file-target-version py310 in pyproject.toml; mypy here)"
.venv/bin/mypy --python-version 3.10 agent contract transport coldchain/__init__.py coldchain/cli.py \
    coldchain/agent_cli.py coldchain/console.py coldchain/__main__.py
echo "== import contracts"
.venv/bin/lint-imports
echo "== pytest"
.venv/bin/pytest "$@"
