"""Prompt lists: read them from text or JSONL files, and record them into a trace, resumably.

Each prompt gets a key (a hash of its text and labels); recording skips prompts whose key
is already in the trace, so re-running an interrupted ``entropylens record`` continues
where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import EntropyLensError
from .trace.schema import label_texts

__all__ = ["Prompt", "read_prompts", "record_prompts", "read_text", "read_lines"]


@dataclass(frozen=True)
class Prompt:
    """A prompt and its labels; ``key`` identifies it in a trace for resuming."""

    text: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        payload = json.dumps([self.text, sorted(self.labels.items())], ensure_ascii=False)
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


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

    A file is JSONL when its name ends in ``.jsonl`` or its first non-blank line starts with
    ``{``. Blank lines are skipped. Problems name the file and line.
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
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise EntropyLensError(f'{path} line {number}: expected {{"prompt": "...", "labels": {{...}}}}')
            text, labels = obj["prompt"], obj.get("labels", {})
            if not isinstance(labels, dict):
                raise EntropyLensError(f"{path} line {number}: 'labels' must be an object of key/value pairs")
        else:
            text, labels = line, {}
        if not text.strip():
            raise EntropyLensError(f"{path} line {number}: empty prompt")
        try:
            labels = {**(extra_labels or {}), **label_texts(labels)}
        except ValueError as exc:
            raise EntropyLensError(f"{path} line {number}: {exc}") from None
        prompts.append(Prompt(text, labels))
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
    **generate_kwargs: Any,
) -> tuple[int, int]:
    """Record every prompt not yet in ``path``; returns ``(recorded, skipped)``.

    Prompts are batched with left padding; each batch is committed to the file as soon
    as its ``generate`` call returns.
    """
    from tqdm.auto import tqdm

    from .trace import Trace

    if batch_size < 1:
        raise EntropyLensError(f"batch_size must be at least 1, got {batch_size}")
    if lens.tokenizer is None:
        raise EntropyLensError("recording text prompts needs a tokenizer: EntropyLens(model, tokenizer)")
    done: set[str] = set()
    if Path(path).exists():
        with Trace.open(path) as trace:
            done = set(trace.keys)
    todo = [p for p in prompts if p.key not in done]
    tokenizer, model = lens.tokenizer, lens.model
    device = next(model.parameters()).device
    with lens.record(path) as rec, tqdm(total=len(todo), disable=not progress, unit="prompt") as bar:
        for batch in _batches(todo, batch_size):
            inputs = tokenizer([p.text for p in batch], return_tensors="pt", padding=True).to(device)
            if inputs["input_ids"].shape[1] == 0:
                raise EntropyLensError("a prompt tokenized to no tokens; check the tokenizer")
            rec.next_call(labels=[p.labels for p in batch], keys=[p.key for p in batch])
            model.generate(**inputs, logits_processor=[rec], pad_token_id=tokenizer.pad_token_id, **generate_kwargs)
            bar.update(len(batch))
    return len(todo), len(prompts) - len(todo)


def _batches(items: Sequence[Prompt], size: int) -> Iterable[Sequence[Prompt]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
