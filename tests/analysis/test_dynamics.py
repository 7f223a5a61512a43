import numpy as np
import pytest

from entropylens_hf.analysis import (EXPANSION, PRUNING, entropy_steps, extreme_layers, group_dynamics, layer_dynamics,
                                     step_kinds, top_layers)


def _planted(n_tokens=50, layers=12, expand_at=4, prune_at=9, seed=0):
    """Token profiles drifting slowly down, with a +2 nat step caused by layers[expand_at]
    and a -3 nat step caused by layers[prune_at] (i.e. between lens layers i and i+1)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(-0.05, 0.05, size=(n_tokens, layers))
    steps[:, expand_at] += 2.0
    steps[:, prune_at] -= 3.0
    start = rng.uniform(5, 6, size=(n_tokens, 1))
    return np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1)  # [n, layers + 1]


def test_a_planted_expansion_and_pruning_layer_are_found_per_token_and_for_the_group():
    profiles = _planted()
    expansion, pruning = extreme_layers(profiles)
    assert (expansion == 4).all() and (pruning == 9).all()
    dyn = layer_dynamics(profiles)
    assert dyn.expansion_layer == 4 and dyn.pruning_layer == 9
    assert dyn.expansion_counts[4] == 50 and dyn.pruning_counts[9] == 50
    assert dyn.expansion_fraction[4] == 1.0 and dyn.expansion_fraction[9] == 0.0
    assert dyn.count == 50 and dyn.mean_steps.shape == (12,)


def test_step_i_is_the_change_made_by_decoder_layer_i():
    # lens layers: embeddings=1.0, after layers[0]=1.5, after layers[1]=0.5
    profile = np.array([1.0, 1.5, 0.5])
    np.testing.assert_allclose(entropy_steps(profile), [0.5, -1.0])
    np.testing.assert_array_equal(step_kinds(entropy_steps(profile)), [EXPANSION, PRUNING])
    assert extreme_layers(profile) == (0, 1)


def test_a_profile_without_expansion_reports_minus_one():
    expansion, pruning = extreme_layers(np.array([[3.0, 2.0, 1.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_array_equal(expansion, [-1, -1])
    np.testing.assert_array_equal(pruning, [0, -1])  # first row: two equal steps of -1; the first wins


def test_top_layers_orders_strongest_first_and_fills_up_to_n():
    profile = np.array([0.0, 1.0, 3.0, 2.9, 0.0])  # steps +1, +2, -0.1, -2.9
    np.testing.assert_array_equal(top_layers(profile, 2, EXPANSION), [1, 0])
    np.testing.assert_array_equal(top_layers(profile, 3, EXPANSION), [1, 0, 2])  # only 2 expand; the next follows
    np.testing.assert_array_equal(top_layers(profile, 2, PRUNING), [3, 2])
    with pytest.raises(ValueError, match="between 0 and"):
        top_layers(profile, 5, EXPANSION)


def test_group_dynamics_find_each_groups_planted_layer():
    profiles = np.concatenate([_planted(expand_at=2, prune_at=5), _planted(expand_at=7, prune_at=1, seed=1)])
    groups = ["qa"] * 50 + ["code"] * 50
    dyn = group_dynamics(profiles, groups)
    assert (dyn["qa"].expansion_layer, dyn["qa"].pruning_layer) == (2, 5)
    assert (dyn["code"].expansion_layer, dyn["code"].pruning_layer) == (7, 1)
