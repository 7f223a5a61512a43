"""Teacher-forced forward passes over fixed texts: multiple-choice accuracy, next-token accuracy,
and the entropy profile of the model on the same texts.

These are what the layer-skipping experiment measures a model with; they run any causal LM
(plain ``model(input_ids, attention_mask)`` calls, right padding, no generation).

Multiple-choice files are JSONL, one question per line::

    {"question": "The capital of France is", "choices": ["Paris", "Rome", "Berlin"], "answer": 0}

Each choice is appended to the question after one space (none if the question ends with, or
the choice starts with, whitespace) and scored by the summed log-likelihood of its tokens
given the question; the length-normalised score divides that sum by the choice's token count.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..lens.capture import ResidualCapture
from ..lens.logit import LogitLens
from ..lens.metrics import entropy, renyi_entropy
from ..recording.prompts import read_lines
from ._support import AnalysisError

__all__ = [
    "MultipleChoiceItem",
    "read_multiple_choice",
    "MultipleChoiceScore",
    "choice_log_likelihoods",
    "multiple_choice_accuracy",
    "NextTokenScore",
    "next_token_accuracy",
    "text_profiles",
]


@dataclass(frozen=True)
class MultipleChoiceItem:
    question: str
    choices: tuple[str, ...]
    answer: int

    @property
    def answer_text(self) -> str:
        """The question followed by its correct choice, as scored."""
        return self.question + _separator(self.question, self.choices[self.answer]) + self.choices[self.answer]


def read_multiple_choice(path: str | os.PathLike) -> list[MultipleChoiceItem]:
    """Read a multiple-choice JSONL file; problems name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"{path}: no such multiple-choice file")
    items = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AnalysisError(f"{where}: not valid JSON ({exc.msg})") from None
        if not (isinstance(obj, dict) and isinstance(obj.get("question"), str) and isinstance(obj.get("choices"), list)):
            raise AnalysisError(f'{where}: expected {{"question": "...", "choices": ["...", ...], "answer": index}}')
        choices = obj["choices"]
        if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise AnalysisError(f"{where}: 'choices' must be at least two non-empty strings")
        answer = obj.get("answer")
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
            raise AnalysisError(f"{where}: 'answer' must be the index of the correct choice (0 to {len(choices) - 1})")
        items.append(MultipleChoiceItem(obj["question"], tuple(choices), answer))
    if not items:
        raise AnalysisError(f"{path}: contains no questions")
    return items


