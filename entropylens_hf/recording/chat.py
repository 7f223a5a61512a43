"""A terminal chat with a model, every reply recorded live into a trace: ``entropylens chat``.

The conversation goes through the tokenizer's chat template (a model without one gets a
plain ``User:`` / ``Assistant:`` transcript, and is told so). Replies stream to the terminal
as they are generated and reach the trace while they are written (``lens.record(...,
live=True)``), so a viewer following the file watches each answer's heatmap fill in. Ctrl-C
ends the current reply at the next token: what was generated stays in the history and in the
trace (marked interrupted, status 2); Ctrl-C or Ctrl-D at the prompt, or ``/quit``, leaves.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TextIO

from ..errors import EntropyLensError

__all__ = ["ChatSession", "run_chat", "PLAIN_TEMPLATE"]

#: The transcript a model without a chat template is prompted with (text continuation).
PLAIN_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% else %}{{ 'User' if m['role'] == 'user' else 'Assistant' }}: {{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

HELP = "type a message; /reset starts a new conversation, /quit (or Ctrl-D) leaves, Ctrl-C stops a reply"


@dataclass
class Turn:
    """One finished reply: its text, whether Ctrl-C cut it short, and its index in the trace."""

    text: str
    interrupted: bool
    index: int


@dataclass
class ChatSession:
    """The conversation and its recording: :meth:`reply` runs one turn.

    ``recorder`` is the :class:`~entropylens_hf.recorder.TraceRecorder` of an open
    ``lens.record(path, live=True)`` block. Every reply is labelled with its conversation
    (the UTC time it started) and its turn number.
    """

    lens: Any
    recorder: Any
    generate_kwargs: dict[str, Any]
    system: str | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    messages: list[dict[str, str]] = field(default_factory=list)
    conversation: str = ""
    turn: int = 0

    def __post_init__(self) -> None:
        self.template = getattr(self.lens.tokenizer, "chat_template", None) or PLAIN_TEMPLATE
        self.reset()

    @property
    def plain(self) -> bool:
        """True for a model without a chat template (prompted with :data:`PLAIN_TEMPLATE`)."""
        return self.template is PLAIN_TEMPLATE

    def reset(self) -> None:
        """Forget the history; the next reply starts a new conversation."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.conversation = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.turn = 0

    def render(self) -> str:
        return self.lens.tokenizer.apply_chat_template(self.messages, chat_template=self.template, tokenize=False,
                                                       add_generation_prompt=True)

    def reply(self, text: str) -> Turn:
        """Generate, stream and record the answer to ``text``; Ctrl-C ends it early (kept as interrupted).

        A second Ctrl-C raises :class:`KeyboardInterrupt` out of generate: the rows written so
        far stay in the trace (abandoned), the question leaves the history.
        """
        tokenizer, model = self.lens.tokenizer, self.lens.model
        self.messages.append({"role": "user", "content": text})
        rendered = self.render()
        inputs = tokenizer(rendered, return_tensors="pt", add_special_tokens=self.plain)
        width = int(inputs["input_ids"].shape[1])
        context = _context_length(model)
        new = int(self.generate_kwargs.get("max_new_tokens", 256))
        if context is not None and width + new > context:
            self.messages.pop()
            raise EntropyLensError(f"the conversation ({width} tokens) plus {new} new tokens exceeds the model's "
                                   f"context of {context} positions; /reset to start a new conversation")
        self.turn += 1
        inputs = inputs.to(next(model.parameters()).device)
        streamer = _Streamer(tokenizer, self.out, skip_prompt=True, skip_special_tokens=True)
        self.recorder.next_call(labels={"conversation": self.conversation, "turn": self.turn}, prompt_texts=[rendered])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        try:
            with _ctrl_c_stops(self.recorder):
                output = model.generate(**inputs, streamer=streamer, logits_processor=[self.recorder], pad_token_id=pad,
                                        **self.generate_kwargs)
        except KeyboardInterrupt:
            self.messages.pop()
            raise
        answer = tokenizer.decode(output[0, width:], skip_special_tokens=True)
        record = self.recorder.last_records[0]
        interrupted = not record.complete
        if interrupted:
            print(" [stopped]", file=self.out, flush=True)
        # A plain transcript's continuation often writes the next "User:" line itself: keep the reply only.
        self.messages.append({"role": "assistant", "content": answer.split("\nUser:")[0].strip() if self.plain
                              else answer.strip()})
        return Turn(answer, interrupted, record.index)


class _Streamer:
    """transformers' ``TextStreamer``, writing to a chosen stream instead of ``print``."""

    def __new__(cls, tokenizer: Any, out: TextIO, **kwargs: Any) -> Any:
        from transformers import TextStreamer

        class Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                out.write(text + ("\n" if stream_end else ""))
                out.flush()

        return Streamer(tokenizer, **kwargs)


@contextlib.contextmanager
def _ctrl_c_stops(recorder: Any) -> Iterator[None]:
    """While a reply runs, the first Ctrl-C asks the recorder to stop at the next token; a second one interrupts."""
    if not _main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if recorder.stopping:
            raise KeyboardInterrupt
        recorder.stop()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _context_length(model: Any) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def run_chat(session: ChatSession, read: Callable[[str], str] = input, out: TextIO | None = None) -> int:
    """The read-reply loop; returns the number of replies recorded."""
    out = out or session.out
    replies = 0
    while True:
        try:
            line = read("you> ")
        except (EOFError, KeyboardInterrupt):
            print(file=out)
            return replies
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return replies
        if text == "/reset":
            session.reset()
            print("(new conversation)", file=out, flush=True)
            continue
        if text.startswith("/"):
            print(f"unknown command {text.split()[0]}; {HELP}", file=out, flush=True)
            continue
        print("model> ", end="", file=out, flush=True)
        try:
            session.reply(text)
        except EntropyLensError as exc:
            print(f"\n{exc}", file=out, flush=True)
            continue
        except KeyboardInterrupt:
            print(" [interrupted]", file=out, flush=True)
        replies += 1
