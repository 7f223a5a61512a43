import numpy as np
import pytest

from entropylens_hf import Trace
from entropylens_hf.analysis import AnalysisError, classify_trace, format_classification, knn_cross_validate
from entropylens_hf.errors import EntropyLensError


def _profiles(n, mean, rng, layers=9):
    """Noisy decreasing profiles around ``mean`` (added to every layer)."""
    base = np.linspace(6, 1, layers) + mean
    return base + rng.normal(0, 0.3, size=(n, layers))


def test_separable_classes_give_accuracy_and_roc_auc_near_one_and_a_small_p_value():
    rng = np.random.default_rng(0)
    X = np.concatenate([_profiles(60, 0.0, rng), _profiles(60, 2.0, rng)])  # 2 nats apart, noise 0.3
    y = ["short"] * 60 + ["long"] * 60
    r = knn_cross_validate(X, y, k=5, label="format")
    assert r.folds == 10 and r.note == ""
    assert r.accuracy > 0.98 and r.roc_auc > 0.98
    assert 0.3 < r.baseline_roc_auc < 0.7
    assert r.p_value < 1e-4
    assert r.classes == ("long", "short") and r.counts == (60, 60) and len(r.fold_roc_auc) == 10


def test_classes_from_the_same_distribution_give_roc_auc_near_one_half():
    # Under the null, the AUC of 400 samples (200 per class) has sd sqrt((n1+n2+1)/(12 n1 n2)) ~ 0.03;
    # averaging per-fold AUCs keeps it about there, so 0.5 +- 0.1 is a > 3 sd band.
    rng = np.random.default_rng(1)
    X = _profiles(400, 0.0, rng)
    y = ["a", "b"] * 200
    r = knn_cross_validate(X, y, k=15)
    assert abs(r.roc_auc - 0.5) < 0.1
    assert abs(r.accuracy - 0.5) < 0.1
    assert r.p_value > 0.01


def test_three_classes_use_macro_one_vs_rest_roc_auc():
    rng = np.random.default_rng(2)
    X = np.concatenate([_profiles(30, m, rng) for m in (0.0, 2.0, 4.0)])
    r = knn_cross_validate(X, ["q"] * 30 + ["c"] * 30 + ["m"] * 30)
    assert len(r.classes) == 3 and r.roc_auc > 0.98 and r.accuracy > 0.95


def test_folds_are_reduced_to_the_smallest_class_and_the_result_says_so():
    rng = np.random.default_rng(3)
    X = np.concatenate([_profiles(20, 0.0, rng), _profiles(4, 3.0, rng)])
    r = knn_cross_validate(X, ["big"] * 20 + ["rare"] * 4)
    assert r.folds == 4
    assert "4 folds instead of 10" in r.note and "'rare'" in r.note
    assert "note: 4 folds instead of 10" in format_classification(r)


def test_a_class_with_one_member_or_a_single_class_is_an_error():
    X = np.zeros((5, 3))
    with pytest.raises(AnalysisError, match="single member"):
        knn_cross_validate(X, ["a", "a", "a", "a", "b"])
    with pytest.raises(AnalysisError, match="only one class"):
        knn_cross_validate(X, ["a"] * 5)


def test_classify_trace_reads_a_recorded_trace_and_names_existing_labels_for_an_unknown_one(llama_trace):
    with Trace.open(llama_trace) as trace:
        r = classify_trace(trace, "task", windows=2, alpha=2, k=3)
        with pytest.raises(EntropyLensError, match="labels in this trace: format, task"):
            classify_trace(trace, "answer")
    assert r.n_samples == 24 and r.n_features == 2 * 3 and r.counts == (12, 12)
    assert "Rényi α=2" in r.features and "2 window means" in r.features
    assert 0.0 <= r.roc_auc <= 1.0


def test_format_classification_prints_one_row_per_result_with_baseline_and_p():
    rng = np.random.default_rng(4)
    X = np.concatenate([_profiles(30, 0.0, rng), _profiles(30, 2.0, rng)])
    a = knn_cross_validate(X, ["x"] * 30 + ["y"] * 30, label="task")
    b = knn_cross_validate(X, ["x", "y"] * 30, label="format")
    table = format_classification([a, b])
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["label", "classes", "n", "k", "folds"]
    assert lines[2].startswith("task") and lines[3].startswith("format")
    assert f"{a.roc_auc:.3f} ± {a.roc_auc_std:.3f}" in lines[2]
    assert "paired t-test" in lines[-1]


def test_the_dummy_baseline_is_at_chance_on_data_ordered_by_class():
    # Traces list prompts class by class. Guesses must differ from fold to fold, or the same
    # draw meets the same class order in every test fold. 160 samples: sd of the mean
    # accuracy under chance ~ sqrt(.25 * .75 / 160) = 0.034; the band is 3.5 sd.
    rng = np.random.default_rng(5)
    X = rng.normal(size=(160, 6))
    r = knn_cross_validate(X, np.repeat(["a", "b", "c", "d"], 40))
    assert abs(r.baseline_accuracy - 0.25) < 0.12
    assert len(set(r.baseline_fold_accuracy)) > 3
