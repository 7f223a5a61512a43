"""Prompt lists: read them from text or JSONL files, and record them into a trace, resumably.

Each prompt gets a key (a hash of its text or chat messages, and labels); recording skips
prompts whose key is already in the trace, so re-running an interrupted ``entropylens
record`` continues where it stopped. Chat prompts are rendered through the tokenizer's chat
template, and the rendered text is what gets tokenized and stored.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import EntropyLensError
from ..trace.schema import label_texts

__all__ = ["Prompt", "read_prompts", "record_prompts", "tokenize_prompts", "read_text", "read_lines"]

Message = Mapping[str, str]


@dataclass(frozen=True)
class Prompt:
    """A prompt and its labels; ``key`` identifies it in a trace for resuming.

    A chat prompt carries ``messages`` (``{"role": ..., "content": ...}``, optionally a
    system message first); its ``text`` is then the last message's content, for display.
    """

    text: str
    labels: Mapping[str, str] = field(default_factory=dict)
    messages: tuple[Message, ...] = ()

    @property
    def key(self) -> str:
        content: Any = self.text if not self.messages else [dict(m) for m in self.messages]
        payload = json.dumps([content, sorted(self.labels.items())], ensure_ascii=False)
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]

    @classmethod
    def from_messages(cls, messages: Sequence[Message], labels: Mapping[str, str] | None = None) -> "Prompt":
        """A chat prompt from ``[{"role": ..., "content": ...}, ...]``."""
        if not messages:
            raise EntropyLensError("a chat prompt needs at least one message")
        return cls(messages[-1]["content"], dict(labels or {}), tuple(dict(m) for m in messages))

    def as_chat(self) -> "Prompt":
        """This prompt as a chat: plain text becomes one user message."""
        if self.messages:
            return self
        return Prompt(self.text, self.labels, ({"role": "user", "content": self.text},))


def read_text(path: Path) -> str:
    """A UTF-8 text file; anything else is one :class:`EntropyLensError` naming the first bad byte."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EntropyLensError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text or JSONL file, split at "\n" only (a "\r" before it is dropped).

    ``str.splitlines()`` would also split at U+2028, U+0085 and other separators, which JSON
    strings may hold raw (``json.dumps(..., ensure_ascii=False)`` writes them so).
    """
    return [line.removesuffix("\r") for line in read_text(path).split("\n")]


def read_prompts(path: str | os.PathLike, extra_labels: Mapping[str, str] | None = None) -> list[Prompt]:
    """Read prompts: JSONL (``{"prompt": ..., "labels": {...}}`` per line) or plain text, one per line.

    A JSONL line may give ``"messages": [{"role": ..., "content": ...}, ...]`` instead of
    ``"prompt"``: a chat prompt. A file is JSONL when its name ends in ``.jsonl`` or its first
    non-blank line starts with ``{``. Blank lines are skipped. Problems name the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise EntropyLensError(f"{path}: no such prompts file")
    lines = read_lines(path)
    first = next((ln for ln in lines if ln.strip()), "")
    is_jsonl = path.suffix == ".jsonl" or first.lstrip().startswith("{")
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if is_jsonl:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EntropyLensError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
            messages = _messages(obj.get("messages"), f"{path} line {number}") if isinstance(obj, dict) else ()
            if messages and "prompt" in obj:
                raise EntropyLensError(f"{path} line {number}: give either 'prompt' or 'messages', not both")
            if not messages and (not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str)):
                raise EntropyLensError(f'{path} line {number}: expected {{"prompt": "...", "labels": {{...}}}}'
                                       ' or {"messages": [{"role": "user", "content": "..."}], ...}')
            text, labels = messages[-1]["content"] if messages else obj["prompt"], obj.get("labels", {})
            if not isinstance(labels, dict):
                raise EntropyLensError(f"{path} line {number}: 'labels' must be an object of key/value pairs")
        else:
            text, labels, messages = line, {}, ()
        if not text.strip():
            raise EntropyLensError(f"{path} line {number}: empty prompt")
        try:
            labels = {**(extra_labels or {}), **label_texts(labels)}
        except ValueError as exc:
            raise EntropyLensError(f"{path} line {number}: {exc}") from None
        prompts.append(Prompt(text, labels, messages))
    if not prompts:
        raise EntropyLensError(f"{path}: contains no prompts")
    return prompts


