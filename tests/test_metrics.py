"""Entropy, Rényi entropy, top-k and rank against plain float64 computations."""

import math

import numpy as np
import pytest
import torch

from entropylens_hf.metrics import entropy, renyi_entropy, streaming_lens_statistics, target_rank


def _reference_entropy(z: np.ndarray) -> np.ndarray:
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.array([-sum(x * math.log(x) for x in row if x > 0) for row in p])


def test_entropy_matches_float64_loop():
    z = torch.randn(6, 50) * 4
    np.testing.assert_allclose(entropy(z).numpy(), _reference_entropy(z.double().numpy()), rtol=1e-5)


def test_entropy_of_uniform_is_log_v_and_of_one_hot_is_zero():
    assert entropy(torch.zeros(1, 1000)).item() == pytest.approx(math.log(1000), rel=1e-6)
    z = torch.full((1, 10), -math.inf)
    z[0, 3] = 0.0
    assert entropy(z).item() == 0.0


@pytest.mark.parametrize("alpha", [0.5, 2.0, 3.0])
def test_renyi_matches_definition(alpha):
    z = torch.randn(4, 30).double()
    p = z.softmax(-1)
    expected = torch.log((p**alpha).sum(-1)) / (1 - alpha)
    torch.testing.assert_close(renyi_entropy(z, alpha).double(), expected, rtol=1e-5, atol=1e-6)


def test_renyi_limits():
    z = torch.randn(3, 40)
    torch.testing.assert_close(renyi_entropy(z, 1.0), entropy(z))
    torch.testing.assert_close(renyi_entropy(z, math.inf), -z.log_softmax(-1).max(-1).values)
    torch.testing.assert_close(renyi_entropy(z, 0.0), torch.full((3,), math.log(40)))


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_streaming_statistics_equal_one_shot_for_any_chunk_size(chunk):
    torch.manual_seed(1)
    z = torch.randn(5, 100) * 3
    z[2, 40:] = -math.inf  # masked vocabulary (e.g. after top-k warping)
    targets = torch.tensor([3, 41, 0, -1, 99])
    target_logits = z.gather(-1, targets.clamp(min=0)[:, None])[:, 0]
    stats = streaming_lens_statistics(
        lambda a, b: z[:, a:b].clone(), 100, top_k=4, target_ids=targets, target_logits=target_logits,
        alphas=[0, 1, 2, math.inf], chunk_size=chunk,
    )
    torch.testing.assert_close(stats.entropy, entropy(z), rtol=1e-5, atol=1e-5)
    p = z.softmax(-1)
    top = p.topk(4, -1)
    torch.testing.assert_close(stats.topk_probs, top.values, rtol=1e-5, atol=1e-7)
    assert torch.equal(stats.topk_ids[:, 0], top.indices[:, 0])
    valid = targets >= 0
    torch.testing.assert_close(stats.target_prob[valid], p[valid].gather(-1, targets[valid, None])[:, 0])
    assert torch.isnan(stats.target_prob[3]) and stats.target_rank[3] == -1
    assert torch.equal(stats.target_rank[valid], target_rank(z[valid], targets[valid]))
    expected_renyi = torch.stack([renyi_entropy(z, a) for a in (0, 1, 2, math.inf)], -1)
    torch.testing.assert_close(stats.renyi, expected_renyi, rtol=1e-5, atol=1e-5)


def test_rank_does_not_count_the_target_itself_when_its_logit_differs_by_rounding():
    z = torch.tensor([[1.0, 2.0, 3.0]])
    slightly_low = torch.tensor([2.0 - 1e-7])  # as if gathered by another kernel
    stats = streaming_lens_statistics(lambda a, b: z[:, a:b].clone(), 3, top_k=1, target_ids=torch.tensor([1]),
                                      target_logits=slightly_low, chunk_size=2)
    assert stats.target_rank.item() == 1
