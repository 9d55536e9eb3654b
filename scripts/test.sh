#!/usr/bin/env bash
# Every test: the Rust workspace (unit, integration, black-box CLI and HTTP
# tests), then the official OpenAI/Anthropic Python SDKs against the real
# gateway binary. This is the one test command of README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
bash scripts/sdk-tests.sh
