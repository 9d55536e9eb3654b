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

# Issue 22 (6): a gateway killed with SIGKILL leaves its localService
# llama-servers running; the next gateway takes back the one it would
# run (no second start), swaps within the group as if it had started it,
# and stops everything on SIGTERM.
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clawgate-realpeers}
GPORT=${GPORT:-18935}; P1=${P1:-18936}; P2=${P2:-18937}
server() { echo "command: \"$CACHE/bin/llama-server\", args: [\"-m\", \"$CACHE/tiny.gguf\", \"--host\", \"127.0.0.1\", \"--port\", \"$1\", \"-c\", \"2048\", \"-np\", \"2\", \"--alias\", \"tiny\", \"--no-webui\"], env: { LD_LIBRARY_PATH: \"$CACHE/bin\" }, group: \"gpu\", idleStopMs: 600000"; }
cat > "$work/gw.json5" <<JSON5
{
  gateway: { port: $GPORT, auth: { mode: "none" } },
  agents: { defaults: { params: { extra_body: { ignore_eos: true } } } },
  models: { mode: "replace", providers: {
    one: { baseUrl: "http://127.0.0.1:$P1/v1", localService: { $(server $P1) }, models: [{ id: "tiny", maxTokens: 8 }] },
    two: { baseUrl: "http://127.0.0.1:$P2/v1", localService: { $(server $P2) }, models: [{ id: "tiny", maxTokens: 8 }] },
  } },
}
JSON5
state="$work/state"
gw() { CLAWGATE_STATE_DIR=$state "$BIN" --config "$work/gw.json5" gateway >>"$work/gw.log" 2>&1 & echo $!; }
ask() { curl -s -o /dev/null -w '%{http_code}' -m 120 "http://127.0.0.1:$GPORT/v1/chat/completions" -H 'content-type: application/json' -d "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"; }
up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$GPORT/health" >/dev/null && return 0; sleep 0.1; done; return 1; }
srv() { pgrep -f "llama-server.*--port $1" || true; }
check() { if eval "$2"; then echo "ok   sigkill: $1"; else echo "FAIL sigkill: $1"; tail -5 "$work/gw.log"; status=1; fi; }
g1=$(gw); pids+=("$g1"); up
check "first gateway answers on one/tiny" '[[ $(ask one/tiny) == 200 ]]'
s1=$(srv $P1)
kill -9 "$g1"; wait "$g1" 2>/dev/null || true
check "its llama-server (pid $s1) outlives a SIGKILL" '[[ -n $s1 ]] && kill -0 $s1 2>/dev/null'
t0=$(date +%s%N)
g2=$(gw); pids+=("$g2"); up
check "the next gateway takes it back" 'grep -q "pid $s1) left running by an earlier clawgate: taken back" "$work/gw.log"'
check "and answers on it without a second start" '[[ $(ask one/tiny) == 200 && $(srv $P1) == "$s1" ]]'
echo "     restart to first answer on the taken-back server: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
check "a swap to two/tiny stops it (one member of the group at a time)" '[[ $(ask two/tiny) == 200 && -z $(srv $P1) && -n $(srv $P2) ]]'
kill -TERM "$g2"; wait "$g2" 2>/dev/null || true
check "SIGTERM leaves no llama-server behind" '[[ -z $(srv $P1) && -z $(srv $P2) ]]'
check "and no record in the state directory" '[[ -z $(ls -A "$state/local-servers") ]]'
exit $status
