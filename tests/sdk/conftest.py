"""Fixtures: a fake OpenAI-compatible model server (stdlib, 127.0.0.1) and
the real `clawgate gateway` binary in front of it."""

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sdk-test-token-0123456789"


class FakeChat(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions like llama.cpp would: a tool call when a
    tool is offered and not yet answered, text (with reasoning) otherwise."""

    protocol_version = "HTTP/1.1"
    requests = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        FakeChat.requests.append({"path": self.path, "body": body})
        if self.path.endswith("/responses"):
            return self._responses(body)
        msgs = body.get("messages", [])
        last = msgs[-1].get("content") if msgs else ""
        if isinstance(last, list):
            last = " ".join(b.get("text", "") for b in last if isinstance(b, dict))
        if isinstance(last, str) and "model-loads" in last and self._still_loading(last):
            return self._loading()
        if body.get("stream") and isinstance(last, str) and "slowly" in last:
            return self._slowly()
        wants_tool = bool(body.get("tools")) and not any(m.get("role") == "tool" for m in msgs)
        if wants_tool:
            first = {"index": 0, "id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":"}}
            rest = {"index": 0, "function": {"arguments": " \"Paris\"}"}}
            delta_list = [{"tool_calls": [first]}, {"tool_calls": [rest]}]
            finish = "tool_calls"
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}
        else:
            answer = "Sunny in Paris" if any(m.get("role") == "tool" for m in msgs) else "Hello from fake"
            delta_list = [{"reasoning_content": "let me think"}, {"content": answer[:5]}, {"content": answer[5:]}]
            finish = "stop"
            message = {"role": "assistant", "content": answer, "reasoning_content": "let me think"}
        usage = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
        if body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            frames = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in delta_list]
            frames.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            frames.append({"choices": [], "usage": usage})
            for f in frames:
                self._chunk(f"data: {json.dumps(f)}\n\n".encode())
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        else:
            out = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                {"index": 0, "message": message, "finish_reason": finish}], "usage": usage}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    def _responses(self, body):
        """LM Studio's Responses API: reasoning, then text."""
        events = [
            ("response.reasoning_text.delta", {"delta": "local reasoning"}),
            ("response.output_text.delta", {"delta": "Bonjour du local"}),
            ("response.completed", {"response": {"status": "completed",
                                                 "usage": {"input_tokens": 7, "output_tokens": 3}}}),
        ]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for name, data in events:
            self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self._chunk(b"")

    def _slowly(self):
        """A long answer, one word every 50 ms (for cancelling mid-way)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            for i in range(200):
                frame = {"choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]}
                self._chunk(f"data: {json.dumps(frame)}\n\n".encode())
                time.sleep(0.05)
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            pass

    loads = {}

    def _still_loading(self, key):
        """llama.cpp while its model loads: 503 "Loading model" — three times
        for a prompt with "model-loads", forever with "model-loads-forever"."""
        n = FakeChat.loads.get(key, 0)
        FakeChat.loads[key] = n + 1
        return "forever" in key or n < 3

    def _loading(self):
        out = b'{"error":{"message":"Loading model","type":"unavailable_error","code":503}}'
        self.send_response(503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def _chunk(self, data: bytes):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@pytest.fixture(scope="session")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture(scope="session")
def gateway(upstream, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    config = home / "clawgate.json5"
    config.write_text(
        "{\n"
        "  agents: { defaults: { model: { primary: \"local/tiny\" },\n"
        "    models: { \"local/tiny\": { alias: \"Tiny\" } } } },\n"
        f"  models: {{ providers: {{ local: {{ baseUrl: \"{upstream}\", api: \"openai-completions\",\n"
        "    models: [{ id: \"tiny\", contextWindow: 32768, maxTokens: 256 }] } } },\n"
        f"  gateway: {{ auth: {{ mode: \"token\", token: \"{TOKEN}\" }} }},\n"
        "}\n"
    )
    binary = os.environ.get("CLAWGATE_BIN", str(ROOT / "target" / "debug" / "clawgate"))
    env = dict(os.environ, HOME=str(home), CLAWGATE_LOG="off", CLAWGATE_STATE_DIR=str(home / "state"))
    proc = subprocess.Popen(
        [binary, "--config", str(config), "gateway", "--port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True,
    )
    line = proc.stderr.readline()
    assert "listening on http://" in line, line
    base = line.strip().rsplit(" ", 1)[-1]
    yield base + "/v1"
    proc.terminate()
    proc.wait(timeout=15)


@pytest.fixture(scope="session")
def seed_gateway(upstream, tmp_path_factory):
    """The seed hybrid config unchanged but for two addresses: Anthropic on a
    dead loopback port (the hosted primary is down), LM Studio on the fake."""
    home = tmp_path_factory.mktemp("seed-home")
    seed = (ROOT / "tests" / "fixtures" / "configs" / "seed-hybrid-hosted-primary.json5").read_text()
    seed = seed.replace("http://127.0.0.1:1234/v1", upstream)
    seed = seed.replace("providers: {", "providers: {\n      anthropic: { baseUrl: \"http://127.0.0.1:9\" },", 1)
    config = home / "clawgate.json5"
    config.write_text(seed)
    binary = os.environ.get("CLAWGATE_BIN", str(ROOT / "target" / "debug" / "clawgate"))
    env = dict(os.environ, HOME=str(home), CLAWGATE_LOG="off", ANTHROPIC_API_KEY="sk-ant-test",
               CLAWGATE_STATE_DIR=str(home / "state"))
    proc = subprocess.Popen([binary, "--config", str(config), "gateway", "--port", "0"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    line = proc.stderr.readline()
    assert "listening on http://" in line, line
    yield line.strip().rsplit(" ", 1)[-1] + "/v1"
    proc.terminate()
    proc.wait(timeout=15)


@pytest.fixture(scope="session")
def slow_gateway(upstream, tmp_path_factory):
    """A gateway whose model may still be loading: keep-alives every second,
    a provider timeout of 3 s."""
    home = tmp_path_factory.mktemp("slow-home")
    config = home / "clawgate.json5"
    config.write_text(
        "{\n"
        f"  models: {{ mode: \"replace\", providers: {{ local: {{ baseUrl: \"{upstream}\", timeoutSeconds: 3,\n"
        "    models: [{ id: \"tiny\", contextWindow: 32768, maxTokens: 256 }] } } },\n"
        f"  gateway: {{ auth: {{ mode: \"token\", token: \"{TOKEN}\" }} }},\n"
        "}\n"
    )
    binary = os.environ.get("CLAWGATE_BIN", str(ROOT / "target" / "debug" / "clawgate"))
    env = dict(os.environ, HOME=str(home), CLAWGATE_LOG="off", CLAWGATE_STATE_DIR=str(home / "state"))
    proc = subprocess.Popen(
        [binary, "--config", str(config), "gateway", "--port", "0", "--keepalive-seconds", "1"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True,
    )
    line = proc.stderr.readline()
    assert "listening on http://" in line, line
    yield line.strip().rsplit(" ", 1)[-1]
    proc.terminate()
    proc.wait(timeout=15)
