"""Family fingerprints: do profiles of different models land in different places?

The paper embeds depth-rescaled profiles of many models in 2-D and finds them clustered by
model family. Here each sequence of each trace becomes its mean profile resampled onto
``points`` depths in [0, 1] (so models of any depth share one feature space), the features
of all traces are embedded together with PCA or t-SNE (scikit-learn), and the scatter is
coloured by model (matplotlib, ``pip install 'entropylens-hf[plots]'``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ..trace import Trace
from ._support import AnalysisError, require
from .profiles import Rows, profile_matrix

__all__ = ["Fingerprint", "embed_2d", "fingerprint_traces", "plot_fingerprint"]

Method = Literal["tsne", "pca"]


def embed_2d(features: np.ndarray, *, method: Method = "tsne", seed: int = 0) -> np.ndarray:
    """Embed ``features [S, F]`` in 2-D. Features are standardised per column first.

    t-SNE's perplexity is lowered to ``(S - 1) / 3`` for small sets (it must stay below ``S``).
    """
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 3:
        raise AnalysisError(f"a 2-D embedding needs at least 3 profiles, got {X.shape[0] if X.ndim == 2 else X.shape}")
    scale = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    if method == "pca":
        return require("sklearn.decomposition").PCA(n_components=2, random_state=seed).fit_transform(X)
    if method == "tsne":
        perplexity = float(min(30.0, (X.shape[0] - 1) / 3))
        tsne = require("sklearn.manifold").TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        # One OpenMP thread: t-SNE's threaded gradient was measured 400x slower (40 s vs 0.1 s for
        # 40 points) on a 2-core machine shared with other work; one thread is fast at these sizes.
        with require("threadpoolctl").threadpool_limits(limits=1, user_api="openmp"):
            return tsne.fit_transform(X)
    raise ValueError(f"method must be 'tsne' or 'pca', not {method!r}")


@dataclass(frozen=True)
class Fingerprint:
    """Embedded profiles: ``coords [S, 2]``, the model of each point, and the feature rows ``[S, points]``."""

    coords: np.ndarray
    models: tuple[str, ...]
    features: np.ndarray
    method: str
    points: int


def _model_names(paths: Sequence[Path], traces: Sequence[Trace]) -> list[str]:
    """Each trace's model name, with the file name added where two traces share one."""
    names = [t.metadata.model_name or p.stem for p, t in zip(paths, traces)]
    return [f"{n} ({p.name})" if names.count(n) > 1 else n for n, p in zip(names, paths)]


def fingerprint_traces(
    traces: Sequence[str | os.PathLike],
    *,
    method: Method = "tsne",
    points: int = 20,
    alpha: float | None = None,
    rows: Rows = "generated",
    names: Sequence[str] | None = None,
    seed: int = 0,
) -> Fingerprint:
    """Depth-rescaled mean profiles of every sequence of every trace, embedded together in 2-D."""
    paths = [Path(p) for p in traces]
    if names is not None and len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} traces")
    opened = [Trace.open(p) for p in paths]
    try:
        labels = list(names) if names is not None else _model_names(paths, opened)
        features, models = [], []
        for name, trace in zip(labels, opened):
            profiles = profile_matrix(trace, alpha=alpha, rows=rows, depth_points=points)
            features.append(profiles.features)
            models += [name] * profiles.features.shape[0]
    finally:
        for trace in opened:
            trace.close()
    X = np.concatenate(features, axis=0)
    return Fingerprint(embed_2d(X, method=method, seed=seed), tuple(models), X, method, points)


def plot_fingerprint(result: Fingerprint, out: str | os.PathLike, *, title: str | None = None) -> Path:
    """Scatter the embedding coloured by model and save it to ``out`` (format from the suffix)."""
    figure = require("matplotlib.figure")  # no pyplot: no global state, no display needed
    out = Path(out)
    if not out.parent.exists():
        raise AnalysisError(f"{out}: the folder {out.parent} does not exist")
    fig = figure.Figure(figsize=(6.5, 5))
    ax = fig.add_subplot()
    models = np.array(result.models, dtype=object)
    for name in dict.fromkeys(result.models):
        at = models == name
        ax.scatter(result.coords[at, 0], result.coords[at, 1], s=12, alpha=0.7, label=f"{name} ({at.sum()})")
    axis = "t-SNE" if result.method == "tsne" else "PC"
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(title or f"Entropy profiles ({result.points} depth points), {result.method.upper()}")
    ax.legend(fontsize=8, markerscale=1.5)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out
