"""Record the entropy lens of every token during an ordinary ``model.generate()`` call.

:class:`EntropyLens` is the user's entry point; :meth:`EntropyLens.record` yields a
:class:`TraceRecorder`, a ``LogitsProcessor`` that leaves the scores untouched and turns
each generation step into rows. The residual stream comes from forward hooks
(:mod:`.capture`) with the KV cache on, so the forward pass is never re-run.

A row's target (the token that came next) is known only at the following step, so each
step's residuals are kept and resolved one step later, in a single pass over the
vocabulary that yields entropy, top-k and the target's probability and rank together.
The last step is resolved from the sequences ``generate`` returns, which the recorder
sees because, inside ``record()``, ``model.generate`` is wrapped (and restored on exit).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .capture import ResidualCapture
from .errors import EntropyLensError, UnsupportedGenerationError
from .lens import LogitLens
from .metrics import entropy as shannon_entropy
from .trace import SequenceRecord, TraceMetadata, TraceWriter
from .trace.schema import label_texts

__all__ = ["EntropyLens", "TraceRecorder"]

Labels = Mapping[str, Any]


class EntropyLens:
    """Entropy-Lens for a Hugging Face causal LM.

    >>> lens = EntropyLens(model, tokenizer, top_k=10)
    >>> with lens.record("run.h5", labels={"task": "qa"}) as rec:
    ...     out = model.generate(**inputs, max_new_tokens=64, logits_processor=[rec])
    >>> out, records = lens.generate(**inputs, max_new_tokens=64, trace="run.h5")

    ``renyi_alphas`` adds one Rényi-entropy profile per order (0, 2, ``math.inf``...).
    ``record_prompt`` also records the prompt positions (computed in the prefill pass).
    ``max_logits`` bounds the float32 logits held at once (default 2**22, 16 MiB; the pass
    over them needs about twice that), whatever the batch, depth and vocabulary.
    ``layers`` / ``final_norm`` / ``unembedding`` override the lens resolution for
    models it cannot resolve on its own.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any = None,
        *,
        top_k: int = 10,
        renyi_alphas: Sequence[float] = (),
        record_prompt: bool = True,
        max_logits: int = 1 << 22,
        model_name: str | None = None,
        layers: torch.nn.ModuleList | None = None,
        final_norm: torch.nn.Module | None = None,
        unembedding: torch.nn.Module | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.lens = LogitLens.from_model(model, layers=layers, final_norm=final_norm, unembedding=unembedding)
        if not 1 <= top_k <= self.lens.vocab_size:
            raise ValueError(f"top_k must be between 1 and the vocabulary size {self.lens.vocab_size}, got {top_k}")
        self.top_k = int(top_k)
        self.renyi_alphas = tuple(float(a) for a in renyi_alphas)
        if any(a < 0 or math.isnan(a) for a in self.renyi_alphas):
            raise ValueError(f"Rényi orders must be >= 0 (math.inf allowed), got {list(renyi_alphas)}")
        self.record_prompt = record_prompt
        self.max_logits = int(max_logits)
        self.model_name = model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__

    # -- trace metadata
    def metadata(self) -> TraceMetadata:
        cfg = self.model.config
        return TraceMetadata(
            model_name=self.model_name,
            num_layers=self.lens.num_layers,
            layer_names=self.lens.layer_names,
            vocab_size=self.lens.vocab_size,
            top_k=self.top_k,
            renyi_alphas=self.renyi_alphas,
            tokenizer_name=getattr(self.tokenizer, "name_or_path", "") or "",
            model_config=cfg.to_diff_dict() if hasattr(cfg, "to_diff_dict") else {},
        )

    def vocabulary(self) -> list[str]:
        """Decoded text of every token id the lens can predict (stored once per trace file)."""
        if self.tokenizer is None:
            return []
        n = min(len(self.tokenizer), self.lens.vocab_size)
        texts = list(_token_texts(self.tokenizer, list(range(n))))
        return texts + [""] * (self.lens.vocab_size - n)

    # -- recording
    @contextlib.contextmanager
    def record(self, path: str | os.PathLike | None = None, *, labels: Labels | None = None) -> Iterator["TraceRecorder"]:
        """Record every ``model.generate`` call in the block; write to ``path`` if given.

        Each finished call is written and flushed at once, so an interrupted run keeps
        every call completed before it. ``labels`` are attached to every sequence.
        """
        labels = label_texts(labels or {})  # refused before the file is opened
        writer = None
        if path is not None:
            vocabulary = None if Path(path).exists() else self.vocabulary()
            writer = TraceWriter(path, self.metadata(), vocabulary=vocabulary)
        recorder = TraceRecorder(self, writer, dict(labels or {}))
        model = self.model
        had_own_generate = "generate" in model.__dict__
        original = model.generate

        @functools.wraps(original)
        def generate(*args: Any, **kwargs: Any) -> Any:
            return recorder._generate(original, args, kwargs)

        model.generate = generate
        try:
            with ResidualCapture(self.lens.layers) as capture:
                recorder._capture = capture
                yield recorder
        finally:
            recorder._capture = None
            recorder._workspace = None
            if had_own_generate:
                model.generate = original
            else:
                del model.generate
            if writer is not None:
                writer.close()

    def generate(
        self,
        *args: Any,
        trace: str | os.PathLike | None = None,
        labels: Labels | Sequence[Labels] | None = None,
        keys: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, list[SequenceRecord]]:
        """``model.generate(*args, **kwargs)`` recorded; returns ``(output, records)``.

        ``labels`` is one mapping for the whole batch or one per prompt; ``keys`` optional
        ids per prompt (used by the CLI to resume). Records are also appended to ``trace``.
        """
        with self.record(trace) as rec:
            rec.next_call(labels=labels, keys=keys)
            output = self.model.generate(*args, **kwargs)
            return output, rec.last_records


