"""Expansion and pruning attributed to attention or to the MLP, from sub-layer traces.

A sub-layer trace (``EntropyLens(..., sublayers=True)``) has lens rows ``embeddings, 1.attn,
1.mlp, 2.attn, ...``: ``k.attn`` is the residual after decoder layer ``k``'s attention,
``k.mlp`` the residual after the whole layer. The entropy change of layer ``k`` then splits in
two **steps**: the attention step ``H[k.attn] - H[previous row]`` and the MLP step
``H[k.mlp] - H[k.attn]``. A rising step expands the candidate set, a falling one prunes it.

Arrays follow the analysis convention: step ``i`` belongs to ``layers[i]`` (0-based layer
index, the trace's layer ``i + 1``). Descriptions in words use the trace's row names, so
"the MLPs of layers 20-24" means rows ``20.mlp`` to ``24.mlp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..trace import Trace
from ._support import AnalysisError
from .dynamics import EXPANSION, PRUNING
from .profiles import Rows, token_profiles

__all__ = [
    "SublayerSteps",
    "sublayer_steps",
    "StepSites",
    "step_sites",
    "SublayerShares",
    "sublayer_shares",
    "trace_sublayer_shares",
    "format_sublayer_shares",
]


@dataclass(frozen=True)
class SublayerSteps:
    """Entropy steps ``attention [..., layers]`` and ``mlp [..., layers]`` (nats), per layer index."""

    attention: np.ndarray
    mlp: np.ndarray


def _check_kinds(layer_kinds: Sequence[str], width: int) -> int:
    kinds = tuple(layer_kinds)
    layers = (len(kinds) - 1) // 2
    if len(kinds) != width or kinds != ("emb",) + ("attn", "mlp") * layers:
        raise AnalysisError(
            f"attention-vs-MLP analyses need a sub-layer trace (rows emb, attn, mlp, ...; "
            f"record with --sublayers), got {width} rows of kinds {list(kinds)[:5]}..."
        )
    return layers


def sublayer_steps(profiles: np.ndarray, layer_kinds: Sequence[str]) -> SublayerSteps:
    """Split profiles ``[..., 2 * layers + 1]`` of a sub-layer trace into attention and MLP steps."""
    profiles = np.asarray(profiles, dtype=np.float64)
    _check_kinds(layer_kinds, profiles.shape[-1])
    steps = np.diff(profiles, axis=-1)
    return SublayerSteps(attention=steps[..., 0::2], mlp=steps[..., 1::2])


@dataclass(frozen=True)
class StepSites:
    """Where one profile expands or prunes: the fewest steps that do ``coverage`` of it.

    ``rows``: the trace row names of those steps (``"20.mlp"`` is layer 20's MLP step), in
    depth order; ``amount``: the profile's total expansion or pruning (nats, >= 0);
    ``covered``: the fraction of it those steps do.
    """

    kind: int
    rows: tuple[str, ...]
    amount: float
    covered: float

    def describe(self) -> str:
        """In words, e.g. ``"pruning: the MLPs of layers 20-24 and the attention of layer 3 (86% of 2.10 nats)"``."""
        what = "expansion" if self.kind == EXPANSION else "pruning"
        if not self.rows:
            return f"{what}: none"
        parts = []
        for part, plural, singular in (("attn", "the attention of layers", "the attention of layer"),
                                       ("mlp", "the MLPs of layers", "the MLP of layer")):
            layers = [int(r.split(".")[0]) for r in self.rows if r.endswith("." + part)]
            if layers:
                ranges = _ranges(layers)
                parts.append(f"{singular if len(layers) == 1 else plural} {ranges}")
        return f"{what}: {' and '.join(parts)} ({100 * self.covered:.0f}% of {self.amount:.2f} nats)"


def _ranges(values: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    out, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None]):
        if cur != prev + 1:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(out)


def step_sites(profile: np.ndarray, layer_kinds: Sequence[str], kind: int = PRUNING, coverage: float = 0.8) -> StepSites:
    """The sub-layer steps where one profile ``[L]`` prunes (or expands) most.

    Steps of the requested sign are taken strongest first until they do at least
    ``coverage`` of the profile's total pruning (expansion); e.g. a token whose pruning is
    done by the MLPs of layers 20-24 says so in :meth:`StepSites.describe`.
    """
    if kind not in (EXPANSION, PRUNING):
        raise ValueError(f"kind must be EXPANSION (+1) or PRUNING (-1), got {kind}")
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    profile = np.asarray(profile, dtype=np.float64)
    if profile.ndim != 1:
        raise ValueError(f"step_sites takes one profile [L], got shape {profile.shape}")
    layers = _check_kinds(layer_kinds, profile.shape[0])
    signed = kind * np.diff(profile)  # > 0 where the step goes the requested way
    amount = float(signed[signed > 0].sum())
    if amount == 0:
        return StepSites(kind, (), 0.0, 0.0)
    order = np.argsort(-signed, kind="stable")[: int((signed > 0).sum())]
    cumulative = np.cumsum(signed[order])  # increasing: only steps of the requested sign
    count = min(int(np.searchsorted(cumulative, coverage * amount * (1 - 1e-12)) + 1), len(order))
    chosen = np.sort(order[:count])
    names = [f"{i // 2 + 1}.{'attn' if i % 2 == 0 else 'mlp'}" for i in range(2 * layers)]
    return StepSites(kind, tuple(names[i] for i in chosen), amount, float(cumulative[count - 1] / amount))


@dataclass(frozen=True)
class SublayerShares:
    """How a set of token profiles expands and prunes, attention vs MLP.

    ``expansion_attention`` / ``pruning_attention``: the share (0-1) of all expansion / all
    pruning (summed over tokens and layers, nats) done by attention steps; the MLP does the
    rest. ``mean_attention`` / ``mean_mlp`` ``[layers]``: mean step per layer index (nats,
    signed). ``expansion`` / ``pruning``: total nats per token, averaged. ``count``: tokens.
    """

    expansion_attention: float
    pruning_attention: float
    mean_attention: np.ndarray
    mean_mlp: np.ndarray
    expansion: float
    pruning: float
    count: int


def sublayer_shares(profiles: np.ndarray, layer_kinds: Sequence[str]) -> SublayerShares:
    """Attention-vs-MLP shares of expansion and pruning of token profiles ``[N, L]``."""
    profiles = np.atleast_2d(np.asarray(profiles, dtype=np.float64))
    if profiles.shape[0] == 0:
        raise AnalysisError("no token profiles to attribute")
    steps = sublayer_steps(profiles, layer_kinds)
    up_a, up_m = np.clip(steps.attention, 0, None).sum(), np.clip(steps.mlp, 0, None).sum()
    down_a, down_m = np.clip(-steps.attention, 0, None).sum(), np.clip(-steps.mlp, 0, None).sum()
    n = profiles.shape[0]
    return SublayerShares(
        expansion_attention=float(up_a / (up_a + up_m)) if up_a + up_m > 0 else float("nan"),
        pruning_attention=float(down_a / (down_a + down_m)) if down_a + down_m > 0 else float("nan"),
        mean_attention=steps.attention.mean(axis=0),
        mean_mlp=steps.mlp.mean(axis=0),
        expansion=float((up_a + up_m) / n),
        pruning=float((down_a + down_m) / n),
        count=n,
    )


def trace_sublayer_shares(trace: Trace, label: str | None = None, *, rows: Rows = "generated") -> dict[str, SublayerShares]:
    """:func:`sublayer_shares` of a sub-layer trace's token profiles: ``{"all": ...}``, or per value of ``label``.

    Sequences without the label are grouped under ``""``.
    """
    kinds = trace.metadata.layer_kinds
    _check_kinds(kinds, trace.metadata.num_layers)
    groups: dict[str, list[np.ndarray]] = {}
    for record in trace:
        key = "all" if label is None else record.labels.get(label, "")
        groups.setdefault(key, []).append(token_profiles(record, rows=rows))
    if label is not None and set(groups) == {""}:
        raise AnalysisError(f"no sequence has the label {label!r}")
    out = {}
    for key in sorted(groups):
        profiles = np.concatenate(groups[key])
        if profiles.shape[0]:
            out[key] = sublayer_shares(profiles, kinds)
    if not out:
        raise AnalysisError(f"no {rows} rows in {trace.path}")
    return out


def format_sublayer_shares(shares: Mapping[str, SublayerShares], *, label: str | None = None) -> str:
    """A table: per group, tokens, expansion and pruning per token and the attention share of each."""
    head = f"{label or 'group':<16} {'tokens':>7} {'expansion':>10} {'by attn':>8} {'pruning':>8} {'by attn':>8}"
    lines = [head]
    for key, s in shares.items():
        lines.append(f"{key or '(none)':<16} {s.count:>7} {s.expansion:>9.3f}n {100 * s.expansion_attention:>7.1f}% "
                     f"{s.pruning:>7.3f}n {100 * s.pruning_attention:>7.1f}%")
    lines.append("expansion / pruning: nats per token summed over steps; 'by attn': the share done by attention "
                 "steps (the MLPs do the rest)")
    return "\n".join(lines)
