"""`clawgate chat` driven through a pseudo-terminal (CTX-6, GW-4): a turn
with its reasoning dimmed, `/model`, `/status`, Ctrl-C in the middle of a
streamed answer, `/compact`, then a turn that still has the history; the
session file holds every turn and no command."""

import os
import pty
import select
import sqlite3
import time

from conftest import FakeChat, ROOT


class Term:
    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)
        self.seen = ""

    def expect(self, text, timeout=20):
        """Reads until `text` appears after what was matched before."""
        deadline = time.time() + timeout
        while text not in self.seen:
            left = deadline - time.time()
            assert left > 0, f"{text!r} never came; the terminal shows:\n{self.seen[-2000:]}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    assert text in self.seen, f"{text!r} never came before exit:\n{self.seen[-2000:]}"
                    break
                self.seen += data.decode("utf-8", "replace")
        at = self.seen.index(text) + len(text)
        before, self.seen = self.seen[:at], self.seen[at:]
        return before

    def send(self, text):
        os.write(self.fd, text.encode())

    def wait(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                if select.select([self.fd], [], [], 0.1)[0]:
                    self.seen += os.read(self.fd, 65536).decode("utf-8", "replace")
            except OSError:
                time.sleep(0.1)
        raise AssertionError("clawgate chat did not exit")


def test_clawgate_chat_in_a_pseudo_terminal(upstream, tmp_path):
    config = tmp_path / "clawgate.json5"
    config.write_text(
        "{ agents: { defaults: { model: \"local/tiny\", models: { \"local/tiny\": { alias: \"Tiny\" } } } },\n"
        f"  models: {{ providers: {{ local: {{ baseUrl: \"{upstream}\", api: \"openai-completions\",\n"
        "    models: [{ id: \"tiny\", contextWindow: 32768 }] } } } }\n"
    )
    binary = os.environ.get("CLAWGATE_BIN", str(ROOT / "target" / "debug" / "clawgate"))
    env = dict(os.environ, HOME=str(tmp_path), CLAWGATE_LOG="off", TERM="xterm",
               CLAWGATE_STATE_DIR=str(tmp_path / "state"))
    env.pop("NO_COLOR", None)
    t = Term([binary, "--config", str(config), "chat", "--session", "pty"], env)
    t.expect("› ")

    # A turn: reasoning dimmed and apart, the answer, the footer.
    t.send("hello there\r")
    shown = t.expect("› ")
    assert "\x1b[2mlet me think\x1b[0m\n" in shown.replace("\r\n", "\n"), repr(shown)
    assert "Hello from fake" in shown
    assert "[local/tiny · 11 in / 4 out tokens" in shown

    t.send("/model status\r")
    assert "local/tiny: 32768-token window (config:contextWindow)" in t.expect("› ")
    t.send("/model Tiny\r")
    assert "Model set to local/tiny for this session" in t.expect("› ")
    t.send("/status\r")
    shown = t.expect("› ")
    assert "Session pty" in shown and "Turns: 1, compactions: 0" in shown, shown

    # Ctrl-C while the answer streams: cancelled, the session goes on.
    t.send("tell me slowly\r")
    t.expect("word3 ")
    t.send("\x03")
    shown = t.expect("› ")
    assert "(cancelled: what arrived is kept, marked incomplete)" in shown, shown
    assert "word150" not in shown

    t.send("/compact\r")
    shown = t.expect("› ")
    assert "Compacted 3 earlier entries into a summary with local/tiny" in shown, shown

    # (the first turn: its question, reasoning and answer)
    # The next turn still has the history: the summary and the cut turn.
    t.send("what now?\r")
    assert "Hello from fake" in t.expect("› ")
    last = FakeChat.requests[-1]["body"]
    # The summary leads the first user message as a delimited block (never
    # the system prompt: it was written from what the user sent).
    first = last["messages"][0]
    assert first["role"] == "user", last
    assert first["content"].startswith("<conversation-summary>\nEarlier conversation, summarized"), last
    assert all(m["role"] != "system" for m in last["messages"]), last
    said = [m.get("content") for m in last["messages"]]
    assert first["content"].endswith("tell me slowly") and said[-1] == "what now?", said
    assert any(isinstance(s, str) and s.startswith("word0 word1 word2 word3") for s in said), said

    t.send("\x04")
    assert t.wait() == 0
    assert "session pty kept" in t.seen

    db = sqlite3.connect(tmp_path / "state" / "sessions.sqlite3")
    rows = db.execute(
        "SELECT e.kind, e.text, e.incomplete FROM entries e JOIN sessions s ON s.id = e.session_id "
        "WHERE s.key = 'pty' ORDER BY e.id").fetchall()
    users = [r[1] for r in rows if r[0] == "user"]
    assert users == ["hello there", "tell me slowly", "what now?"], rows
    assert any(r[0] == "assistant" and r[2] == 1 and r[1].startswith("word0") for r in rows), rows
    assert not any(r[1].startswith("/") for r in rows), rows
    assert db.execute("SELECT compactions FROM sessions WHERE key = 'pty'").fetchone() == (1,)