@dataclass
class _CallState:
    """What one ``generate`` call has accumulated so far, per batch row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    eos_ids: frozenset[int]
    row_labels: list[dict[str, str]]
    row_keys: list[str]
    run: int
    row_prompt_texts: list[str] | None = None  # as given (e.g. a rendered chat template); else decoded
    step: int = 0
    finished: list[bool] = field(default_factory=list)
    generated: list[list[int]] = field(default_factory=list)
    stats: list[list[dict[str, np.ndarray]]] = field(default_factory=list)  # per row: list of row-blocks
    output_entropy: list[list[float]] = field(default_factory=list)
    pending: torch.Tensor | None = None  # [batch, L, d] residuals awaiting their target
    pending_rows: list[int] = field(default_factory=list)
    # Rows whose target is known, waiting to be resolved together in one block.
    queue_owner: list[torch.Tensor] = field(default_factory=list)  # batch row of each queued row
    queue_residuals: list[torch.Tensor] = field(default_factory=list)  # [n, L, d]
    queue_targets: list[torch.Tensor] = field(default_factory=list)  # [n]
    queued: int = 0


class TraceRecorder(LogitsProcessor):
    r"""A ``LogitsProcessor`` that records the entropy lens of every step and returns ``scores`` unchanged.

    Obtain it from :meth:`EntropyLens.record`; pass it to ``generate`` as
    ``logits_processor=[rec]`` (inside the block it is added for you if you forget).
    ``rec.last_records`` holds the sequences of the latest call; ``rec.records`` all of the
    block's sequences when recording to memory (with a trace file, read them from the file).
    It sees ``scores`` after generate's own logits processors (repetition penalty, ...) and
    before the sampling warpers (temperature, top-k, top-p), which transformers applies
    after custom processors; ``output_entropy`` is the entropy of those scores: the
    model's own next-token distribution as generate shaped it.

    Supported: greedy and sampling, batches with left padding, ``num_return_sequences``,
    several ``generate`` calls per block. Refused before generation starts: beam search,
    assisted / prompt-lookup decoding, contrastive search, DoLa, chunked prefill.
    """

    def __init__(self, lens: EntropyLens, writer: TraceWriter | None, labels: dict[str, Any]):
        self.lens = lens
        self.writer = writer
        self.labels = label_texts(labels)
        # Kept in memory only without a trace file; with one, the file holds them.
        self.records: list[SequenceRecord] = []
        self.last_records: list[SequenceRecord] = []
        self._capture: ResidualCapture | None = None
        self._workspace: torch.Tensor | None = None  # reused by every block of the recording
        self._state: _CallState | None = None
        self._next_labels: Labels | Sequence[Labels] | None = None
        self._next_keys: Sequence[str] | None = None
        self._next_prompt_texts: Sequence[str] | None = None

    def next_call(self, *, labels: Labels | Sequence[Labels] | None = None, keys: Sequence[str] | None = None,
                  prompt_texts: Sequence[str] | None = None) -> None:
        """Labels (one mapping, or one per prompt), resume keys and prompt texts for the next ``generate`` call only.

        ``prompt_texts`` replaces the prompt text decoded without special tokens (e.g. to keep
        a rendered chat template whole).
        """
        self._next_labels, self._next_keys, self._next_prompt_texts = labels, keys, prompt_texts

    # ------------------------------------------------------------------ generate wrapper
    def _generate(self, original: Any, args: tuple, kwargs: dict) -> Any:
        model = self.lens.model
        _refuse_unsupported_modes(model, kwargs)
        input_ids = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
        if isinstance(input_ids, (str, list, tuple)):
            raise UnsupportedGenerationError(
                "generate needs token ids, not text or a list: tokenize first, "
                "model.generate(**tokenizer(texts, return_tensors='pt', padding=True))"
            )
        if isinstance(input_ids, torch.Tensor) and input_ids.dim() != 2:
            raise UnsupportedGenerationError(
                f"input_ids must be 2-D [batch, tokens], got shape {tuple(input_ids.shape)}; "
                "add a batch axis with input_ids[None] or tokenize with return_tensors='pt'"
            )
        if not isinstance(input_ids, torch.Tensor):
            raise UnsupportedGenerationError(
                "the recorder needs token ids: call generate(input_ids=...) (or **tokenizer(...)), "
                "not inputs_embeds alone"
            )
        if input_ids.shape[1] == 0:
            raise UnsupportedGenerationError("empty prompt: give at least one token (e.g. the BOS token)")
        mask = self._attention_mask(input_ids, kwargs)
        batch = input_ids.shape[0]
        n_return = int(_setting(model, kwargs, "num_return_sequences", 1) or 1)
        labels, keys, texts = self._call_labels(batch), self._call_keys(batch), self._next_prompt_texts
        self._next_labels = self._next_keys = self._next_prompt_texts = None
        if texts is not None and len(texts) != batch:
            raise ValueError(f"got {len(texts)} prompt texts for a batch of {batch} prompts")
        settings = _generation_settings(model, kwargs, batch)
        run = self.writer.begin_run(settings) if self.writer is not None else 0
        self._state = _CallState(
            input_ids=input_ids.repeat_interleave(n_return, 0),
            attention_mask=mask.repeat_interleave(n_return, 0),
            eos_ids=_eos_ids(model, kwargs),
            row_labels=[lab for lab in labels for _ in range(n_return)],
            row_keys=[key for key in keys for _ in range(n_return)],
            run=run,
            row_prompt_texts=None if texts is None else [t for t in texts for _ in range(n_return)],
        )
        processors = kwargs.get("logits_processor")
        processors = LogitsProcessorList(list(processors) if processors is not None else [])
        if not any(p is self for p in processors):
            processors.append(self)
        kwargs["logits_processor"] = processors
        try:
            output = original(*args, **kwargs)
            records = self._finish(output)
        finally:
            self._state = None
        if self.writer is not None:
            indices = self.writer.write(records)
            records = [replace(r, index=i) for r, i in zip(records, indices)]
        else:
            self.records.extend(records)
        self.last_records = records
        return output

    def _attention_mask(self, input_ids: torch.Tensor, kwargs: dict) -> torch.Tensor:
        mask = kwargs.get("attention_mask")
        if mask is None:
            pad = _setting(self.lens.model, kwargs, "pad_token_id", None)
            if pad is not None and bool((input_ids == pad).any()):
                mask = (input_ids != pad).long()
            else:
                mask = torch.ones_like(input_ids)
        if bool((mask[:, -1] == 0).any()):
            raise UnsupportedGenerationError(
                "the batch is right-padded; decoder-only generation needs left padding: "
                "set tokenizer.padding_side = 'left' before tokenizing"
            )
        if bool((mask.sum(-1) == 0).any()):
            raise UnsupportedGenerationError("a prompt in the batch is empty (all padding); remove it or give it a token")
        return mask

    def _call_labels(self, batch: int) -> list[dict[str, str]]:
        given = self._next_labels
        if given is None or isinstance(given, Mapping):
            per_row = [dict(given or {})] * batch
        else:
            per_row = [dict(g) for g in given]
            if len(per_row) != batch:
                raise ValueError(f"got {len(per_row)} label mappings for a batch of {batch} prompts")
        return [{**self.labels, **label_texts(lab)} for lab in per_row]

    def _call_keys(self, batch: int) -> list[str]:
        keys = list(self._next_keys) if self._next_keys is not None else [""] * batch
        if len(keys) != batch:
            raise ValueError(f"got {len(keys)} keys for a batch of {batch} prompts")
        return keys

    # ------------------------------------------------------------------ per step
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        state = self._state
        if state is None and self._capture is not None:
            raise EntropyLensError(
                "TraceRecorder called by the generate of a model it does not record: inside "
                f"`lens.record(...)` call generate on the lens's own model ({type(self.lens.model).__name__})"
            )
        if state is None or self._capture is None:
            raise EntropyLensError(
                "TraceRecorder called outside its recording: call model.generate inside "
                "`with lens.record(...) as rec:` (or use lens.generate)"
            )
        if not self._capture.complete():
            raise EntropyLensError("the forward pass did not reach every decoder layer; cannot record this step")
        residuals = torch.stack([r.to(self.lens.lens.device) for r in self._capture.residuals], dim=2)
        # residuals: [batch, positions, L, d]
        batch = input_ids.shape[0]
        if residuals.shape[0] != batch or batch != state.input_ids.shape[0]:
            raise UnsupportedGenerationError(
                f"the model ran a batch of {residuals.shape[0]} for {batch} sequences "
                "(beam search or a custom generation loop?); the recorder supports greedy and sampling"
            )
        if state.step == 0:
            self._start(state, residuals)
        else:
            self._resolve_pending(state, input_ids[:, -1])
        state.pending = residuals[:, -1]
        state.pending_rows = [b for b in range(batch) if not state.finished[b]]
        out_entropy = shannon_entropy(scores).cpu().numpy()
        for b in state.pending_rows:
            state.output_entropy[b].append(float(out_entropy[b]))
        state.step += 1
        return scores

    def _start(self, state: _CallState, residuals: torch.Tensor) -> None:
        batch, positions = residuals.shape[:2]
        state.finished = [False] * batch
        state.generated = [[] for _ in range(batch)]
        state.stats = [[] for _ in range(batch)]
        state.output_entropy = [[] for _ in range(batch)]
        if not self.lens.record_prompt or positions < 2:
            return
        # Prompt rows: the last `positions` input tokens were computed; each but the last
        # has its target (the next prompt token) already.
        ids = state.input_ids[:, -positions:].to(residuals.device)
        mask = state.attention_mask[:, -positions:].to(residuals.device).bool()
        valid = mask[:, :-1] & mask[:, 1:]
        rows_b, rows_p = valid.nonzero(as_tuple=True)
        self._enqueue(state, rows_b, residuals[rows_b, rows_p], ids[rows_b, rows_p + 1])
        for b, n in enumerate(valid.sum(-1).tolist()):
            state.output_entropy[b].extend([math.nan] * n)

    def _resolve_pending(self, state: _CallState, new_tokens: torch.Tensor) -> None:
        rows = state.pending_rows
        if not rows:
            return
        targets = new_tokens[rows].to(state.pending.device)
        owners = torch.tensor(rows, device=state.pending.device)
        self._enqueue(state, owners, state.pending[rows], targets)
        for b, token in zip(rows, targets.tolist()):
            state.generated[b].append(token)
            if token in state.eos_ids:
                state.finished[b] = True

    def _enqueue(self, state: _CallState, owners: torch.Tensor, residuals: torch.Tensor, targets: torch.Tensor) -> None:
        """Queue rows with known targets; resolve them once a block's worth has gathered.

        One large product per block reads the unembedding once for many steps and keeps
        the matrix multiply efficient (a product with few rows is bound by reading weights).
        """
        block = self.lens.lens.block_shape(self.lens.max_logits)[0]
        rows = residuals.shape[0] * residuals.shape[1]
        if state.queued and state.queued + rows > block:
            # Flush first: a block that overflows by a few rows would cost a second, thin
            # product that reads the whole unembedding for those few rows.
            self._flush(state)
        state.queue_owner.append(owners)
        state.queue_residuals.append(residuals)
        state.queue_targets.append(targets)
        state.queued += rows
        if state.queued >= block:
            self._flush(state)

    def _flush(self, state: _CallState) -> None:
        if not state.queued:
            return
        owners = torch.cat(state.queue_owner).tolist()
        stats = self._statistics(torch.cat(state.queue_residuals), torch.cat(state.queue_targets))
        state.queue_owner, state.queue_residuals, state.queue_targets, state.queued = [], [], [], 0
        if self.lens.lens.device.type == "cpu":
            _return_freed_heap_memory()
        order = np.argsort(owners, kind="stable")  # group by sequence, keeping each one's row order
        sorted_owners = np.asarray(owners)[order]
        for b in np.unique(sorted_owners):
            picked = order[sorted_owners == b]
            state.stats[int(b)].append({k: v[picked] for k, v in stats.items()})

    def _statistics(self, residuals: torch.Tensor, targets: torch.Tensor) -> dict[str, np.ndarray]:
        """Lens statistics for residuals ``[R, L, d]`` with one target per row; numpy ``[R, L, ...]``."""
        n, L, d = residuals.shape
        lens = self.lens
        if self._workspace is None:
            self._workspace = lens.lens.new_workspace(lens.max_logits)
        s = lens.lens.statistics(
            residuals.reshape(n * L, d),
            top_k=lens.top_k,
            targets=targets.repeat_interleave(L),
            alphas=lens.renyi_alphas,
            max_logits=lens.max_logits,
            workspace=self._workspace,
        )
        out = {
            "entropy": s.entropy.reshape(n, L),
            "topk_ids": s.topk_ids.reshape(n, L, -1),
            "topk_probs": s.topk_probs.reshape(n, L, -1),
            "target_prob": s.target_prob.reshape(n, L),
            "target_rank": s.target_rank.reshape(n, L),
            "renyi": s.renyi.reshape(n, L, -1).transpose(1, 2),
        }
        return {k: v.cpu().numpy() for k, v in out.items()}

    # ------------------------------------------------------------------ end of a call
    def _finish(self, output: Any) -> list[SequenceRecord]:
        state = self._state
        sequences = output if isinstance(output, torch.Tensor) else getattr(output, "sequences", None)
        if not isinstance(sequences, torch.Tensor):
            raise EntropyLensError("generate returned no token sequences; cannot finish the recording")
        if state.step == 0:
            return []
        prompt_width = state.input_ids.shape[1]
        if sequences.shape[1] != prompt_width + state.step:
            raise UnsupportedGenerationError(
                f"generate returned {sequences.shape[1] - prompt_width} new tokens for {state.step} recorded steps"
            )
        self._resolve_pending(state, sequences[:, -1])
        self._flush(state)
        tokenizer = self.lens.tokenizer
        records = []
        for b in range(state.input_ids.shape[0]):
            prompt = state.input_ids[b][state.attention_mask[b].bool()].tolist()
            token_ids = prompt + state.generated[b]
            blocks = state.stats[b]
            arrays = {k: np.concatenate([blk[k] for blk in blocks]) for k in blocks[0]}
            records.append(
                SequenceRecord(
                    token_ids=np.asarray(token_ids, dtype=np.int64),
                    token_texts=_token_texts(tokenizer, token_ids),
                    prompt_length=len(prompt),
                    entropy=arrays["entropy"],
                    topk_ids=arrays["topk_ids"],
                    topk_probs=arrays["topk_probs"],
                    target_prob=arrays["target_prob"],
                    target_rank=arrays["target_rank"],
                    output_entropy=np.asarray(state.output_entropy[b], dtype=np.float32),
                    renyi=arrays["renyi"],
                    renyi_alphas=self.lens.renyi_alphas,
                    labels=state.row_labels[b],
                    prompt_text=_decode(tokenizer, prompt) if state.row_prompt_texts is None else state.row_prompt_texts[b],
                    key=state.row_keys[b],
                    run=state.run,
                )
            )
        return records


# ---------------------------------------------------------------------- helpers


def _setting(model: Any, kwargs: dict, name: str, default: Any) -> Any:
    """The effective generation setting: explicit kwarg, then generation_config, then the model's."""
    if name in kwargs:
        return kwargs[name]
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    value = getattr(config, name, None)
    return default if value is None else value


