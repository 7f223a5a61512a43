"""Entropy profiles: per token, per sequence, per label group, and resampled onto normalised depth.

A token's *profile* is its logit-lens entropy at every lens layer, ``[L]`` with ``L`` =
decoder layers + 1 (lens layer 0 is the embedding output, lens layer ``l`` the output of
decoder layer ``l``). Everything here is plain numpy on arrays read from a trace; the last
axis of every profile is the layer axis. Entropies are in nats.

``alpha`` selects the quantity: ``None`` or ``1`` is the Shannon entropy, any other value one
of the Rényi orders recorded with ``EntropyLens(..., renyi_alphas=[...])``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np

from ..trace import SequenceRecord, Trace
from ._support import AnalysisError

__all__ = [
    "Rows",
    "token_profiles",
    "window_means",
    "sequence_profile",
    "ProfileSet",
    "profile_matrix",
    "GroupProfile",
    "group_profiles",
    "normalized_depth",
    "rescale_depth",
]

Rows = Literal["generated", "prompt", "all"]


def token_profiles(record: SequenceRecord, *, alpha: float | None = None, rows: Rows = "generated") -> np.ndarray:
    """Entropy profile of each selected row of a sequence, ``[n, L]`` float64.

    ``rows="generated"`` (the paper's choice) keeps the rows whose target was generated: the
    first of them is the prompt's last position, whose distribution produced the first new
    token. ``"prompt"`` keeps the rows that predicted prompt tokens, ``"all"`` both.
    """
    if alpha is None or float(alpha) == 1.0:
        values = record.entropy
    else:
        try:
            values = record.renyi_profile(alpha)
        except KeyError as exc:
            raise AnalysisError(exc.args[0]) from None
    if rows == "all":
        return np.asarray(values, dtype=np.float64)
    if rows not in ("generated", "prompt"):
        raise ValueError(f"rows must be 'generated', 'prompt' or 'all', not {rows!r}")
    keep = record.is_generated if rows == "generated" else ~record.is_generated
    return np.asarray(values[keep], dtype=np.float64)


def window_means(profiles: np.ndarray, windows: int) -> np.ndarray:
    """Split ``[T, L]`` token profiles into ``windows`` contiguous windows; their means, concatenated.

    This keeps *where* in the generation a profile occurred, as the paper's features do. Window
    sizes follow ``np.array_split``: the first ``T % windows`` windows hold one token more.
    Returns ``[windows * L]`` (window 0's profile first).
    """
    profiles = np.asarray(profiles, dtype=np.float64)
    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    if profiles.shape[0] < windows:
        raise AnalysisError(f"{profiles.shape[0]} tokens cannot fill {windows} windows; use fewer windows")
    return np.concatenate([w.mean(axis=0) for w in np.array_split(profiles, windows, axis=0)])


def sequence_profile(
    record: SequenceRecord,
    *,
    alpha: float | None = None,
    windows: int | None = None,
    rows: Rows = "generated",
) -> np.ndarray:
    """One feature vector per sequence: the mean token profile ``[L]``, or ``[windows * L]`` window means."""
    profiles = token_profiles(record, alpha=alpha, rows=rows)
    if profiles.shape[0] == 0:
        raise AnalysisError(f"sequence {record.index}: no {rows} rows to average")
    if windows is None:
        return profiles.mean(axis=0)
    try:
        return window_means(profiles, windows)
    except AnalysisError as exc:
        raise AnalysisError(f"sequence {record.index}: {exc}") from None


@dataclass(frozen=True)
class ProfileSet:
    """Sequence profiles of a trace, ready for a classifier.

    ``features [S, F]`` (``F = L``, ``windows * L``, or ``windows * depth_points``),
    ``labels`` and ``indices`` (position in the trace) of the kept sequences, and the trace
    indices ``skipped`` for having too few rows (fewer than ``windows``, or none).
    """

    features: np.ndarray
    labels: tuple[Mapping[str, str], ...]
    indices: np.ndarray
    skipped: tuple[int, ...]
    num_layers: int
    model_name: str = ""

    def label_values(self, key: str) -> np.ndarray:
        """The value of label ``key`` for every kept sequence (``""`` where missing)."""
        return np.array([lab.get(key, "") for lab in self.labels], dtype=object)


def profile_matrix(
    trace: Trace,
    *,
    alpha: float | None = None,
    windows: int | None = None,
    rows: Rows = "generated",
    depth_points: int | None = None,
    indices: Sequence[int] | None = None,
    sublayers: bool = False,
) -> ProfileSet:
    """Sequence profiles of every (or the given) sequence of a trace.

    With ``depth_points`` each window's profile is first resampled onto that many points of
    normalised depth (:func:`rescale_depth`), so traces of models of different depth give
    features of the same size. Sequences with too few rows are skipped and listed, not fatal.
    A sub-layer trace gives its whole-layer profile (embeddings + one row per layer, as a plain
    trace would), unless ``sublayers=True`` keeps its attention rows too.
    """
    chosen = range(len(trace)) if indices is None else indices
    columns = np.arange(trace.metadata.num_layers) if sublayers else trace.metadata.whole_layer_rows
    features, labels, kept, skipped = [], [], [], []
    for i in chosen:
        record = trace[int(i)]
        profiles = token_profiles(record, alpha=alpha, rows=rows)[:, columns]
        n_windows = windows or 1
        if profiles.shape[0] < n_windows or profiles.shape[0] == 0:
            skipped.append(int(i))
            continue
        means = window_means(profiles, n_windows).reshape(n_windows, -1)
        if depth_points is not None:
            means = rescale_depth(means, depth_points)
        features.append(means.reshape(-1))
        labels.append(dict(record.labels))
        kept.append(int(i))
    width = (windows or 1) * (depth_points or len(columns))
    return ProfileSet(
        features=np.array(features, dtype=np.float64).reshape(len(features), width),
        labels=tuple(labels),
        indices=np.array(kept, dtype=np.int64),
        skipped=tuple(skipped),
        num_layers=len(columns),
        model_name=trace.metadata.model_name,
    )


@dataclass(frozen=True)
class GroupProfile:
    """Mean profile of a group with its spread: ``mean`` and ``std`` (ddof=1; 0 for one member) ``[F]``."""

    mean: np.ndarray
    std: np.ndarray
    count: int


def group_profiles(profiles: np.ndarray, groups: Sequence[str]) -> dict[str, GroupProfile]:
    """Mean, standard deviation and count of ``profiles [S, F]`` per group (sorted by group name)."""
    profiles = np.asarray(profiles, dtype=np.float64)
    groups = np.asarray(groups, dtype=object)
    if profiles.shape[0] != groups.shape[0]:
        raise ValueError(f"{profiles.shape[0]} profiles but {groups.shape[0]} group labels")
    out = {}
    for name in sorted(set(groups.tolist())):
        members = profiles[groups == name]
        std = members.std(axis=0, ddof=1) if len(members) > 1 else np.zeros(members.shape[1:])
        out[str(name)] = GroupProfile(mean=members.mean(axis=0), std=std, count=len(members))
    return out


def normalized_depth(num_layers: int) -> np.ndarray:
    """Depth of each lens layer on [0, 1]: 0 is the embedding output, 1 the last decoder layer."""
    if num_layers < 2:
        raise ValueError(f"a profile needs at least 2 lens layers, got {num_layers}")
    return np.linspace(0.0, 1.0, num_layers)


def rescale_depth(profile: np.ndarray, points: int) -> np.ndarray:
    """Resample profiles (last axis = ``L`` lens layers) onto ``points`` evenly spaced depths in [0, 1].

    Lens layer ``l`` sits at depth ``l / (L - 1)``; values in between are linearly
    interpolated, so a 12-layer and a 24-layer model can be compared point by point.
    The first and last points are the embedding and final-layer values, unchanged.
    """
    profile = np.asarray(profile, dtype=np.float64)
    L = profile.shape[-1]
    if L < 2 or points < 2:
        raise ValueError(f"rescaling needs at least 2 lens layers and 2 points, got {L} and {points}")
    position = np.linspace(0.0, 1.0, points) * (L - 1)
    lower = np.minimum(np.floor(position).astype(np.int64), L - 2)
    weight = position - lower
    return profile[..., lower] * (1.0 - weight) + profile[..., lower + 1] * weight
