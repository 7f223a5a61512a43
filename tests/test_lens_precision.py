"""Low-precision lens products: measured accuracy against float32, pinned so a regression fails.

The bounds come from the bundled (trained) model on the 10 demo prompts, 24 new tokens each:
1,939 lens rows, measured on CPU 2026-11-28 against the float32 lens: bfloat16 mean |entropy
error| 0.0053 nats (max 0.039), top-1 agreement 98.2%, same target rank 86.3%; float16 0.00067
nats (max 0.0053), 99.3%, 95.8%. ``benchmarks/accuracy.py`` measures larger runs and real models.
"""

import json

import numpy as np
import pytest
import torch

from entropylens_hf import EntropyLens
from entropylens_hf.lens.logit import _product_for, _low_precision_output
from entropylens_hf.models import default_model, demo_prompts_path


@pytest.fixture(scope="module")
def bundled():
    model, tokenizer = default_model()
    prompts = [json.loads(line)["prompt"] for line in demo_prompts_path().read_text().splitlines() if line.strip()]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = dict(**inputs, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    _, reference = EntropyLens(model, tokenizer).generate(**kwargs)
    return model, tokenizer, kwargs, reference


def _errors(records, reference):
    ent = np.concatenate([a.entropy - b.entropy for a, b in zip(records, reference)])
    top1 = np.concatenate([a.topk_ids[..., 0] == b.topk_ids[..., 0] for a, b in zip(records, reference)])
    rank = np.concatenate([a.target_rank == b.target_rank for a, b in zip(records, reference)])
    return np.abs(ent).mean(), np.abs(ent).max(), top1.mean(), rank.mean()


@pytest.mark.parametrize(
    "lens_dtype, mean_error, max_error, top1, rank",
    [(torch.bfloat16, 0.008, 0.06, 0.975, 0.83), (torch.float16, 0.001, 0.008, 0.985, 0.93)],
)
def test_low_precision_lens_stays_within_the_measured_bounds_of_float32(bundled, lens_dtype, mean_error, max_error,
                                                                         top1, rank):
    model, tokenizer, kwargs, reference = bundled
    _, records = EntropyLens(model, tokenizer, lens_dtype=lens_dtype).generate(**kwargs)
    assert [r.token_ids.tolist() for r in records] == [r.token_ids.tolist() for r in reference]
    mean, worst, same_top1, same_rank = _errors(records, reference)
    assert 0 < mean <= mean_error and worst <= max_error  # 0 <: the low-precision product did run
    assert same_top1 >= top1 and same_rank >= rank
    # The model's own logits give the last layer of generated rows: exact in any lens dtype.
    for a, b in zip(records, reference):
        np.testing.assert_allclose(a.entropy[a.is_generated, -1], b.entropy[b.is_generated, -1], rtol=1e-6, atol=1e-6)


def test_bfloat16_lens_statistics_follow_the_rounded_product_exactly(bundled):
    model = bundled[0]
    lens = EntropyLens(model, None).lens
    rows = torch.randn(40, model.config.hidden_size) * 3
    targets = torch.randint(0, lens.vocab_size, (40,))
    stats = lens.statistics(rows, top_k=5, targets=targets, dtype=torch.bfloat16, max_logits=40 * 2048)
    product = _product_for(rows.device, torch.bfloat16)
    with torch.no_grad():
        normed = lens.normalize(rows).to(torch.bfloat16)
        logits = product(normed, lens.unembedding.weight.to(torch.bfloat16), None).double()
    if product is _low_precision_output:  # CPU: the target's logit is rounded like the product's output
        assert logits.dtype == torch.float64 and torch.equal(logits, logits.to(torch.bfloat16).double())
    probs = logits.softmax(-1)
    np.testing.assert_allclose(stats.entropy.numpy(), -(probs * probs.clamp_min(1e-300).log()).sum(-1).numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.target_prob.numpy(), probs.gather(-1, targets[:, None])[:, 0].numpy(), rtol=1e-4)
    np.testing.assert_array_equal(stats.target_rank.numpy(), (logits > logits.gather(-1, targets[:, None])).sum(-1))