def _refuse_unsupported_modes(model: Any, kwargs: dict) -> None:
    def refuse(what: str) -> None:
        raise UnsupportedGenerationError(
            f"{what} is not supported by the entropy-lens recorder (it keeps or verifies several "
            "candidate continuations per step, so there is no single residual per generated token); "
            "use greedy decoding or sampling"
        )

    if int(_setting(model, kwargs, "num_beams", 1) or 1) > 1:
        refuse("beam search (num_beams > 1)")
    if int(_setting(model, kwargs, "num_beam_groups", 1) or 1) > 1:
        refuse("group beam search")
    for name in ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit"):
        if _setting(model, kwargs, name, None) is not None:
            refuse(f"assisted decoding ({name})")
    if _setting(model, kwargs, "penalty_alpha", None) not in (None, 0):
        refuse("contrastive search (penalty_alpha)")
    if _setting(model, kwargs, "dola_layers", None) is not None:
        refuse("DoLa decoding (dola_layers)")
    if _setting(model, kwargs, "prefill_chunk_size", None) is not None:
        refuse("chunked prefill (prefill_chunk_size)")
    if kwargs.get("custom_generate") is not None:
        refuse("a custom generation loop (custom_generate)")


def _eos_ids(model: Any, kwargs: dict) -> frozenset[int]:
    eos = _setting(model, kwargs, "eos_token_id", None)
    if eos is None:
        return frozenset()
    if isinstance(eos, torch.Tensor):
        eos = eos.tolist()
    return frozenset([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])


