#!/usr/bin/env bash
# The benchmark in one command (issue 6): installs nginx (Debian) and the
# LiteLLM proxy (PyPI, into a virtualenv under the cache) when missing,
# builds the release gateway and the bench, and runs it. Everything listens
# on 127.0.0.1. Pass --quick for a shorter run; other flags go to
# clawgate-bench (see `target/release/clawgate-bench --help`).
# Set CLAWGATE_BENCH_NO_LITELLM=1 to leave LiteLLM out.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/clawgate-bench
LITELLM_VERSION=${LITELLM_VERSION:-1.108.7}

if ! command -v wrk >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 \
    || echo "note: wrk could not be installed; the throughput rows use the in-process generator" >&2
fi
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  (apt-get update -qq && apt-get install -y -qq nginx-light) >/dev/null 2>&1 \
    || echo "note: nginx could not be installed; the NGINX reference row is skipped" >&2
fi

litellm=()
if [[ -z ${CLAWGATE_BENCH_NO_LITELLM:-} ]]; then
  venv=$CACHE/venv-litellm
  if [[ ! -x $venv/bin/litellm ]]; then
    echo "installing litellm[proxy] into $venv (once)" >&2
    mkdir -p "$CACHE"
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"; } >"$CACHE/pip.log" 2>&1 \
      || { echo "note: LiteLLM could not be installed (see $CACHE/pip.log); its rows are skipped" >&2; rm -rf "$venv"; }
  fi
  [[ -x $venv/bin/litellm ]] && litellm=(--litellm "$venv/bin/litellm")
fi

# 1 000 open streams need about 4 000 descriptors across the processes.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release -q -p clawgate -p clawgate-bench
target/release/clawgate-bench --gateway target/release/clawgate "${litellm[@]}" "$@"
