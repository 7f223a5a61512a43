"""The logit lens must reproduce each family's own logits at the last layer."""

import pytest
import torch
from model_zoo import FAMILIES, VOCAB, tiny_model
from torch import nn

from entropylens_hf.capture import ResidualCapture
from entropylens_hf.errors import UnsupportedModelError
from entropylens_hf.lens import LogitLens
from entropylens_hf.metrics import entropy, target_rank


def _run(model, ids):
    lens = LogitLens.from_model(model)
    with ResidualCapture(lens.layers) as cap, torch.no_grad():
        out = model(ids, output_hidden_states=True)
    return lens, cap.residuals, out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lens_at_last_layer_reproduces_model_logits(family):
    model = tiny_model(family)
    ids = torch.randint(3, VOCAB, (2, 7))
    lens, residuals, out = _run(model, ids)
    assert lens.num_layers == model.config.get_text_config().num_hidden_layers + 1
    torch.testing.assert_close(lens.project(residuals[-1]), out.logits.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_captured_residuals_are_the_models_hidden_states(family):
    model = tiny_model(family)
    ids = torch.randint(3, VOCAB, (1, 5))
    _, residuals, out = _run(model, ids)
    # hidden_states[-1] is already final-normed by transformers; all others are raw residuals.
    for layer in range(len(residuals) - 1):
        torch.testing.assert_close(residuals[layer], out.hidden_states[layer])


@pytest.mark.parametrize("max_logits", [100, 300, 1 << 24])  # vocabulary split / row blocks / one block
@pytest.mark.parametrize("family", ["gpt2", "phi", "gemma2", "cohere", "granite", "opt_project_out"])
@pytest.mark.parametrize("reuse_workspace", [False, True])
def test_bounded_memory_statistics_equal_full_logits_computation(family, max_logits, reuse_workspace):
    model = tiny_model(family)
    ids = torch.randint(3, VOCAB, (1, 6))
    lens, residuals, _ = _run(model, ids)
    rows = torch.cat([r[0] for r in residuals])  # [(L) * positions, d]
    targets = torch.randint(0, VOCAB, (rows.shape[0],))
    workspace = lens.new_workspace(max_logits) if reuse_workspace else None
    if workspace is not None:
        workspace.fill_(float("nan"))  # leftovers must never leak into results
    stats = lens.statistics(rows, top_k=5, targets=targets, alphas=[0, 2, float("inf")], max_logits=max_logits,
                            workspace=workspace)
    logits = lens.project(rows).double()
    torch.testing.assert_close(stats.entropy.double(), entropy(logits), rtol=1e-4, atol=1e-4)
    probs = logits.softmax(-1)
    top = probs.topk(5, dim=-1)
    torch.testing.assert_close(stats.topk_probs.double(), top.values, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats.target_prob.double(), probs.gather(-1, targets[:, None])[:, 0], rtol=1e-4, atol=1e-7)
    assert torch.equal(stats.target_rank, target_rank(logits, targets))
    torch.testing.assert_close(stats.renyi[:, 2].double(), -probs.max(-1).values.log(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("vocab", [128, 50257, 262144])
@pytest.mark.parametrize("max_logits", [1, 100, 5000, 1 << 22, 1 << 26])
def test_blocks_never_exceed_the_logits_budget(vocab, max_logits):
    lens = LogitLens(nn.ModuleList(), nn.Identity(), nn.Linear(4, vocab, bias=False))
    rows, chunk = lens.block_shape(max_logits)
    assert rows >= 1 and 1 <= chunk <= vocab
    assert rows * chunk <= max(max_logits, 1)
    if max_logits >= 512 * vocab:  # a small vocabulary is never split
        assert chunk == vocab


def test_unknown_model_error_names_what_is_missing_and_what_to_pass(llama):
    # Two norm-like children with unfamiliar names: the lens cannot tell which is final.
    decoder = llama.get_decoder()
    decoder.post_norm_a = decoder.norm
    decoder.post_norm_b = nn.LayerNorm(32)
    del decoder.norm
    with pytest.raises(UnsupportedModelError) as info:
        LogitLens.from_model(llama)
    message = str(info.value)
    assert "LlamaForCausalLM" in message and "post_norm_a" in message and "final_norm=" in message
    lens = LogitLens.from_model(llama, final_norm=decoder.post_norm_a)
    assert lens.final_norm is decoder.post_norm_a


def test_model_without_output_embeddings_is_refused_with_the_argument_to_pass(gpt2):
    gpt2.get_output_embeddings = lambda: None
    with pytest.raises(UnsupportedModelError, match="unembedding="):
        LogitLens.from_model(gpt2)


def test_hooks_are_removed_when_the_forward_raises(gpt2):
    lens = LogitLens.from_model(gpt2)
    with pytest.raises(RuntimeError):
        with ResidualCapture(lens.layers):
            raise RuntimeError("boom")
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in lens.layers)
