#!/usr/bin/env bash
# Real-server tier for sessions on small windows (issue 21, CTX-2..4):
# the real llama.cpp `llama-server` (../shared/realpeers, tiny model, two
# slots, so the per-slot window is CTX/2) behind `clawgate gateway`,
# driven through the official OpenAI SDK as a user would: sessions of 12
# turns of 60, 200, 400 and 700 words of prose and of 50 lines of code at
# 2 048, 4 096 and 8 192 tokens per slot. Reports, per session, the turns
# answered and refused (a refusal must be the gateway's, in numbers; a
# server overflow must never reach the client), the compactions, and how
# far the gateway's estimate of each prompt was from the server's count.
# Not part of `cargo test` (the server build takes about 10 minutes once).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${REALPEERS:-$ROOT/../shared/realpeers}
PORT=${PORT:-18941}
GPORT=${GPORT:-18942}
TURNS=${TURNS:-12}
SLOTS=${SLOTS:-"2048 4096 8192"}

bash "$PEERS/setup.sh" >/dev/null
cd "$ROOT"
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import openai' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check openai anthropic pytest
fi
cargo build -q -p clawgate
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET_DIR/debug/clawgate
work=$(mktemp -d)
server=""; gateway=""
cleanup() {
  [[ -n $gateway ]] && kill "$gateway" 2>/dev/null || true
  [[ -n $server ]] && { bash "$PEERS/stop.sh" "$server" >/dev/null 2>&1 || kill "$server" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

status=0
for slot in $SLOTS; do
  ctx=$((slot * 2))
  server=$(bash "$PEERS/start.sh" "$PORT" "$ctx")
  # The config says the server's whole -c, as users write it; the gateway
  # must find the per-slot window itself (or learn it from an overflow).
  cat > "$work/clawgate.json5" <<JSON5
{
  agents: { defaults: { model: "llama/tiny", params: { extra_body: { ignore_eos: true } } } },
  models: { mode: "replace", providers: {
    llama: { baseUrl: "http://127.0.0.1:$PORT/v1", api: "openai-completions",
             models: [{ id: "tiny", contextWindow: $ctx, maxTokens: 64 }] },
  } },
}
JSON5
  rm -rf "$work/home"; mkdir -p "$work/home"
  HOME="$work/home" "$BIN" --config "$work/clawgate.json5" gateway --port "$GPORT" >"$work/gateway-$slot.log" 2>&1 &
  gateway=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$GPORT/health" >/dev/null && break; sleep 0.1; done
  if ! .venv/bin/python - "$GPORT" "$slot" "$TURNS" <<'PY'
import sys, json, openai
port, slot, turns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
words = "the server keeps a window of tokens while gateway sessions grow longer".split()
def prose(t, n): return f"Message {t}: " + " ".join(words[(i + t) % len(words)] for i in range(n))
def code(t, n): return f"// file {t}\n" + "".join(f"    let value_{i} = compute(&input[{i}], {i} * 3); // step {t}.{i}\n" for i in range(n))
kinds = [("60 words", lambda t: prose(t, 60)), ("200 words", lambda t: prose(t, 200)),
         ("400 words", lambda t: prose(t, 400)), ("700 words", lambda t: prose(t, 700)),
         ("50 lines of code", lambda t: code(t, 50))]
bad = 0
for name, make in kinds:
    key = f"real-{slot}-{name.replace(' ', '-')}"
    answered = refused = compactions = leaked = 0
    errors, first_refusal = [], None
    msg_tokens = None
    for t in range(turns):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="default", user=key, messages=[{"role": "user", "content": make(t)}])
            r = raw.parse()
            answered += 1
            ctx = raw.headers.get("x-clawgate-context", "")
            compactions += ctx.count("context: compacted")
            est = raw.headers.get("x-clawgate-prompt-estimate")
            if est and r.usage and r.usage.prompt_tokens:
                errors.append(abs(int(est) - r.usage.prompt_tokens) / r.usage.prompt_tokens)
        except openai.BadRequestError as e:
            m = str(e)
            refused += 1
            first_refusal = first_refusal or m[:300]
            if "exceeds the available context size" in m and "prompt is too long" not in m:
                leaked += 1
        except Exception as e:  # noqa: BLE001
            errors.append(None)
            first_refusal = first_refusal or f"{type(e).__name__}: {str(e)[:300]}"
            refused += 1
    calibrated = [e for e in errors[2:] if e is not None]
    worst = max(calibrated) if calibrated else None
    line = (f"{slot:>5} per slot, {name:>16}: {answered}/{turns} answered, {refused} refused, "
            f"{compactions} compactions, server overflows reaching the client: {leaked}, "
            f"estimate off by at most {worst * 100:.1f} % after calibration" if worst is not None else
            f"{slot:>5} per slot, {name:>16}: {answered}/{turns} answered, {refused} refused, "
            f"{compactions} compactions, server overflows reaching the client: {leaked}")
    print(line)
    if first_refusal:
        print(f"        first refusal: {first_refusal}")
    if leaked or (worst is not None and worst > 0.15):
        bad += 1
sys.exit(1 if bad else 0)
PY
  then status=1; fi
  grep -E "low context window|compacted|overflow" "$work/gateway-$slot.log" | head -3 | sed 's/^/        log: /' || true
  kill "$gateway" 2>/dev/null || true; wait "$gateway" 2>/dev/null || true; gateway=""
  bash "$PEERS/stop.sh" "$server" >/dev/null 2>&1 || true; server=""
done
exit $status
