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
TARGET_DIR=$(cargo metadata --manifest-path "$ROOT/Cargo.toml" --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET_DIR/debug/clawgate
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
# The random model may end at once; on chat and Responses `ignore_eos`
# prevents that, but llama-server's /v1/messages ignores it. An empty
# answer there is judged by the protocol (a stop reason and usage came
# back, classified as empty_answer), not by the words.
for ref in "${refs[@]}"; do
  for mode in "" --stream; do
    out=$("$BIN" --config "$work/clawgate.json5" infer --model "$ref" --prompt "hello" $mode --json) && rc=0 || rc=$?
    if line=$(python3 -c '
import json, sys
ref, rc = sys.argv[1], int(sys.argv[2])
d = json.loads(sys.stdin.read())
err = d.get("error") or {}
empty_ok = ref.startswith("messages/") and err.get("class") == "empty_answer" and "stop reason: " in err.get("message", "")
if rc == 0 and d.get("ok"):
    print("api=%s stop=%s usage=%s text=%d chars latency=%sms" % (d["api"], d["stop"], d["usage"], len(d["text"]), d["latencyMs"]))
elif empty_ok:
    print("api=%s empty answer (%s) latency=%sms" % (d["api"], err["message"], d["latencyMs"]))
else:
    sys.exit(1)
' "$ref" "$rc" <<<"$out" 2>/dev/null); then
      echo "ok   $ref ${mode:-(non-stream)}: $line"
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
  echo "ok   chat/tiny overflow: $(python3 -c 'import json,sys; e=json.load(sys.stdin)["error"]; print(e["status"], e["class"])' <<<"$out")"
fi
exit $status
