"""KL(p_final || p_layer) per lens row, from the same bounded-memory pass as the other statistics."""

import numpy as np
import pytest
import torch
from model_zoo import VOCAB, tiny_model

from entropylens_hf.capture import ResidualCapture
from entropylens_hf.lens.logit import LogitLens, _product_for


def _kl_to_last(logits: torch.Tensor) -> torch.Tensor:
    """Float64 KL(p_last || p_row) of logits ``[n, L, V]`` with torch's own kl_div."""
    log_p = logits.double().log_softmax(-1)
    final = log_p[:, -1:].expand_as(log_p)
    return torch.nn.functional.kl_div(log_p, final, reduction="none", log_target=True).sum(-1)


def _peaked(family):
    """A tiny model whose distributions are far from uniform (random ones are nearly so: KL ~ 1e-3)."""
    model = tiny_model(family)
    head, norm = model.get_output_embeddings(), LogitLens.from_model(model).final_norm
    with torch.no_grad():  # logits x30: through the head, or through the final norm where the head is tied
        if head.weight is not model.get_input_embeddings().weight:
            head.weight.mul_(30)
        elif "Gemma" in type(norm).__name__:  # x * (1 + weight)
            norm.weight.copy_(30 * (1 + norm.weight) - 1)
        else:
            norm.weight.mul_(30)
            if getattr(norm, "bias", None) is not None:
                norm.bias.mul_(30)
    return model


def _residuals(family, positions=5):
    model = _peaked(family)
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


# bfloat16: the lens product rounds its inputs (and on CPU its output) to 8 bits of mantissa;
# measured max error 0.06 nats on KLs up to 6 nats.
@pytest.mark.parametrize("family, lens_dtype, rtol, atol", [("llama", None, 1e-4, 2e-5), ("gpt2", None, 1e-4, 2e-5),
                                                            ("llama", torch.bfloat16, 5e-2, 2e-2)])
def test_recorded_kl_final_equals_float64_kl_of_a_full_forward(family, lens_dtype, rtol, atol, tmp_path):
    from entropylens_hf import EntropyLens, Trace

    model = _peaked(family)
    lens = EntropyLens(model, None, top_k=3, lens_dtype=lens_dtype)
    prompt = torch.tensor([[5, 9, 17, 33, 4]])
    lens.generate(input_ids=prompt, max_new_tokens=4, eos_token_id=None, pad_token_id=0, do_sample=False,
                  trace=tmp_path / "t.h5")
    with Trace.open(tmp_path / "t.h5") as trace:
        rec = trace[0]
    ids = torch.as_tensor(rec.token_ids)[None]
    decoder = model.get_decoder()
    norm = decoder.norm if hasattr(decoder, "norm") else decoder.ln_f
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        hidden = out.hidden_states[:-1]  # the last one is already normed: the model's logits stand for it
        logits = torch.stack([model.get_output_embeddings()(norm(h)) for h in hidden] + [out.logits], dim=2)[0, :-1]
    expected = _kl_to_last(logits)  # [rows, L], prompt rows included
    assert rec.kl_final.shape == expected.shape and (~rec.is_generated).sum() == 4
    assert expected[:, :-1].mean() > 0.5  # distributions far apart: a real test of the KL
    np.testing.assert_allclose(rec.kl_final, expected.numpy(), rtol=rtol, atol=atol)
    assert (rec.kl_final[:, -1] == 0).all()
