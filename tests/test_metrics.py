"""Entropy, Rényi entropy, top-k and rank against plain float64 computations."""

import math

import numpy as np
import pytest
import torch

from entropylens_hf.metrics import EntropyScratch, entropy, exact_topk, renyi_entropy, softmax, streaming_lens_statistics, target_rank


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


def test_entropy_and_softmax_of_logits_far_below_the_maximum_match_float64():
    """Most early-layer lens logits lie hundreds of nats below the maximum; masked ones at -inf."""
    torch.manual_seed(2)
    z = -torch.rand(3, 5000) * 1500
    z[:, :30] = torch.randn(3, 30) * 3
    z[1, 2000:] = -math.inf
    z[2, :] = -88.0 + torch.rand(5000) * 2  # around the floor
    p = softmax(z)
    want = torch.softmax(z.double(), -1)
    torch.testing.assert_close(p.double(), want, rtol=1e-5, atol=1e-12)
    assert p[1, 2000:].eq(0).all() and torch.allclose(p.double().sum(-1), torch.ones(3, dtype=torch.float64))
    plogp = torch.where(want > 0, want * want.log(), torch.zeros_like(want))
    torch.testing.assert_close(entropy(z).double(), -plogp.sum(-1), rtol=1e-5, atol=1e-5)


def test_entropy_with_a_scratch_reuses_it_and_equals_float64_across_shapes():
    """The recorder's per-step entropy: the same buffers every step, new ones when the batch changes."""
    torch.manual_seed(3)
    scratch = EntropyScratch()
    z = torch.randn(2, 3000) * 5
    z[1, 100:] = -math.inf
    z[0, :2000] -= 400.0  # below the exponent floor
    want = torch.from_numpy(_reference_entropy(z.double().numpy()))
    torch.testing.assert_close(entropy(z, scratch).double(), want, rtol=1e-5, atol=1e-6)
    held = scratch.buffers(z)
    torch.testing.assert_close(entropy(z * 0.5, scratch).double(), torch.from_numpy(_reference_entropy((z * 0.5).double().numpy())),
                               rtol=1e-5, atol=1e-6)
    assert all(a is b for a, b in zip(scratch.buffers(z), held))
    one_hot = torch.full((3, 10), -math.inf)
    one_hot[:, 4] = 1.0
    assert entropy(one_hot, scratch).tolist() == [0.0, 0.0, 0.0]
    assert scratch.buffers(one_hot)[0].shape == (3, 10)
    torch.testing.assert_close(entropy(z, scratch).double(), want, rtol=1e-5, atol=1e-6)


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


def _assert_is_topk(z: torch.Tensor, k: int, values: torch.Tensor, ids: torch.Tensor) -> None:
    expected = z.topk(k, dim=-1).values
    assert torch.equal(values, expected)
    assert torch.equal(z.gather(-1, ids), values)  # the ids point at those values
    assert all(len(set(row)) == k for row in ids.tolist())  # each entry once


@pytest.mark.parametrize("width", [127, 1000, 8192, 50257])
@pytest.mark.parametrize("k", [1, 5, 10, 40])
def test_exact_topk_equals_torch_topk_on_wide_rows(width, k):
    torch.manual_seed(width + k)
    z = torch.randn(6, width) * 4
    values, ids = exact_topk(z, k)
    _assert_is_topk(z, k, values, ids)


def test_exact_topk_finds_winners_crowded_into_one_slice_or_the_tail():
    width, k = 8195, 10  # 8 slices of 1024 columns + 3 tail columns
    z = torch.randn(3, width)
    z[0, 5 + 1024 * torch.arange(8)] = 100 + torch.arange(8.0)  # 8 winners, all in slice 5
    z[0, 7] = 99.0
    z[1, -3:] = 50.0 + torch.arange(3.0)  # winners only in the tail
    z[2, :] = -math.inf  # a fully masked row
    z[2, 4000] = 1.0
    values, ids = exact_topk(z, k)
    _assert_is_topk(z, k, values, ids)
    assert set(ids[0, :8].tolist()) == set((5 + 1024 * torch.arange(8)).tolist())
    assert set(ids[1, :3].tolist()) == {width - 3, width - 2, width - 1}
    assert ids[2, 0] == 4000 and torch.isinf(values[2, 1:]).all()