def _generation_settings(model: Any, kwargs: dict, batch: int) -> dict[str, Any]:
    """JSON-able summary of one generate call, stored per run in the trace."""
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    settings: dict[str, Any] = dict(config.to_diff_dict()) if hasattr(config, "to_diff_dict") else {}
    for name, value in kwargs.items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            settings[name] = value
    settings["batch_size"] = batch
    settings.pop("transformers_version", None)
    return settings


def _find_malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to do
        return None


_MALLOC_TRIM = _find_malloc_trim() if sys.platform.startswith("linux") else None


def _return_freed_heap_memory() -> None:
    """Give freed heap pages back to the OS after a statistics block (glibc only).

    Why: each block allocates tens of MiB of CPU temporaries. After the first is freed, glibc
    raises its mmap threshold and serves the next ones from the heap, which fragments as the
    KV cache grows in between; measured without this, resident memory grew by about 30 MiB
    per step at batch 32 (3 GB over 64 tokens) although live tensors grew by 2 MiB per step.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _decode(tokenizer: Any, ids: list[int]) -> str:
    if tokenizer is None:
        return " ".join(f"<{i}>" for i in ids)
    return tokenizer.decode(ids, skip_special_tokens=True)


def _token_texts(tokenizer: Any, ids: list[int]) -> tuple[str, ...]:
    if tokenizer is None:
        return tuple(f"<{i}>" for i in ids)
    return tuple(tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False))
