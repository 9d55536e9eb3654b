#!/usr/bin/env bash
# One command for the benchmark: installs nginx (Debian) when missing,
# builds the release gateway and the bench, runs it. Pass --quick for a
# shorter run. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  (apt-get update -qq && apt-get install -y -qq nginx-light) >/dev/null 2>&1 \
    || echo "note: nginx could not be installed; the NGINX reference row is skipped" >&2
fi
cargo build --release -q -p clawgate -p clawgate-bench
target/release/clawgate-bench --gateway target/release/clawgate "$@"