def _separator(question: str, choice: str) -> str:
    return "" if (not question or question[-1].isspace() or choice[0].isspace()) else " "


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def _batches(sequences: Sequence[list[int]], batch_size: int, pad_id: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded batches ``(input_ids, attention_mask)`` of consecutive sequences, in order."""
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        yield ids, mask


@torch.no_grad()
def _token_log_likelihoods(model: torch.nn.Module, sequences: Sequence[list[int]], pad_id: int, batch_size: int) -> list[np.ndarray]:
    """Per sequence ``[2, n - 1]``: log p(token t | tokens < t) for t = 1..n-1, and 1.0 where t was the argmax."""
    device = _device(model)
    out: list[np.ndarray] = []
    for ids, mask in _batches(sequences, batch_size, pad_id):
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        log_p = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = ids[:, 1:].to(device)
        chosen = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        correct = log_p.argmax(-1) == targets
        for row in range(ids.shape[0]):
            n = int(mask[row].sum()) - 1
            out.append(np.stack([chosen[row, :n].cpu().numpy(), correct[row, :n].cpu().numpy()]).astype(np.float64))
    return out


@dataclass(frozen=True)
class MultipleChoiceScore:
    """Fraction of questions whose correct choice scores highest, by summed and by per-token mean log-likelihood."""

    accuracy: float
    accuracy_norm: float
    n_items: int


def choice_log_likelihoods(
    model: torch.nn.Module, tokenizer: Any, items: Sequence[MultipleChoiceItem], *, batch_size: int = 32
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per item ``(summed log-likelihood [choices], token count [choices])`` of each choice given the question."""
    sequences, spans = [], []
    for item in items:
        context = tokenizer(item.question)["input_ids"]
        for choice in item.choices:
            continuation = tokenizer(_separator(item.question, choice) + choice, add_special_tokens=False)["input_ids"]
            if not continuation:
                raise AnalysisError(f"choice {choice!r} of {item.question[:40]!r} tokenizes to nothing")
            if not context:
                raise AnalysisError(f"question {item.question[:40]!r} tokenizes to nothing; the first choice token needs a context")
            sequences.append(list(context) + list(continuation))
            spans.append(len(continuation))
    scores = _token_log_likelihoods(model, sequences, _pad_id(tokenizer), batch_size)
    sums = [float(s[0, -n:].sum()) for s, n in zip(scores, spans)]
    out, at = [], 0
    for item in items:
        k = len(item.choices)
        out.append((np.array(sums[at : at + k]), np.array(spans[at : at + k], dtype=np.float64)))
        at += k
    return out


def multiple_choice_accuracy(
    model: torch.nn.Module, tokenizer: Any, items: Sequence[MultipleChoiceItem], *, batch_size: int = 32
) -> MultipleChoiceScore:
    """Accuracy on ``items``; ties count as wrong unless the correct choice is the first maximum."""
    scored = choice_log_likelihoods(model, tokenizer, items, batch_size=batch_size)
    hits = [int(np.argmax(total) == item.answer) for (total, _), item in zip(scored, items)]
    hits_norm = [int(np.argmax(total / count) == item.answer) for (total, count), item in zip(scored, items)]
    return MultipleChoiceScore(float(np.mean(hits)), float(np.mean(hits_norm)), len(items))


def _text_chunks(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[int]]:
    """Each text's tokens cut into pieces of at most ``max_length`` (pieces shorter than 2 dropped),
    and the index of the text each piece came from."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    chunks, owners = [], []
    for index, text in enumerate(texts):
        ids = list(tokenizer(text)["input_ids"])
        for start in range(0, len(ids), max_length):
            if len(ids[start : start + max_length]) >= 2:
                chunks.append(ids[start : start + max_length])
                owners.append(index)
    if not chunks:
        raise AnalysisError("the evaluation texts hold no sequence of at least 2 tokens")
    return chunks, owners


@dataclass(frozen=True)
class NextTokenScore:
    """Teacher-forced next-token accuracy (top-1) and mean negative log-likelihood (nats/token)."""

    accuracy: float
    nll: float
    n_tokens: int


def next_token_accuracy(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 16
) -> NextTokenScore:
    """How often the model's top-1 prediction is the next token of ``texts`` (cut into ``max_length`` pieces)."""
    chunks, _ = _text_chunks(tokenizer, texts, max_length)
    scores = np.concatenate(_token_log_likelihoods(model, chunks, _pad_id(tokenizer), batch_size), axis=1)
    return NextTokenScore(accuracy=float(scores[1].mean()), nll=float(-scores[0].mean()), n_tokens=int(scores.shape[1]))


@torch.no_grad()
def text_profiles(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    alpha: float | None = None,
    max_length: int = 128,
    batch_size: int = 16,
    per_text: bool = False,
    lens: LogitLens | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Token profiles ``[tokens, L]`` of the model reading ``texts`` (every position, no generation).

    The same logit lens as the recorder, applied to a teacher-forced forward pass: cheap, and
    what a skipping experiment ranks layers by when no trace is given. ``per_text=True`` returns
    one ``[tokens_i, L]`` array per text instead (empty for a text of fewer than 2 tokens).
    """
    lens = lens or LogitLens.from_model(model)
    device = _device(model)
    chunks, owners = _text_chunks(tokenizer, texts, max_length)
    rows = []
    with ResidualCapture(lens.layers) as capture:
        for ids, mask in _batches(chunks, batch_size, _pad_id(tokenizer)):
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
            keep = mask.bool().to(device)
            per_layer = []
            for residual in capture.residuals:
                logits = lens.project(residual[keep])
                per_layer.append(entropy(logits) if alpha is None or float(alpha) == 1.0 else renyi_entropy(logits, float(alpha)))
            values = torch.stack(per_layer, dim=-1).cpu().numpy().astype(np.float64)
            rows += np.split(values, np.cumsum(mask.sum(dim=1).tolist())[:-1])
    if not per_text:
        return np.concatenate(rows, axis=0)
    grouped: list[list[np.ndarray]] = [[] for _ in texts]
    for owner, piece in zip(owners, rows):
        grouped[owner].append(piece)
    return [np.concatenate(g) if g else np.zeros((0, lens.num_layers)) for g in grouped]
