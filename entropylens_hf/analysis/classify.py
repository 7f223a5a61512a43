"""Is a label (task, output format, correctness...) predictable from entropy profiles alone?

The paper's test: a k-nearest-neighbour classifier on sequence profiles, stratified 10-fold
cross-validation, scored by accuracy and macro one-vs-rest ROC-AUC next to a stratified
dummy classifier (which guesses by the class frequencies of the training fold), and a
paired t-test over the folds. Needs scikit-learn and scipy (``pip install 'entropylens-hf[analysis]'``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from ..trace import Trace
from ._support import AnalysisError, require
from .profiles import Rows, profile_matrix

__all__ = ["ClassificationResult", "knn_cross_validate", "classify_trace", "format_classification"]

TEST_NAME = "paired t-test (two-sided) on per-fold macro ROC-AUC, k-NN vs stratified dummy"


@dataclass(frozen=True)
class ClassificationResult:
    """Cross-validated k-NN scores for one label, next to a stratified dummy baseline.

    Scores are means over folds, ``*_std`` their standard deviation over folds (ddof=0),
    ``fold_*`` the per-fold values. ``p_value`` is from :data:`TEST_NAME`. ``note`` says
    when fewer folds than asked for were used, and why.
    """

    label: str
    classes: tuple[str, ...]
    counts: tuple[int, ...]
    n_features: int
    k: int
    folds: int
    accuracy: float
    accuracy_std: float
    roc_auc: float
    roc_auc_std: float
    baseline_accuracy: float
    baseline_accuracy_std: float
    baseline_roc_auc: float
    baseline_roc_auc_std: float
    p_value: float
    fold_accuracy: tuple[float, ...]
    fold_roc_auc: tuple[float, ...]
    baseline_fold_accuracy: tuple[float, ...]
    baseline_fold_roc_auc: tuple[float, ...]
    features: str = ""
    note: str = ""
    test: str = TEST_NAME

    @property
    def n_samples(self) -> int:
        return int(sum(self.counts))


def _macro_roc_auc(y_true: np.ndarray, proba: np.ndarray, n_classes: int) -> float:
    metrics = require("sklearn.metrics")
    if n_classes == 2:
        return float(metrics.roc_auc_score(y_true, proba[:, 1]))
    return float(metrics.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=np.arange(n_classes)))


def _paired_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test; defined as 1 (no difference) or 0 (constant non-zero difference) when the differences do not vary."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.size < 2:
        return math.nan
    if np.allclose(diff, diff[0], rtol=0, atol=1e-12):
        return 1.0 if abs(diff[0]) < 1e-12 else 0.0
    stats = require("scipy.stats")
    return float(stats.ttest_rel(a, b).pvalue)


def knn_cross_validate(
    features: np.ndarray,
    labels: Sequence[str],
    *,
    k: int = 5,
    folds: int = 10,
    seed: int = 0,
    label: str = "",
    description: str = "",
) -> ClassificationResult:
    """Stratified k-fold CV of a Euclidean k-NN on ``features [S, F]`` against a stratified dummy.

    ``folds`` is lowered to the size of the smallest class when that class has fewer members
    (each test fold must see every class), and the result's ``note`` says so. ``k`` is capped
    at the size of a training fold. Raises :class:`AnalysisError` if a class has one member or
    there is only one class.
    """
    model_selection = require("sklearn.model_selection")
    X = np.asarray(features, dtype=np.float64)
    names, y = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    counts = np.bincount(y, minlength=len(names))
    _check_classes(X, y, names, counts, label, folds)
    n_folds = int(min(folds, counts.min()))
    note = ""
    if n_folds < folds:
        smallest = names[counts.argmin()]
        note = f"{n_folds} folds instead of {folds}: class {smallest!r} has only {counts.min()} members"
    splitter = model_selection.StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    scores, k_used = _fold_scores(X, y, len(names), splitter, k, seed)
    return ClassificationResult(
        label=label,
        classes=tuple(str(n) for n in names),
        counts=tuple(int(c) for c in counts),
        n_features=int(X.shape[1]),
        k=int(k_used),
        folds=n_folds,
        accuracy=float(np.mean(scores["acc"])),
        accuracy_std=float(np.std(scores["acc"])),
        roc_auc=float(np.mean(scores["auc"])),
        roc_auc_std=float(np.std(scores["auc"])),
        baseline_accuracy=float(np.mean(scores["base_acc"])),
        baseline_accuracy_std=float(np.std(scores["base_acc"])),
        baseline_roc_auc=float(np.mean(scores["base_auc"])),
        baseline_roc_auc_std=float(np.std(scores["base_auc"])),
        p_value=_paired_p_value(scores["auc"], scores["base_auc"]),
        fold_accuracy=tuple(scores["acc"]),
        fold_roc_auc=tuple(scores["auc"]),
        baseline_fold_accuracy=tuple(scores["base_acc"]),
        baseline_fold_roc_auc=tuple(scores["base_auc"]),
        features=description,
        note=note,
    )


def _check_classes(X: np.ndarray, y: np.ndarray, names: np.ndarray, counts: np.ndarray, label: str, folds: int) -> None:
    """Refuse, with one line, what k-fold cross-validation cannot score."""
    what = f"label {label!r}" if label else "labels"
    if X.ndim != 2 or X.shape[0] != len(y):
        raise ValueError(f"features must be [samples, features] with one row per label, got {X.shape} for {len(y)} labels")
    if len(names) < 2:
        raise AnalysisError(f"{what}: only one class ({', '.join(names) or 'none'}); nothing to classify")
    if counts.min() < 2:
        rare = ", ".join(f"{n!r}" for n, c in zip(names, counts) if c < 2)
        raise AnalysisError(f"{what}: class {rare} has a single member; cross-validation needs at least 2 per class")
    if folds < 2:
        raise AnalysisError(f"cross-validation needs at least 2 folds, got {folds}")
    if not np.isfinite(X).all():
        raise AnalysisError(f"{what}: features contain NaN or infinite values")


def _fold_scores(X: np.ndarray, y: np.ndarray, n_classes: int, splitter: Any, k: int,
                 seed: int) -> tuple[dict[str, list[float]], int]:
    """Accuracy and macro ROC AUC per fold of the k-NN and of the stratified dummy; also the k used."""
    neighbors = require("sklearn.neighbors")
    dummy = require("sklearn.dummy")
    scores: dict[str, list[float]] = {"acc": [], "auc": [], "base_acc": [], "base_auc": []}
    k_used = k
    # One generator for all folds: a fixed seed per fold would repeat the dummy's guesses fold after
    # fold, which on data ordered by class biases its score and shrinks its spread.
    dummy_rng = np.random.RandomState(seed)
    for train, test in splitter.split(X, y):
        k_used = min(k, len(train))
        knn = neighbors.KNeighborsClassifier(n_neighbors=k_used, metric="euclidean").fit(X[train], y[train])
        base = dummy.DummyClassifier(strategy="stratified", random_state=dummy_rng).fit(X[train], y[train])
        for prefix, clf in (("", knn), ("base_", base)):
            proba = np.zeros((len(test), n_classes))
            proba[:, clf.classes_] = clf.predict_proba(X[test])
            scores[prefix + "acc"].append(float((proba.argmax(axis=1) == y[test]).mean()))
            scores[prefix + "auc"].append(_macro_roc_auc(y[test], proba, n_classes))
    return scores, k_used


def classify_trace(
    trace: Trace,
    label: str,
    *,
    alpha: float | None = None,
    windows: int | None = None,
    rows: Rows = "generated",
    k: int = 5,
    folds: int = 10,
    seed: int = 0,
) -> ClassificationResult:
    """Predict the stored label ``label`` of each sequence of ``trace`` from its profile.

    Features are :func:`~entropylens_hf.analysis.profile_matrix` rows (mean profile, or
    ``windows`` window means). Sequences without the label, or with too few rows for the
    windows, are left out and counted in the result's ``note``.
    """
    existing = sorted({key for labels in trace.labels for key in labels})
    if label not in existing:
        raise AnalysisError(
            f"{trace.path}: no sequence has the label {label!r}; labels in this trace: {', '.join(existing) or 'none'}"
        )
    indices = [i for i, labels in enumerate(trace.labels) if label in labels]
    profiles = profile_matrix(trace, alpha=alpha, windows=windows, rows=rows, indices=indices)
    quantity = "Shannon" if alpha is None or float(alpha) == 1.0 else f"Rényi α={alpha:g}"
    shape = f"{windows} window means" if windows else "mean"
    description = f"{quantity} entropy, {shape} over {rows} tokens, {profiles.num_layers} lens layers"
    if profiles.features.shape[0] == 0:
        raise AnalysisError(f"{trace.path}: no sequence with label {label!r} has enough {rows} rows for {windows or 1} window(s)")
    result = knn_cross_validate(
        profiles.features, profiles.label_values(label), k=k, folds=folds, seed=seed, label=label, description=description
    )
    dropped = len(trace) - len(indices)
    notes = [result.note] if result.note else []
    if dropped:
        notes.append(f"{dropped} sequence(s) without label {label!r} left out")
    if profiles.skipped:
        notes.append(f"{len(profiles.skipped)} sequence(s) with fewer than {windows or 1} {rows} row(s) left out")
    return replace(result, note="; ".join(notes))


def format_classification(results: ClassificationResult | Sequence[ClassificationResult]) -> str:
    """A plain-text table: one line per result, scores as mean ± std over folds, then notes."""
    if isinstance(results, ClassificationResult):
        results = [results]
    header = ("label", "classes", "n", "k", "folds", "accuracy", "dummy acc", "ROC-AUC", "dummy AUC", "p")
    rows = []
    for r in results:
        rows.append((
            r.label,
            str(len(r.classes)),
            str(r.n_samples),
            str(r.k),
            str(r.folds),
            f"{r.accuracy:.3f} ± {r.accuracy_std:.3f}",
            f"{r.baseline_accuracy:.3f} ± {r.baseline_accuracy_std:.3f}",
            f"{r.roc_auc:.3f} ± {r.roc_auc_std:.3f}",
            f"{r.baseline_roc_auc:.3f} ± {r.baseline_roc_auc_std:.3f}",
            _format_p(r.p_value),
        ))
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    for r in results:
        classes = ", ".join(f"{c} ({n})" for c, n in zip(r.classes, r.counts))
        lines.append(f"{r.label}: classes {classes}" + (f"; features: {r.features}" if r.features else ""))
        if r.note:
            lines.append(f"{r.label}: note: {r.note}")
    lines.append(f"p: {results[0].test}" if results else "")
    return "\n".join(lines)


def _format_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"
