"""Layer skipping: which layers matter, those that expand entropy or those that prune it?

:func:`skip_layers` makes chosen decoder layers pass the residual stream through unchanged.
:func:`skip_experiment` compares a model with no layer skipped, with the ``n`` layers of
maximal expansion skipped, with the ``n`` of maximal pruning skipped, and with ``n`` random
layers skipped (a control, over several seeds), on multiple-choice questions or on
next-token prediction over held-out text. The paper found skipping expansion layers hurts
multiple-choice accuracy more than skipping pruning layers.

Layer indices are 0-based positions in the decoder's layer list (see
:mod:`entropylens_hf.analysis.dynamics` for how they map onto profile steps).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..lens.logit import resolve_decoder_layers
from .dynamics import EXPANSION, PRUNING, entropy_steps
from .evaluation import MultipleChoiceItem, multiple_choice_accuracy, next_token_accuracy, text_profiles

__all__ = ["skip_layers", "SkipCondition", "SkipExperiment", "skip_experiment", "format_skip_experiment"]


def _passthrough(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """Forward hook: the layer's output with its hidden states replaced by the layer's input."""
    hidden = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"{type(module).__name__}: cannot find hidden_states among the layer's inputs")
    if isinstance(output, torch.Tensor):  # transformers 5
        return hidden
    if isinstance(output, tuple):  # transformers 4.x: (hidden, present, attentions...)
        return (hidden, *output[1:])
    if isinstance(output, list):
        return [hidden, *output[1:]]
    if hasattr(output, "hidden_states"):  # a ModelOutput-like object
        output.hidden_states = hidden
        return output
    raise TypeError(f"{type(module).__name__}: cannot replace the hidden states in an output of type {type(output).__name__}")


@contextlib.contextmanager
def skip_layers(model: nn.Module, indices: Iterable[int], *, layers: nn.ModuleList | None = None) -> Iterator[None]:
    """Within the block, the decoder layers ``layers[i]`` for ``i in indices`` act as the identity.

    >>> with skip_layers(model, [3, 7]):
    ...     logits = model(input_ids).logits

    Each skipped layer still runs (its result is discarded by a forward hook), so skipping
    saves no time; in exchange it works whatever the layer returns (a tensor in transformers
    5, a tuple in 4.x) and leaves the model's own code and modules untouched. The hooks are
    prepended, so other hooks (e.g. a recorder's) see the skipped output, and are removed on
    exit, also when the block raises. ``layers`` overrides the resolved decoder layer list.
    """
    layers = layers if layers is not None else resolve_decoder_layers(model)
    chosen = sorted({int(i) for i in indices})
    bad = [i for i in chosen if not 0 <= i < len(layers)]
    if bad:
        raise IndexError(f"layer indices {bad} out of range: the model has {len(layers)} decoder layers (0 to {len(layers) - 1})")
    handles = []
    try:
        for i in chosen:
            handles.append(layers[i].register_forward_hook(_passthrough, with_kwargs=True, prepend=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class SkipCondition:
    """One row of the experiment: which layers were skipped in each run, and the scores.

    ``scores`` maps a metric name to ``(mean, std)`` over runs (std ddof=0; 0 for one run).
    """

    name: str
    layers: tuple[tuple[int, ...], ...]
    scores: Mapping[str, tuple[float, float]]


@dataclass(frozen=True)
class SkipExperiment:
    """Scores of one model under each skipping condition, and the profile that chose the layers.

    ``mean_steps [D]``: mean entropy change per layer index of that profile
    (positive = expansion); ``profile_source`` says where the profile came from.
    """

    model_name: str
    evaluation: str
    metrics: tuple[str, ...]
    n_layers: int
    num_decoder_layers: int
    mean_steps: np.ndarray
    profile_source: str
    conditions: tuple[SkipCondition, ...]
    excluded: tuple[int, ...] = ()

    def score(self, condition: str, metric: str) -> float:
        """Mean score of ``metric`` under the condition named ``condition``."""
        for c in self.conditions:
            if c.name == condition:
                return c.scores[metric][0]
        raise KeyError(f"no condition {condition!r}; conditions: {[c.name for c in self.conditions]}")


def skip_experiment(
    model: nn.Module,
    tokenizer: Any,
    *,
    n_layers: int = 1,
    items: Sequence[MultipleChoiceItem] | None = None,
    texts: Sequence[str] | None = None,
    profile: np.ndarray | None = None,
    profile_source: str = "",
    seeds: int = 5,
    seed: int = 0,
    max_length: int = 128,
    batch_size: int = 16,
    model_name: str = "",
    exclude: Sequence[int] = (),
) -> SkipExperiment:
    """Score ``model`` with no layers skipped, the ``n_layers`` of maximal expansion / pruning skipped,
    and ``n_layers`` random layers skipped (``seeds`` draws, mean ± std).

    ``exclude``: layer indices never skipped, neither ranked nor drawn (e.g. ``[0]``: in small
    models the first layer does most of the pruning and skipping it breaks everything, which
    says little about pruning in general).

    Evaluates multiple-choice accuracy on ``items`` if given, else next-token accuracy on
    ``texts``. ``profile [L]`` ranks the layers (e.g. a trace's mean generated-token profile);
    without it, the mean profile of the model reading the evaluation texts is used (for
    multiple choice: each question followed by its correct answer).
    """
    if (items is None) == (texts is None):
        raise ValueError("give exactly one of items= (multiple choice) or texts= (next-token accuracy)")
    layers = resolve_decoder_layers(model)
    depth = len(layers)
    candidates = _skippable_layers(depth, exclude, n_layers)
    if profile is None:
        reading = [item.answer_text for item in items] if items is not None else list(texts)
        profile = text_profiles(model, tokenizer, reading, max_length=max_length, batch_size=batch_size).mean(axis=0)
        profile_source = profile_source or "mean profile of the model on the evaluation texts"
    profile = _check_profile(profile, depth)
    metrics, evaluation, evaluate = _evaluator(model, tokenizer, items, texts, max_length, batch_size)
    conditions = []
    for name, runs in _skip_plans(profile, candidates, n_layers, seeds, seed):
        values = []
        for skipped in runs:
            with skip_layers(model, skipped, layers=layers):
                values.append(evaluate())
        values = np.array(values)
        scores = {m: (float(values[:, j].mean()), float(values[:, j].std())) for j, m in enumerate(metrics)}
        conditions.append(SkipCondition(name, tuple(runs), scores))
    return SkipExperiment(
        model_name=model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__,
        evaluation=evaluation,
        metrics=metrics,
        n_layers=n_layers,
        num_decoder_layers=depth,
        mean_steps=entropy_steps(profile),
        profile_source=profile_source or "given profile",
        conditions=tuple(conditions),
        excluded=tuple(sorted(int(i) for i in exclude)),
    )


def _skippable_layers(depth: int, exclude: Sequence[int], n_layers: int) -> np.ndarray:
    """The decoder layers that may be skipped (all but ``exclude``), checked against ``n_layers``."""
    bad = sorted(int(i) for i in exclude if not 0 <= int(i) < depth)
    if bad:
        raise ValueError(f"exclude names layer indices {bad}, but the model has decoder layers 0..{depth - 1}")
    candidates = np.array([i for i in range(depth) if i not in {int(j) for j in exclude}], dtype=int)
    if not 1 <= n_layers <= len(candidates):
        raise ValueError(f"n_layers must be between 1 and the {len(candidates)} decoder layers that may be skipped, "
                         f"got {n_layers}")
    return candidates


def _check_profile(profile: np.ndarray, depth: int) -> np.ndarray:
    """The ranking profile as float64, refused unless it has one value per lens layer of this model."""
    profile = np.asarray(profile, dtype=np.float64)
    if profile.shape != (depth + 1,):
        raise ValueError(
            f"the profile has shape {profile.shape}, but this model's profiles have {depth + 1} lens layers "
            f"(embeddings + {depth} decoder layers); rank layers with a profile of the same model"
        )
    return profile


def _evaluator(model: nn.Module, tokenizer: Any, items: Sequence[MultipleChoiceItem] | None,
               texts: Sequence[str] | None, max_length: int, batch_size: int):
    """``(metric names, description, evaluate)``: multiple-choice accuracy on ``items``, else next-token accuracy."""
    if items is not None:
        def evaluate() -> tuple[float, ...]:
            s = multiple_choice_accuracy(model, tokenizer, items, batch_size=batch_size)
            return s.accuracy, s.accuracy_norm

        return ("accuracy", "accuracy (length-normalised)"), f"multiple choice, {len(items)} questions", evaluate

    def evaluate() -> tuple[float, ...]:
        s = next_token_accuracy(model, tokenizer, texts, max_length=max_length, batch_size=batch_size)
        return s.accuracy, s.nll

    return ("next-token accuracy", "NLL (nats/token)"), f"next-token prediction, {len(texts)} texts", evaluate


def _skip_plans(profile: np.ndarray, candidates: np.ndarray, n_layers: int, seeds: int,
                seed: int) -> list[tuple[str, list[tuple[int, ...]]]]:
    """The conditions compared: none, the layers of maximal expansion, of maximal pruning, random draws."""
    rng = np.random.default_rng(seed)
    steps = entropy_steps(profile)[candidates]
    ranked = {kind: candidates[np.argsort(-kind * steps, kind="stable")[:n_layers]] for kind in (EXPANSION, PRUNING)}
    return [
        ("none", [()]),
        (f"max expansion ({n_layers})", [tuple(int(i) for i in ranked[EXPANSION])]),
        (f"max pruning ({n_layers})", [tuple(int(i) for i in ranked[PRUNING])]),
        (f"random ({n_layers}) x{seeds}",
         [tuple(sorted(int(i) for i in rng.choice(candidates, n_layers, replace=False))) for _ in range(seeds)]),
    ]


def format_skip_experiment(experiment: SkipExperiment) -> str:
    """A plain-text table: one line per condition, scores as mean (± std over runs where several)."""
    header = ("skipped", "layers", *experiment.metrics)
    rows = []
    for c in experiment.conditions:
        layers = "-" if c.layers == ((),) else (
            ", ".join(map(str, c.layers[0])) if len(c.layers) == 1 else f"{len(c.layers)} draws"
        )
        cells = [f"{m:.3f}" if len(c.layers) == 1 else f"{m:.3f} ± {s:.3f}" for m, s in (c.scores[k] for k in experiment.metrics)]
        rows.append((c.name, layers, *cells))
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(header)]
    steps = ", ".join(f"{i}:{s:+.2f}" for i, s in enumerate(experiment.mean_steps))
    kept = f"; never skipped: {', '.join(map(str, experiment.excluded))}" if experiment.excluded else ""
    lines = [
        f"{experiment.model_name}: {experiment.evaluation}; {experiment.num_decoder_layers} decoder layers{kept}",
        f"entropy change per layer index ({experiment.profile_source}): {steps}",
        "  ".join(h.ljust(w) for h, w in zip(header, widths)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