@pytest.mark.parametrize("chunk", [997, 4000, 20000])
def test_streaming_statistics_on_a_realistic_vocabulary(chunk):
    torch.manual_seed(2)
    vocab = 20000
    z = torch.randn(7, vocab) * 5
    z[3, 100:] = -math.inf
    targets = torch.tensor([0, 19999, 5000, 150, -1, 12345, 7])  # row 3: a masked target
    target_logits = z.gather(-1, targets.clamp(min=0)[:, None])[:, 0]
    stats = streaming_lens_statistics(
        lambda a, b: z[:, a:b].clone(), vocab, top_k=10, target_ids=targets, target_logits=target_logits,
        alphas=[2], chunk_size=chunk,
    )
    torch.testing.assert_close(stats.entropy, entropy(z), rtol=1e-5, atol=1e-5)
    top = z.softmax(-1).topk(10, -1)
    torch.testing.assert_close(stats.topk_probs, top.values, rtol=1e-5, atol=1e-7)
    assert torch.equal(stats.topk_ids, top.indices)
    valid = targets >= 0
    assert torch.equal(stats.target_rank[valid], target_rank(z[valid], targets[valid]))
    assert stats.target_rank[3] == 100  # every unmasked token is above a masked target
    torch.testing.assert_close(stats.renyi[:, 0], renyi_entropy(z, 2.0), rtol=1e-5, atol=1e-5)


