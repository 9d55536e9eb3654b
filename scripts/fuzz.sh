#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60)
# with libFuzzer through cargo-fuzz on the nightly toolchain, starting from
# the seed corpora in fuzz/seeds. Crashes land in fuzz/artifacts/<target>/;
# the script exits 1 if any target found one. One line per target is
# appended to fuzz/results.log (date, target, seconds, executions, result).
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # 10 minutes per target
#   scripts/fuzz.sh 600 sse    # one target
#
# Needs: rustup with a nightly toolchain, and cargo-fuzz (installed here
# with `cargo install cargo-fuzz --locked` when missing).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
shift || true
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  log="$(mktemp)"
  echo "== $t: ${seconds}s"
  if cargo +nightly fuzz run "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
      -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see fuzz/artifacts/$t)"
    failed=1
    tail -40 "$log"
  fi
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  echo "$(date -u +%FT%TZ) $t ${seconds}s execs=$execs $result" | tee -a results.log
  rm -f "$log"
done
exit "$failed"
