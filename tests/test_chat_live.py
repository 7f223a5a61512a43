"""`entropylens chat` driven through a pseudo-terminal: scripted turns, /reset, Ctrl-C mid-reply."""

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
from transformers import AutoTokenizer

from entropylens_hf import Trace

MAX_NEW = 500_000  # never reached: every reply in the scripted chat is ended by Ctrl-C
CLI = "import sys; from entropylens_hf.cli import main; sys.exit(main(sys.argv[1:]))"


class Terminal:
    """A child process on a pseudo-terminal: type lines, read until a text appears."""

    def __init__(self, argv):
        self.master, slave = pty.openpty()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "dumb"}
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.seen = ""

    def read_until(self, text, timeout=90):
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear; the terminal shows:\n{self.seen[-2000:]}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096).decode("utf-8", errors="replace")
                except OSError:  # the child closed the terminal
                    break
        head, _, self.seen = self.seen.partition(text)
        return head

    def type(self, line):
        os.write(self.master, (line + "\n").encode())

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def _chat(model_dir, out, *options):
    return Terminal([sys.executable, "-c", CLI, "chat", str(model_dir), "--out", str(out), *options])


def _ask_and_interrupt(term, out, text, count):
    """Type ``text``, wait until the reply has 3 tokens in the file (sequence ``count``), press Ctrl-C.

    The model cannot end a reply by itself (``endless_chat_model_dir``), so the reply is still
    being generated when the signal arrives, on any machine.
    """
    term.type(text)
    term.read_until("model> ")
    deadline = time.monotonic() + 120  # a guard against a hang, not a speed assumption
    while True:
        with Trace.open(out, partial=True) as trace:
            if len(trace) == count and trace[count - 1].n_generated >= 3:
                break
        if time.monotonic() > deadline:
            raise AssertionError(f"reply {count} never reached 3 tokens in {out}")
        time.sleep(0.05)
    term.proc.send_signal(signal.SIGINT)
    return term.read_until("you> ")


def test_a_scripted_chat_records_each_reply_live_with_its_turn_and_ctrl_c_ends_a_reply(endless_chat_model_dir, tmp_path):
    out = tmp_path / "chat.h5"
    term = _chat(endless_chat_model_dir, out, "--max-new-tokens", str(MAX_NEW), "--live-interval", "0.1")
    try:
        term.read_until("you> ")
        first = _ask_and_interrupt(term, out, "the quick brown fox", 1)
        assert "[stopped]" in first
        _ask_and_interrupt(term, out, "import os", 2)  # the chat goes on after Ctrl-C
        term.type("/reset")
        assert "(new conversation)" in term.read_until("you> ")
        _ask_and_interrupt(term, out, "def main", 3)
        term.type("/quit")
        assert "3 replies " in term.read_until("recorded in")
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.close()
    with Trace.open(out) as trace:
        assert len(trace) == 0  # every reply was cut short: analyses and export do not see them
    with Trace.open(out, partial=True) as trace:
        assert list(trace.statuses) == [2, 2, 2] and all(3 <= seq.n_generated < MAX_NEW for seq in trace)
        turns = [(lab["conversation"], lab["turn"]) for lab in trace.labels]
        assert [t for _, t in turns] == ["1", "2", "1"] and turns[0][0] == turns[1][0]
        one, two, three = trace
        # the second turn's prompt is the whole conversation through the template, the cut reply included
        tokenizer = AutoTokenizer.from_pretrained(endless_chat_model_dir)
        reply = tokenizer.decode(one.token_ids[one.prompt_length :], skip_special_tokens=True)
        assert two.prompt_text.startswith("<s>user\nthe quick brown fox</s>\n<s>assistant\n" + reply.strip())
        assert "import os" in two.prompt_text and "quick" not in three.prompt_text
        assert two.token_ids[: two.prompt_length].tolist() == tokenizer(two.prompt_text, add_special_tokens=False).input_ids
    # the reply streamed to the terminal (up to the token the recording kept, give or take the one in flight)
    assert reply[:8] in first.replace("\r\n", "\n")


@pytest.mark.parametrize("options, message", [
    (["--out", "{tmp}"], "is a directory"),
    (["--live-interval", "-1"], "--live-interval -1.0: must be >= 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0: must be at least 1"),
])
def test_bad_chat_options_get_one_line_before_the_model_loads(tmp_path, capsys, options, message):
    from entropylens_hf.cli import main

    argv = ["chat", "no-such-model", "--out", str(tmp_path / "c.h5")] + [o.format(tmp=tmp_path) for o in options]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("entropylens chat: error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c.h5").exists()