def _float64_statistics(z: torch.Tensor, targets: torch.Tensor, q: torch.Tensor, alphas) -> dict:
    """Every statistic straight from the definitions, in float64 over the whole vocabulary."""
    z = z.double()
    p = torch.softmax(z, -1)
    log_p = torch.log_softmax(z, -1)
    plogp = torch.where(p > 0, p * log_p, torch.zeros_like(p))
    renyi = []
    for a in alphas:
        if a == 0:
            renyi.append(torch.isfinite(z).sum(-1).double().log())
        elif a == 1:
            renyi.append(-plogp.sum(-1))
        elif math.isinf(a):
            renyi.append(-log_p.max(-1).values)
        else:
            renyi.append(torch.log((p**a).sum(-1)) / (1 - a))
    safe = targets.clamp(min=0)[:, None]
    higher = (z > z.gather(-1, safe)).sum(-1)
    groups = q.shape[0]
    qq = q.double().repeat_interleave(z.shape[0] // groups, 0)
    kl = torch.where(qq > 0, qq * (qq.log() - log_p), torch.zeros_like(qq)).nansum(-1)
    return dict(entropy=-plogp.sum(-1), renyi=torch.stack(renyi, -1), p=p, higher=higher,
                target_prob=p.gather(-1, safe)[:, 0], kl=kl)


def _hard_logits(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    z = torch.randn(8, vocab) * 4
    z[1, vocab // 3 :] = -math.inf  # masked tail, across chunk boundaries
    z[2, :] = -math.inf  # all masked except one token
    z[2, vocab - 2] = 0.5
    z[3, ::2] = -math.inf  # every other token masked
    z[4, :] = torch.randint(0, 4, (vocab,)).float()  # heavy ties
    z[5, 17] = z[5, vocab - 1] = z[5].max() + 1  # a tie at the top, in different chunks
    z[6, :] = 0.0  # uniform
    targets = torch.tensor([5, vocab - 1, vocab - 2, 0, 3, 17, -1, vocab // 2])  # row 3's target is masked
    return z, targets


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("vocab,chunk", [(1000, 1000), (1000, 333), (5003, 1024), (20011, 8192)])
def test_streaming_statistics_equal_float64_definitions(fused, vocab, chunk):
    z, targets = _hard_logits(vocab)
    q = torch.softmax(torch.randn(2, vocab), -1)
    q_entropy = -(q.double() * q.double().log()).sum(-1).float()
    alphas = [0, 0.5, 1, 2, 3, math.inf]
    target_logits = z.gather(-1, targets.clamp(min=0)[:, None])[:, 0]
    stats = streaming_lens_statistics(
        lambda a, b: z[:, a:b].clone(), vocab, top_k=10, target_ids=targets, target_logits=target_logits,
        alphas=alphas, chunk_size=chunk, reference=q, reference_entropy=q_entropy, fused=fused,
    )
    want = _float64_statistics(z, targets, q, alphas)
    close = dict(rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(stats.entropy.double(), want["entropy"], **close)
    torch.testing.assert_close(stats.renyi.double(), want["renyi"], **close)
    torch.testing.assert_close(stats.kl.double(), want["kl"], rtol=1e-4, atol=1e-4)
    valid = targets >= 0
    torch.testing.assert_close(stats.target_prob[valid].double(), want["target_prob"][valid], rtol=1e-5, atol=1e-9)
    assert torch.equal(stats.target_rank[valid], want["higher"][valid])
    assert stats.target_rank[~valid].eq(-1).all() and stats.target_prob[~valid].isnan().all()
    top = want["p"].topk(10, -1).values
    torch.testing.assert_close(stats.topk_probs.double(), top, rtol=1e-5, atol=1e-9)
    # Each id points at its probability (ties may pick other ids, never other values), each id once.
    torch.testing.assert_close(want["p"].gather(-1, stats.topk_ids), top, rtol=1e-5, atol=1e-9)
    assert all(len(set(row)) == 10 for row in stats.topk_ids.tolist())
    untied = [0, 1, 3, 7]
    assert torch.equal(stats.topk_ids[untied], want["p"][untied].topk(10, -1).indices)
    # One live token: entropy 0 up to the masked entries' exp floor (about 1e-36 each).
    assert stats.topk_ids[2, 0] == vocab - 2 and 0 <= stats.entropy[2] < 1e-30


@pytest.mark.parametrize("alphas", [(), (2.0,), (0.0, math.inf)])
def test_fused_statistics_equal_the_former_recurrence(alphas):
    torch.manual_seed(4)
    vocab, chunk = 30000, 4096
    z = torch.randn(12, vocab) * 5
    z[0, 1000:] = -math.inf
    targets = torch.randint(-1, vocab, (12,))
    target_logits = z.gather(-1, targets.clamp(min=0)[:, None])[:, 0]
    q = torch.softmax(torch.randn(3, vocab), -1)
    h = -(q * q.log()).sum(-1)
    both = [
        streaming_lens_statistics(lambda a, b: z[:, a:b].clone(), vocab, top_k=7, target_ids=targets,
                                  target_logits=target_logits, alphas=alphas, chunk_size=chunk, reference=q,
                                  reference_entropy=h, fused=fused)
        for fused in (False, True)
    ]
    for name in ("entropy", "topk_probs", "target_prob", "renyi", "kl"):
        torch.testing.assert_close(getattr(both[1], name), getattr(both[0], name), rtol=1e-5, atol=1e-5, equal_nan=True)
    for name in ("topk_ids", "target_rank"):
        assert torch.equal(getattr(both[1], name), getattr(both[0], name))


@pytest.mark.parametrize("fused", [True, False])
def test_statistics_of_logits_far_below_the_maximum_equal_float64_definitions(fused):
    """Early lens layers put most logits hundreds of nats below the row's maximum (Gemma 3: 98%).

    The fused pass raises exponents to a floor there (exp's slow path on CPU); a small Rényi
    order must still see those tokens as absent, not as exp(a * floor)."""
    torch.manual_seed(5)
    vocab = 9000
    z = -torch.rand(5, vocab) * 2000  # mostly far below
    z[:, :40] = torch.randn(5, 40) * 3  # a few tokens near the top
    z[1, 100:200] = -math.inf
    z[2, 40:] = -88.0 + torch.rand(vocab - 40) * 2  # just around the floor
    z[3, 1:] = -math.inf  # one live token
    z[3, 0] = 1.0
    z[4] = torch.randn(vocab) * 3 - 300  # every logit far below 0, and a whole chunk masked
    z[4, 2048:4096] = -math.inf
    targets = torch.tensor([3, 500, 7000, 0, 8000])
    q = torch.softmax(torch.randn(1, vocab), -1)
    q_entropy = -(q.double() * q.double().log()).sum(-1).float()
    alphas = [0, 0.01, 0.5, 1, 2, math.inf]
    stats = streaming_lens_statistics(
        lambda a, b: z[:, a:b].clone(), vocab, top_k=5, target_ids=targets,
        target_logits=z.gather(-1, targets[:, None])[:, 0], alphas=alphas, chunk_size=2048,
        reference=q, reference_entropy=q_entropy, fused=fused,
    )
    want = _float64_statistics(z, targets, q, alphas)
    torch.testing.assert_close(stats.entropy.double(), want["entropy"], rtol=1e-5, atol=2e-5)
    # Order 0.01 sums 9,000 terms near exp(-10) in float32: 1e-4 relative, the unfused path's too.
    torch.testing.assert_close(stats.renyi.double(), want["renyi"], rtol=2e-4, atol=2e-5)
    torch.testing.assert_close(stats.kl.double(), want["kl"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stats.target_prob.double(), want["target_prob"], rtol=1e-5, atol=1e-30)
    assert torch.equal(stats.target_rank, want["higher"])


@pytest.mark.parametrize("height", [0.0, 400.0, 3000.0])
def test_statistics_of_rows_with_large_logits_equal_float64_definitions(height):
    """Lens rows whose logits sit in the hundreds or thousands (a large residual through the final norm).

    Exponentials are taken in base 2; the logits are centred before they are scaled, so the
    float32 rounding of a large maximum does not shift the row's distribution."""
    torch.manual_seed(6)
    vocab, chunk = 20000, 4096
    z = torch.randn(4, vocab) * torch.tensor([[1.0], [4.0], [30.0], [0.2]]) + height
    z[3, 5000:9000] = -math.inf
    targets = torch.tensor([1, 17, 9999, 19999])
    q = torch.softmax(torch.randn(2, vocab), -1)
    q_entropy = -(q.double() * q.double().log()).sum(-1).float()
    alphas = [0.5, 1, 2, math.inf]
    stats = streaming_lens_statistics(
        lambda a, b: z[:, a:b].clone(), vocab, top_k=5, target_ids=targets,
        target_logits=z.gather(-1, targets[:, None])[:, 0], alphas=alphas, chunk_size=chunk,
        reference=q, reference_entropy=q_entropy,
    )
    want = _float64_statistics(z, targets, q, alphas)
    torch.testing.assert_close(stats.entropy.double(), want["entropy"], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(stats.renyi.double(), want["renyi"], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(stats.target_prob.double(), want["target_prob"], rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(stats.kl.double(), want["kl"], rtol=1e-4, atol=2e-4 * (1 + height / 100))
    plogp = torch.where(want["p"] > 0, want["p"] * want["p"].log(), torch.zeros_like(want["p"]))
    torch.testing.assert_close(entropy(z).double(), -plogp.sum(-1), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(softmax(z).double(), want["p"], rtol=1e-5, atol=1e-12)


def test_fused_statistics_without_targets_reference_or_scratch():
    z = torch.randn(3, 777)
    stats = streaming_lens_statistics(lambda a, b: z[:, a:b].clone(), 777, top_k=3, chunk_size=100)
    torch.testing.assert_close(stats.entropy, entropy(z), rtol=1e-5, atol=1e-5)
    assert stats.target_rank.eq(-1).all() and stats.kl.isnan().all() and stats.renyi.shape == (3, 0)