def record_prompts(
    lens: Any,
    prompts: Sequence[Prompt],
    path: str | os.PathLike,
    *,
    batch_size: int = 8,
    progress: bool = True,
    chat: bool = False,
    live: bool = False,
    live_interval: float = 1.0,
    **generate_kwargs: Any,
) -> tuple[int, int]:
    """Record every prompt not yet in ``path``; returns ``(recorded, skipped)``.

    Prompts are batched with left padding; each batch is committed to the file as soon
    as its ``generate`` call returns. With ``chat`` (implied when a prompt has ``messages``)
    every prompt is rendered through the tokenizer's chat template, see :func:`tokenize_prompts`.
    ``live`` writes each batch's rows while it is generated (``EntropyLens.record(live=True)``);
    a prompt whose sequence was left unfinished is not counted as recorded and is recorded
    again on the next run.
    """
    from tqdm.auto import tqdm

    from ..trace import Trace

    if batch_size < 1:
        raise EntropyLensError(f"batch_size must be at least 1, got {batch_size}")
    if lens.tokenizer is None:
        raise EntropyLensError("recording text prompts needs a tokenizer: EntropyLens(model, tokenizer)")
    chat = chat or any(p.messages for p in prompts)
    if chat:
        _require_chat_template(lens.tokenizer)
        prompts = [p.as_chat() for p in prompts]
    done: set[str] = set()
    if Path(path).exists():
        with Trace.open(path) as trace:
            done = set(trace.keys)
    todo = [p for p in prompts if p.key not in done]
    tokenizer, model = lens.tokenizer, lens.model
    device = next(model.parameters()).device
    with lens.record(path, live=live, live_interval=live_interval) as rec, tqdm(total=len(todo), disable=not progress, unit="prompt") as bar:
        for batch in _batches(todo, batch_size):
            inputs, texts = tokenize_prompts(tokenizer, batch, chat=chat)
            inputs = inputs.to(device)
            if inputs["input_ids"].shape[1] == 0:
                raise EntropyLensError("a prompt tokenized to no tokens; check the tokenizer")
            rec.next_call(labels=[p.labels for p in batch], keys=[p.key for p in batch],
                          prompt_texts=texts if chat else None)
            model.generate(**inputs, logits_processor=[rec], pad_token_id=tokenizer.pad_token_id, **generate_kwargs)
            bar.update(len(batch))
    return len(todo), len(prompts) - len(todo)


def tokenize_prompts(tokenizer: Any, prompts: Sequence[Prompt | str], *, chat: bool = False) -> tuple[Any, list[str]]:
    """``(inputs, texts)``: a left-padded batch for ``generate`` and the text each prompt became.

    With ``chat`` each prompt is rendered by ``tokenizer.apply_chat_template(...,
    add_generation_prompt=True)`` (plain text as one user message) and tokenized without
    adding special tokens again, so the ids equal the template's own tokenization (no double
    BOS). Without it, prompts are tokenized as plain text.
    """
    items = [Prompt(p) if isinstance(p, str) else p for p in prompts]
    if not chat:
        texts = [p.text for p in items]
        return tokenizer(texts, return_tensors="pt", padding=True), texts
    _require_chat_template(tokenizer)
    texts = [tokenizer.apply_chat_template([dict(m) for m in p.as_chat().messages], tokenize=False,
                                           add_generation_prompt=True) for p in items]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False), texts


def _require_chat_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "this model"
        raise EntropyLensError(f"{name}: the tokenizer has no chat template, so prompts cannot be rendered as chat; "
                               "use an instruct/chat model, or record plain prompts (no --chat, no 'messages')")


def _messages(value: Any, where: str) -> tuple[Message, ...]:
    """Validate a JSONL line's ``messages``: a non-empty list of ``{"role": str, "content": str}``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise EntropyLensError(f"{where}: 'messages' must be a non-empty list of {{\"role\": ..., \"content\": ...}}")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str) or set(message) - {"role", "content"}:
            raise EntropyLensError(f'{where}: messages[{i}] must be {{"role": "...", "content": "..."}} (strings)')
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def _batches(items: Sequence[Prompt], size: int) -> Iterable[Sequence[Prompt]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
