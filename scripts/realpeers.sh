#!/usr/bin/env bash
# Real-server tier: runs `clawgate infer` against a real llama.cpp
# `llama-server` (all three protocols) and, with --litellm, against the
# LiteLLM proxy in front of it. Uses the scripts in ../shared/realpeers
# (first run builds llama-server: about 10 minutes on 2 cores, then cached).
# Not part of `cargo test`: run it before resolving issues that name real servers.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${REALPEERS:-$ROOT/../shared/realpeers}
PORT=${PORT:-18931}
LPORT=${LPORT:-18932}
with_litellm=0
[[ ${1:-} == --litellm ]] && with_litellm=1

bash "$PEERS/setup.sh" >/dev/null
cargo build -q -p clawgate --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/debug/clawgate
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do bash "$PEERS/stop.sh" "$p" >/dev/null 2>&1 || kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
pids+=("$(bash "$PEERS/start.sh" "$PORT" 2048)")

litellm_provider=""
if (( with_litellm )); then
  pids+=("$(bash "$PEERS/litellm.sh" "$LPORT" "http://127.0.0.1:$PORT/v1" tiny)")
  litellm_provider="litellm: { baseUrl: \"http://127.0.0.1:$LPORT/v1\", apiKey: \"\${LITELLM_KEY}\", models: [{ id: \"tiny\", contextWindow: 1024, maxTokens: 16 }] },"
fi
cat > "$work/clawgate.json5" <<JSON5
{
  // The tiny model has random weights: without ignore_eos it may stop
  // after one special token and return no text at all.
  agents: { defaults: { params: { extra_body: { ignore_eos: true } } } },
  models: { mode: "replace", providers: {
    chat: { baseUrl: "http://127.0.0.1:$PORT/v1", api: "openai-completions", models: [{ id: "tiny", contextWindow: 1024, maxTokens: 16 }] },
    responses: { baseUrl: "http://127.0.0.1:$PORT/v1", api: "openai-responses", models: [{ id: "tiny", contextWindow: 1024, maxTokens: 16 }] },
    messages: { baseUrl: "http://127.0.0.1:$PORT", api: "anthropic-messages", models: [{ id: "tiny", contextWindow: 1024, maxTokens: 16 }] },
    $litellm_provider
  } },
}
JSON5
export LITELLM_KEY=${LITELLM_MASTER_KEY:-sk-litellm-local-test-key-0123456789}
refs=(chat/tiny responses/tiny messages/tiny)
(( with_litellm )) && refs+=(litellm/tiny)
status=0
for ref in "${refs[@]}"; do
  for mode in "" --stream; do
    if out=$("$BIN" --config "$work/clawgate.json5" infer --model "$ref" --prompt "hello" $mode --json); then
      echo "ok   $ref ${mode:-(non-stream)}: $(python3 -c 'import json,sys; d=json.load(sys.stdin); print("api=%s stop=%s usage=%s text=%d chars latency=%sms" % (d["api"], d["stop"], d["usage"], len(d["text"]), d["latencyMs"]))' <<<"$out")"
    else
      echo "FAIL $ref ${mode:-(non-stream)}: $out"; status=1
    fi
  done
done
# A context overflow from the real server is reported, not hidden.
long=$(python3 -c 'print("hello " * 3000)')
if out=$("$BIN" --config "$work/clawgate.json5" infer --model chat/tiny --prompt "$long" --json); then
  echo "FAIL overflow was not reported: $out"; status=1
else
  echo "ok   chat/tiny overflow: $(python3 -c 'import json,sys; e=json.load(sys.stdin)["error"]; print(e["status"], e["type"])' <<<"$out")"
fi
exit $status
