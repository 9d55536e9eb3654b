#!/usr/bin/env bash
# Conformance tests with the official Python SDKs against the real
# `clawgate gateway` binary (fake model servers on 127.0.0.1). Creates
# .venv with the SDKs and pytest on first use.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [[ ! -x .venv/bin/pytest ]] || ! .venv/bin/python -c 'import openai, anthropic' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check openai anthropic pytest
fi
cargo build -q -p clawgate
# The binary where cargo put it: CARGO_TARGET_DIR, build.target-dir or ./target.
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
CLAWGATE_BIN="$TARGET_DIR/debug/clawgate" .venv/bin/pytest -q tests/sdk "$@"
