"""Expansion and pruning: how each decoder layer changes the entropy of the lens distribution.

The paper reads an entropy profile as a sequence of steps. A step that raises entropy
*expands* the set of candidate tokens; one that lowers it *prunes* it.

Layer convention (used everywhere in :mod:`entropylens_hf.analysis`): a **layer index** ``i``
is the 0-based index of a decoder layer in the model's layer list, ``layers[i]``
(:func:`entropylens_hf.lens.resolve_decoder_layers`). That layer reads lens layer ``i`` and
writes lens layer ``i + 1``, so step ``i`` of a profile, ``H[i + 1] - H[i]``, is the change
caused by ``layers[i]`` (the trace calls its output "layer i+1"). The same index is what
:func:`entropylens_hf.analysis.skip_layers` takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "EXPANSION",
    "PRUNING",
    "entropy_steps",
    "step_kinds",
    "extreme_layers",
    "top_layers",
    "LayerDynamics",
    "layer_dynamics",
    "group_dynamics",
]

EXPANSION = 1
PRUNING = -1


def entropy_steps(profile: np.ndarray) -> np.ndarray:
    """Entropy change made by each decoder layer: ``[..., L] -> [..., L - 1]``, step ``i`` caused by ``layers[i]``."""
    return np.diff(np.asarray(profile, dtype=np.float64), axis=-1)


def step_kinds(steps: np.ndarray) -> np.ndarray:
    """``EXPANSION`` (+1) where a step raises entropy, ``PRUNING`` (-1) where it lowers it, 0 where unchanged."""
    return np.sign(np.asarray(steps)).astype(np.int8)


def extreme_layers(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Layer index of maximal expansion and of maximal pruning per profile (``[...]`` each).

    ``-1`` where a profile has no expanding (resp. pruning) step at all.
    """
    steps = entropy_steps(profile)
    expansion = np.where(steps.max(axis=-1) > 0, steps.argmax(axis=-1), -1)
    pruning = np.where(steps.min(axis=-1) < 0, steps.argmin(axis=-1), -1)
    return expansion, pruning


def top_layers(profile: np.ndarray, n: int, kind: int) -> np.ndarray:
    """The ``n`` layer indices whose steps expand (``kind=EXPANSION``) or prune (``PRUNING``) most.

    ``profile`` is one ``[L]`` profile (e.g. a mean over tokens). Ordered strongest first;
    when fewer than ``n`` steps have the requested sign, the next strongest follow, so the
    answer always has ``n`` layers (check :func:`step_kinds` if that matters).
    """
    steps = entropy_steps(profile)
    if steps.ndim != 1:
        raise ValueError(f"top_layers takes one profile [L], got shape {np.shape(profile)}")
    if not 0 <= n <= steps.size:
        raise ValueError(f"n must be between 0 and the number of decoder layers {steps.size}, got {n}")
    if kind not in (EXPANSION, PRUNING):
        raise ValueError(f"kind must be EXPANSION (+1) or PRUNING (-1), got {kind}")
    order = np.argsort(-kind * steps, kind="stable")
    return order[:n]


@dataclass(frozen=True)
class LayerDynamics:
    """Expansion and pruning of a set of token profiles ``[N, L]``.

    ``mean_steps [L-1]``: mean entropy change per layer index. ``expansion_layer`` /
    ``pruning_layer``: the layer of maximal expansion / pruning of the *mean* profile
    (-1 if none). ``expansion_counts`` / ``pruning_counts [L-1]``: how many tokens have their
    own maximal expansion / pruning at each layer (tokens without one are not counted).
    ``expansion_fraction [L-1]``: fraction of tokens for which the layer expands.
    """

    mean_steps: np.ndarray
    expansion_layer: int
    pruning_layer: int
    expansion_counts: np.ndarray
    pruning_counts: np.ndarray
    expansion_fraction: np.ndarray
    count: int


def layer_dynamics(profiles: np.ndarray) -> LayerDynamics:
    """Summarise token profiles ``[N, L]`` (or one ``[L]``) by where they expand and prune."""
    profiles = np.atleast_2d(np.asarray(profiles, dtype=np.float64))
    if profiles.shape[0] == 0:
        raise ValueError("layer_dynamics needs at least one profile")
    steps = entropy_steps(profiles)
    n_steps = steps.shape[-1]
    mean = steps.mean(axis=0)
    per_token_expansion, per_token_pruning = extreme_layers(profiles)
    mean_expansion, mean_pruning = extreme_layers(profiles.mean(axis=0))
    return LayerDynamics(
        mean_steps=mean,
        expansion_layer=int(mean_expansion),
        pruning_layer=int(mean_pruning),
        expansion_counts=np.bincount(per_token_expansion[per_token_expansion >= 0], minlength=n_steps),
        pruning_counts=np.bincount(per_token_pruning[per_token_pruning >= 0], minlength=n_steps),
        expansion_fraction=(step_kinds(steps) == EXPANSION).mean(axis=0),
        count=profiles.shape[0],
    )


def group_dynamics(profiles: np.ndarray, groups: Sequence[str]) -> dict[str, LayerDynamics]:
    """:func:`layer_dynamics` per group of ``profiles [N, L]`` (sorted by group name)."""
    profiles = np.asarray(profiles, dtype=np.float64)
    groups = np.asarray(groups, dtype=object)
    if profiles.shape[0] != groups.shape[0]:
        raise ValueError(f"{profiles.shape[0]} profiles but {groups.shape[0]} group labels")
    return {str(g): layer_dynamics(profiles[groups == g]) for g in sorted(set(groups.tolist()))}
