import math

import numpy as np
import pytest

from entropylens_hf import Trace
from entropylens_hf.analysis import (AnalysisError, group_profiles, normalized_depth, profile_matrix, rescale_depth,
                                     sequence_profile, token_profiles, window_means)


def test_window_means_equal_a_hand_computation():
    # 7 tokens, 3 windows: sizes 3, 2, 2 (np.array_split), each mean computed by hand.
    profiles = np.arange(7 * 2, dtype=float).reshape(7, 2)  # row t = [2t, 2t+1]
    expected = np.array([
        (0 + 2 + 4) / 3, (1 + 3 + 5) / 3,   # tokens 0, 1, 2
        (6 + 8) / 2, (7 + 9) / 2,           # tokens 3, 4
        (10 + 12) / 2, (11 + 13) / 2,       # tokens 5, 6
    ])
    np.testing.assert_allclose(window_means(profiles, 3), expected)
    np.testing.assert_allclose(window_means(profiles, 1), profiles.mean(axis=0))


def test_window_means_refuse_more_windows_than_tokens():
    with pytest.raises(AnalysisError, match="cannot fill 4 windows"):
        window_means(np.zeros((3, 5)), 4)


def test_token_profiles_select_generated_prompt_or_all_rows(llama_trace):
    with Trace.open(llama_trace) as trace:
        record = trace[0]
    generated = token_profiles(record)
    prompt = token_profiles(record, rows="prompt")
    assert generated.shape == (record.n_generated, record.entropy.shape[1])
    np.testing.assert_array_equal(np.concatenate([prompt, generated]), token_profiles(record, rows="all"))
    np.testing.assert_allclose(generated, record.entropy[record.prompt_length - record.first_target :])


def test_alpha_selects_the_recorded_renyi_profile(llama_trace):
    with Trace.open(llama_trace) as trace:
        record = trace[3]
    gen = record.is_generated
    for j, alpha in enumerate(record.renyi_alphas):
        np.testing.assert_allclose(token_profiles(record, alpha=alpha), record.renyi[gen, j, :])
    np.testing.assert_allclose(token_profiles(record, alpha=1), record.entropy[gen])
    # min-entropy <= Shannon <= Hartley (log support size), elementwise
    assert np.all(token_profiles(record, alpha=math.inf) <= token_profiles(record) + 1e-5)
    assert np.all(token_profiles(record) <= token_profiles(record, alpha=0) + 1e-5)
    with pytest.raises(AnalysisError, match="Rényi order 3"):
        token_profiles(record, alpha=3)


def test_sequence_profile_is_the_mean_or_the_window_means_of_generated_rows(llama_trace):
    with Trace.open(llama_trace) as trace:
        record = trace[1]
    generated = record.entropy[record.is_generated].astype(float)
    np.testing.assert_allclose(sequence_profile(record), generated.mean(axis=0))
    halves = np.concatenate([generated[:4].mean(axis=0), generated[4:].mean(axis=0)])  # 8 tokens, 2 windows
    np.testing.assert_allclose(sequence_profile(record, windows=2), halves)


def test_profile_matrix_skips_sequences_too_short_for_the_windows(make_trace):
    path = make_trace("short.h5", n=4, new_tokens=3)
    with Trace.open(path) as trace:
        ok = profile_matrix(trace, windows=3)
        too_many = profile_matrix(trace, windows=4)
        labels = trace.labels
    assert ok.features.shape == (4, 3 * 3) and ok.skipped == ()
    assert too_many.features.shape == (0, 4 * 3) and too_many.skipped == (0, 1, 2, 3)
    assert list(ok.label_values("task")) == [lab["task"] for lab in labels]


def test_group_profiles_give_mean_std_and_count_per_group():
    profiles = np.array([[1.0, 2.0], [3.0, 6.0], [10.0, 10.0]])
    groups = group_profiles(profiles, ["a", "a", "b"])
    assert list(groups) == ["a", "b"]
    np.testing.assert_allclose(groups["a"].mean, [2.0, 4.0])
    np.testing.assert_allclose(groups["a"].std, [math.sqrt(2), math.sqrt(8)])  # sample std (ddof=1)
    assert groups["a"].count == 2 and groups["b"].count == 1
    np.testing.assert_allclose(groups["b"].std, [0.0, 0.0])


def _smooth(x):
    return np.sin(3 * x) + x**2


def test_depth_rescaling_reproduces_the_function_a_profile_was_sampled_from():
    # Linear interpolation of samples spaced h apart errs by at most h^2/8 * max|f''|;
    # for f = sin(3x) + x^2, |f''| <= 9 + 2.
    for layers in (7, 13, 49):
        profile = _smooth(normalized_depth(layers))
        bound = (1 / (layers - 1)) ** 2 / 8 * 11
        got = rescale_depth(profile, 101)
        np.testing.assert_allclose(got, _smooth(np.linspace(0, 1, 101)), atol=bound, rtol=0)
        assert got[0] == profile[0] and got[-1] == profile[-1]


def test_depth_rescaling_is_exact_for_linear_profiles_and_works_on_leading_axes():
    depth = normalized_depth(5)
    profiles = np.stack([2 * depth + 1, -depth])  # [2, 5]
    np.testing.assert_allclose(rescale_depth(profiles, 9), np.stack([2 * np.linspace(0, 1, 9) + 1, -np.linspace(0, 1, 9)]))


def test_depth_rescaling_makes_models_of_different_depth_comparable():
    shallow, deep = _smooth(normalized_depth(9)), _smooth(normalized_depth(25))
    assert np.abs(rescale_depth(shallow, 20) - rescale_depth(deep, 20)).max() < (1 / 8) ** 2 / 8 * 11 * 2


def test_profile_matrix_with_depth_points_has_the_same_width_for_any_depth(make_trace):
    with Trace.open(make_trace("gpt2.h5", family="gpt2", n=6)) as trace:
        rescaled = profile_matrix(trace, depth_points=10, windows=2)
        raw = profile_matrix(trace, windows=2)
    assert rescaled.features.shape == (6, 20)
    # window boundaries keep the first and last depth values
    np.testing.assert_allclose(rescaled.features[:, [0, 9, 10, 19]], raw.features[:, [0, 2, 3, 5]])
