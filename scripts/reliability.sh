#!/usr/bin/env bash
# The reliability suite (issue 13), on demand, not in CI:
#   soak  - mixed streaming load on all three APIs with 30 % random upstream
#           faults; no unclassified error may reach a client, and file
#           descriptors and RSS must come back within 10 % of the warm
#           baseline;
#   crash - SIGKILL of the gateway during session load, restart: the
#           database passes SQLite's integrity check and keeps every turn a
#           client saw completed;
#   slow  - stalled readers and clients trickling oversized bodies must not
#           starve a normal client.
#
#   scripts/reliability.sh                 # all three, soak 600 s
#   SOAK_SECONDS=60 scripts/reliability.sh soak
#
# Results are printed and appended to docs/reliability-runs.log.
set -euo pipefail
cd "$(dirname "$0")/.."
modes=("$@")
[ ${#modes[@]} -eq 0 ] && modes=(soak crash slow)
cargo build --release -p clawgate -p clawgate-bench --bin clawgate --bin reliability
bin=target/release/reliability
status=0
for m in "${modes[@]}"; do
  case "$m" in
    soak) args=(soak --seconds "${SOAK_SECONDS:-600}" --clients "${SOAK_CLIENTS:-32}") ;;
    crash) args=(crash --cycles "${CRASH_CYCLES:-5}") ;;
    slow) args=(slow) ;;
    *) echo "unknown mode $m (soak, crash, slow)" >&2; exit 2 ;;
  esac
  echo "== $m: $bin ${args[*]}"
  out="$(mktemp)"
  if "$bin" --gateway target/release/clawgate "${args[@]}" | tee "$out"; then
    result=ok
  else
    result=FAIL
    status=1
  fi
  {
    echo "## $(date -u +%FT%TZ) $m: $result ($(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs)"
    echo "\$ scripts/reliability.sh $m   # $bin ${args[*]}"
    cat "$out"
    echo
  } >> docs/reliability-runs.log
  rm -f "$out"
done
exit "$status"
