"""Attention-vs-MLP attribution of expansion and pruning, on profiles whose answer is known by hand."""

import numpy as np
from entropylens_hf import SequenceRecord
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


def _hand_trace(path):
    """A sub-layer trace (3 layers) written by hand: group a's tokens all have PROFILE, group b's OTHER."""
    from entropylens_hf import TraceMetadata, TraceWriter
    from entropylens_hf.sublayers import lens_rows

    names, kinds = lens_rows(3, sublayers=True)
    meta = TraceMetadata(model_name="hand", num_layers=7, layer_names=names, layer_kinds=kinds, vocab_size=50, top_k=1)
    records = []
    for i, (profile, group) in enumerate([(PROFILE, "a"), (OTHER, "b"), (PROFILE, "a")]):
        n = 4  # 2 prompt rows (entropy 9: must not count) + 2 generated rows
        entropy = np.stack([np.full(7, 9.0), np.full(7, 9.0), profile, profile]).astype(np.float32)
        records.append(SequenceRecord(
            token_ids=np.arange(n + 1), token_texts=tuple("x" * (n + 1)), prompt_length=3, entropy=entropy,
            topk_ids=np.zeros((n, 7, 1), np.int64), topk_probs=np.zeros((n, 7, 1), np.float32),
            target_prob=np.full((n, 7), 0.5, np.float32), target_rank=np.zeros((n, 7), np.int64),
            output_entropy=np.zeros(n, np.float32), renyi=np.zeros((n, 0, 7), np.float32), labels={"task": group}))
    with TraceWriter(path, meta) as writer:
        writer.write(records)
    return path


OTHER = np.array([1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0])


def test_shares_per_label_group_of_a_hand_built_trace(tmp_path):
    from entropylens_hf import Trace
    from entropylens_hf.analysis import profile_matrix, trace_sublayer_shares

    with Trace.open(_hand_trace(tmp_path / "t.h5")) as trace:
        groups = trace_sublayer_shares(trace, "task")
        overall = trace_sublayer_shares(trace)["all"]
        whole = profile_matrix(trace)
        everything = profile_matrix(trace, sublayers=True)
    assert set(groups) == {"a", "b"} and groups["a"].count == 4 and groups["b"].count == 2
    assert groups["a"].expansion_attention == pytest.approx(1.0)  # PROFILE expands only in attention
    assert groups["a"].pruning_attention == pytest.approx(0.0)  # and prunes only in MLPs
    assert groups["b"].expansion_attention == pytest.approx(0.0) and groups["b"].pruning_attention == pytest.approx(1.0)
    # All tokens: expansion 4 x 3 (attention) + 2 x 1 (MLP); pruning 4 x 4.5 (MLP) + 2 x 1 (attention).
    assert overall.expansion_attention == pytest.approx(12 / 14) and overall.pruning_attention == pytest.approx(2 / 20)
    # Other analyses read the whole-layer profile of a sub-layer trace: rows emb, 1.mlp, 2.mlp, 3.mlp.
    np.testing.assert_allclose(whole.features[0], PROFILE[[0, 2, 4, 6]])
    assert whole.num_layers == 4 and everything.num_layers == 7


def test_sublayers_command_prints_shares_and_pruning_sites(tmp_path, capsys):
    from entropylens_hf.cli import main

    path = _hand_trace(tmp_path / "t.h5")
    assert main(["sublayers", str(path), "--label", "task"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:3]}
    assert rows == {"a": ["4", "3.000n", "100.0%", "4.500n", "0.0%"], "b": ["2", "1.000n", "0.0%", "1.000n", "100.0%"]}
    assert "pruning sites" in out and "2.mlp 67%, 3.mlp 67%" in out  # the 4 PROFILE tokens of 6
    assert main(["sublayers", str(path)]) == 0
    # Layer 2: attention +1 for the 4 PROFILE tokens and 0 for the 2 OTHER ones; MLP -3 and 0.
    assert "layer   2  +0.667 / -2.000" in capsys.readouterr().out


def test_sublayers_command_on_a_whole_layer_trace_says_to_record_sublayers(llama_trace, capsys):
    from entropylens_hf.cli import main

    assert main(["sublayers", str(llama_trace)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "record with --sublayers" in err
