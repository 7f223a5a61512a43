"""KL(p_final || p_layer) per lens row, from the same bounded-memory pass as the other statistics."""

import pytest
import torch
from model_zoo import VOCAB, tiny_model

from entropylens_hf.capture import ResidualCapture
from entropylens_hf.lens import LogitLens, _product_for


def _kl_to_last(logits: torch.Tensor) -> torch.Tensor:
    """Float64 KL(p_last || p_row) of logits ``[n, L, V]`` with torch's own kl_div."""
    log_p = logits.double().log_softmax(-1)
    final = log_p[:, -1:].expand_as(log_p)
    return torch.nn.functional.kl_div(log_p, final, reduction="none", log_target=True).sum(-1)


def _residuals(family, positions=5):
    model = tiny_model(family)
    lens = LogitLens.from_model(model)
    ids = torch.randint(3, VOCAB, (1, positions))
    with ResidualCapture(lens.layers, head=lens.unembedding) as cap, torch.no_grad():
        model(ids)
    return lens, torch.stack(cap.residuals, dim=2)[0], cap.head_output[0]  # [n, L, d], [n, V]


@pytest.mark.parametrize("max_logits", [100, 1000, 1 << 22])  # one token's rows in slices / several groups / one
@pytest.mark.parametrize("family", ["gpt2", "gemma2", "opt_project_out"])
@pytest.mark.parametrize("with_head", [False, True])
def test_kl_to_final_equals_float64_kl_div(family, max_logits, with_head):
    lens, residuals, head = _residuals(family)
    n, L, _ = residuals.shape
    targets = torch.randint(0, VOCAB, (n,))
    stats = lens.token_statistics(residuals[:, :-1] if with_head else residuals, top_k=3, targets=targets,
                                  head_logits=head if with_head else None, max_logits=max_logits)
    kl = stats.kl.reshape(n, L).double()
    expected = _kl_to_last(lens.project(residuals))
    torch.testing.assert_close(kl, expected, rtol=1e-4, atol=2e-5)
    assert torch.all(kl[:, -1] == 0) and kl[:, :-1].min() > 0
    # The other statistics come out of the same pass unchanged, the final row last.
    flat = lens.statistics(residuals.reshape(n * L, -1), top_k=3, targets=targets.repeat_interleave(L))
    torch.testing.assert_close(stats.entropy, flat.entropy, rtol=1e-5, atol=1e-5)
    assert torch.equal(stats.target_rank, flat.target_rank)


def test_bfloat16_lens_kl_follows_the_rounded_product():
    lens, residuals, _ = _residuals("llama", positions=6)
    n, L, _ = residuals.shape
    stats = lens.token_statistics(residuals, top_k=3, dtype=torch.bfloat16, max_logits=500)
    with torch.no_grad():
        normed = lens.normalize(residuals).to(torch.bfloat16).reshape(n * L, -1)
        logits = _product_for(normed.device, torch.bfloat16)(normed, lens.unembedding.weight.to(torch.bfloat16), None)
    expected = _kl_to_last(logits.double().reshape(n, L, -1))
    torch.testing.assert_close(stats.kl.reshape(n, L).double(), expected, rtol=1e-4, atol=2e-5)
    float32 = lens.token_statistics(residuals, top_k=3, max_logits=500).kl
    assert not torch.equal(stats.kl, float32)  # the low-precision product did run


def test_kl_can_be_left_out():
    lens, residuals, _ = _residuals("gpt2")
    stats = lens.token_statistics(residuals, top_k=3, kl=False)
    assert torch.isnan(stats.kl).all()
