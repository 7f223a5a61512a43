"""Attention-vs-MLP attribution of expansion and pruning, on profiles whose answer is known by hand."""

import numpy as np
import pytest

from entropylens_hf.analysis import (EXPANSION, PRUNING, AnalysisError, step_sites, sublayer_shares,
                                     sublayer_steps)

KINDS3 = ("emb", "attn", "mlp", "attn", "mlp", "attn", "mlp")
# Rows: emb, 1.attn, 1.mlp, 2.attn, 2.mlp, 3.attn, 3.mlp. Steps: attn +2, mlp -0.5, attn +1, mlp -3, attn 0, mlp -1.
PROFILE = np.array([1.0, 3.0, 2.5, 3.5, 0.5, 0.5, -0.5])


def test_steps_split_into_attention_and_mlp_per_layer():
    steps = sublayer_steps(PROFILE, KINDS3)
    np.testing.assert_allclose(steps.attention, [2.0, 1.0, 0.0])
    np.testing.assert_allclose(steps.mlp, [-0.5, -3.0, -1.0])


def test_pruning_sites_name_the_mlps_that_do_most_of_it():
    sites = step_sites(PROFILE, KINDS3, PRUNING, coverage=0.8)  # pruning 4.5 nats: 3.0 (2.mlp) + 1.0 (3.mlp) = 89%
    assert sites.rows == ("2.mlp", "3.mlp")
    assert sites.amount == pytest.approx(4.5) and sites.covered == pytest.approx(4 / 4.5)
    assert sites.describe() == "pruning: the MLPs of layers 2-3 (89% of 4.50 nats)"
    expansion = step_sites(PROFILE, KINDS3, EXPANSION, coverage=1.0)
    assert expansion.describe() == "expansion: the attention of layers 1-2 (100% of 3.00 nats)"
    mixed = step_sites(np.array([5.0, 4.0, 4.0, 4.0, 3.9, 2.0, 2.0]), KINDS3, PRUNING, coverage=0.9)
    assert mixed.describe() == "pruning: the attention of layers 1, 3 (97% of 3.00 nats)"


def test_a_profile_that_never_prunes_has_no_pruning_sites():
    assert step_sites(np.arange(7.0), KINDS3, PRUNING).describe() == "pruning: none"


def test_shares_of_expansion_and_pruning_by_attention():
    other = np.array([1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0])  # attn 0, 0, -1; mlp +1, 0, 0
    shares = sublayer_shares(np.stack([PROFILE, other]), KINDS3)
    assert shares.expansion_attention == pytest.approx(3.0 / 4.0)  # attention 3 of 4 nats of expansion
    assert shares.pruning_attention == pytest.approx(1.0 / 5.5)  # attention 1 of 5.5 nats of pruning
    np.testing.assert_allclose(shares.mean_attention, [1.0, 0.5, -0.5])
    np.testing.assert_allclose(shares.mean_mlp, [0.25, -1.5, -0.5])
    assert shares.expansion == pytest.approx(2.0) and shares.pruning == pytest.approx(2.75) and shares.count == 2


def test_whole_layer_profiles_are_refused_saying_to_record_sublayers():
    with pytest.raises(AnalysisError, match="--sublayers"):
        sublayer_steps(np.zeros(4), ("emb", "layer", "layer", "layer"))
