"""Lens product formulations: each against a float64 reference, the ``auto`` choice table, bounded logits."""

from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from entropylens_hf import EntropyLens
from entropylens_hf.lens import products
from entropylens_hf.lens.logit import LogitLens
from entropylens_hf.lens.products import PRODUCT_NAMES, auto_product, named_product
from entropylens_hf.trace import Trace

VOCAB, WIDTH, ROWS = 5000, 64, 96


@pytest.fixture(scope="module")
def lens_and_rows():
    """A lens whose logits reach about 60, as a trained model's final-normed residuals give."""
    g = torch.Generator().manual_seed(0)
    head = nn.Linear(WIDTH, VOCAB, bias=True)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, WIDTH, generator=g) * 1.5)
        head.bias.copy_(torch.randn(VOCAB, generator=g) * 0.1)
    lens = LogitLens(nn.ModuleList([nn.Identity()]), nn.Identity(), head)
    rows = torch.randn(ROWS, WIDTH, generator=g) * torch.linspace(0.2, 2.0, ROWS).unsqueeze(-1)
    targets = torch.randint(0, VOCAB, (ROWS,), generator=g)
    targets[::7] = -1
    return lens, rows, targets


def _reference(lens, rows, dtype, split=False):
    """float64 logits of the inputs rounded to ``dtype`` (the product's own inputs), and their statistics.

    A split product carries the weight as two bfloat16 parts: its weight is the float32 one (to 2**-16).
    """
    w = lens.unembedding.weight.detach()
    w = w.double() if split else w.to(dtype).double()
    z = rows.to(dtype).double() @ w.t() + lens.unembedding.bias.detach().double()
    p = z.softmax(-1)
    return z, -(p * p.clamp_min(1e-300).log()).sum(-1)


# Documented bounds (docs/performance.md): mean / max |entropy error| in nats against float64 of
# the same rounded inputs. bfloat16 on CPU rounds its output (spacing 0.25 near 60); the offset
# product rounds logits minus a near-maximum logit, so its error is far smaller.
BOUNDS = {"float32": (1e-5, 1e-4), "float16": (2e-3, 2e-2), "bfloat16": (2e-2, 0.2), "bfloat16+offset": (2e-3, 2e-2),
          "bfloat16-split+offset": (2e-3, 2e-2)}


@pytest.mark.parametrize("name", PRODUCT_NAMES)
@pytest.mark.parametrize("chunked", [False, True])
def test_each_product_meets_its_documented_bound_against_float64(lens_and_rows, name, chunked):
    lens, rows, targets = lens_and_rows
    product = named_product(name)
    max_logits = ROWS * 2048 if chunked else ROWS * VOCAB  # 3 chunks, the last partial / one chunk
    stats = lens.statistics(rows, top_k=5, targets=targets, dtype=name, max_logits=max_logits)
    z, entropy = _reference(lens, rows, product.dtype, product.split)
    error = (stats.entropy.double() - entropy).abs()
    mean_bound, max_bound = BOUNDS[name]
    assert error.mean() <= mean_bound and error.max() <= max_bound
    top1 = (stats.topk_ids[:, 0] == z.argmax(-1)).double().mean()
    assert top1 >= (1.0 if name == "float32" else 0.95)
    valid = targets >= 0
    rank = (z > z.gather(-1, targets.clamp(min=0)[:, None])).sum(-1)
    assert torch.all(stats.target_rank[~valid] == -1)
    if name == "float32":
        assert torch.equal(stats.target_rank[valid], rank[valid])
    else:  # ties within the output's rounding may move a rank by a few places among thousands
        assert (stats.target_rank[valid] - rank[valid]).abs().float().mean() <= 3


def test_offset_product_is_closer_to_float64_than_the_plain_bfloat16_product(lens_and_rows):
    lens, rows, targets = lens_and_rows
    _, entropy = _reference(lens, rows, torch.bfloat16)
    errors = {
        name: (lens.statistics(rows, top_k=1, targets=targets, dtype=name).entropy.double() - entropy).abs().mean()
        for name in ("bfloat16", "bfloat16+offset")
    }
    if named_product("bfloat16").rounds_output(torch.device("cpu")):
        assert errors["bfloat16+offset"] < errors["bfloat16"] / 3


@pytest.mark.parametrize("name", ["bfloat16+offset", "bfloat16-split+offset"])
def test_token_statistics_with_an_offset_product_match_float64_of_the_rounded_inputs(lens_and_rows, name):
    lens, rows, _ = lens_and_rows
    residuals = rows.reshape(ROWS // 4, 4, WIDTH)  # 24 tokens x 4 lens rows, the last the final row
    stats = lens.token_statistics(residuals, top_k=3, dtype=name)
    _, entropy = _reference(lens, rows, torch.bfloat16, named_product(name).split)
    error = (stats.entropy.double() - entropy).abs()
    assert error.mean() <= BOUNDS[name][0] and error.max() <= BOUNDS[name][1]
    assert torch.all(stats.kl >= 0)


@pytest.mark.parametrize(
    "device, weight, flags, cuda_out, expected",
    [
        ("cpu", torch.float32, {"avx2", "fma"}, None, "float32"),  # an AMD EPYC with AVX2 only
        ("cpu", torch.float32, {"avx2", "avx512f"}, None, "float32"),  # AVX512 without bf16
        ("cpu", torch.float32, {"avx2", "avx512f", "avx512_bf16"}, None, "bfloat16-split+offset"),
        ("cpu", torch.float32, {"avx2", "amx_bf16", "amx_tile"}, None, "bfloat16-split+offset"),
        ("cpu", torch.bfloat16, {"avx2"}, None, "bfloat16"),  # a model loaded in bfloat16 keeps its dtype
        ("cpu", torch.float16, {"amx_bf16"}, None, "float16"),
        ("cuda", torch.float32, set(), True, "bfloat16-split+offset"),
        ("cuda", torch.float32, set(), False, "float32"),
        ("mps", torch.float32, {"amx_bf16"}, None, "float32"),
    ],
)
def test_auto_picks_what_the_choice_table_says(device, weight, flags, cuda_out, expected):
    assert auto_product(device, weight, flags=flags, cuda_float32_output=cuda_out).name == expected


def test_named_product_refuses_unknown_names():
    with pytest.raises(ValueError, match="lens product must be one of float32, bfloat16, float16, bfloat16"):
        named_product("int8")


@pytest.mark.parametrize("flags, expected", [({"avx2"}, "float32"), ({"amx_bf16"}, "bfloat16-split+offset")])
def test_auto_lens_stores_the_product_it_used_with_each_run(llama, tmp_path, flags, expected):
    path = tmp_path / "t.h5"
    with mock.patch("entropylens_hf.lens.products.cpu_flags", lambda: frozenset(flags)):
        lens = EntropyLens(llama, None, lens_dtype="auto")
    lens.generate(input_ids=torch.tensor([[5, 6, 7]]), trace=path, max_new_tokens=3, do_sample=False)
    EntropyLens(llama, None).generate(input_ids=torch.tensor([[5, 6, 7]]), trace=path, max_new_tokens=3,
                                      do_sample=False)
    with Trace.open(path) as trace:
        runs = trace.runs()
    assert runs[0]["lens_product"] == expected and runs[1]["lens_product"] == "float32"
    assert runs[0]["lens_dtype"] == ("float32" if expected == "float32" else "bfloat16")


@pytest.mark.parametrize("n", [products.TRANSPOSED_ROWS.start, 100, products.TRANSPOSED_ROWS.stop - 1])
def test_the_float32_product_in_transposed_pieces_writes_every_logit_where_mm_would(n):
    """AVX2's path: vocabulary pieces of ``weight @ rows.T`` transposed into ``out``, last piece partial."""
    g = torch.Generator().manual_seed(n)
    weight, rows = torch.randn(40001, 48, generator=g), torch.randn(n, 48, generator=g)
    chunk = weight[1000:39001]  # a chunk of the vocabulary, as the lens passes it
    out = torch.full((n, chunk.shape[0]), float("nan"))
    with mock.patch("entropylens_hf.lens.products.cpu_flags", lambda: frozenset({"avx2", "fma"})), \
            mock.patch("entropylens_hf.lens.products.onednn_linear", lambda rows, weight: None):  # a build without it
        got = products.float32_product(rows, chunk, out)
    assert got is out and (products._PIECE_LOGITS // n) < chunk.shape[0]  # more than one piece
    torch.testing.assert_close(out.double(), rows.double() @ chunk.double().t(), rtol=0, atol=1e-4)


@pytest.mark.skipif(products._onednn_linear_op() is None, reason="this torch build has no oneDNN linear")
@pytest.mark.parametrize("n", [1, 18, 300])
def test_the_float32_product_through_onednn_writes_every_logit_where_mm_would(n):
    """AVX2's path where torch has oneDNN: its linear kernel, the result copied into ``out``."""
    g = torch.Generator().manual_seed(n)
    weight, rows = torch.randn(20011, 48, generator=g), torch.randn(n, 48, generator=g)
    chunk = weight[1000:19001]
    out = torch.full((n, chunk.shape[0]), float("nan"))
    calls = []
    real = products._onednn_linear_op()
    with mock.patch("entropylens_hf.lens.products.cpu_flags", lambda: frozenset({"avx2", "fma"})), \
            mock.patch("entropylens_hf.lens.products._onednn_linear_op", lambda: lambda *a: calls.append(1) or real(*a)):
        got = products.float32_product(rows, chunk, out)
        assert got is out and calls == [1]
        torch.testing.assert_close(out.double(), rows.double() @ chunk.double().t(), rtol=0, atol=1e-4)
        alone = products.float32_product(rows, chunk, None)  # no buffer: oneDNN's own result
        torch.testing.assert_close(alone, out, rtol=0, atol=0)
        torch.backends.mkldnn.enabled = False  # the user turned oneDNN off: MKL, not oneDNN
        try:
            off = products.float32_product(rows, chunk, torch.empty_like(out))
        finally:
            torch.backends.mkldnn.enabled = True
        assert len(calls) == 2
        torch.testing.assert_close(off.double(), rows.double() @ chunk.double().t(), rtol=0, atol=1e-4)


def test_onednn_linear_is_none_where_torch_lacks_the_op():
    products._onednn_linear_op.cache_clear()
    try:
        with mock.patch.object(torch.ops.mkldnn, "_linear_pointwise", new=None, create=True):
            assert products._onednn_linear_op() is None
            products._onednn_linear_op.cache_clear()
            with mock.patch("entropylens_hf.lens.products.cpu_flags", lambda: frozenset({"avx2"})):
                rows, weight = torch.randn(20, 8), torch.randn(50, 8)
                got = products.float32_product(rows, weight, torch.empty(20, 50))
            torch.testing.assert_close(got, rows @ weight.t(), rtol=1e-5, atol=1e-5)
    finally:
        products._onednn_linear_op.cache_clear()


@pytest.mark.parametrize("vocab", [1000, 49152, 262144])
@pytest.mark.parametrize("max_logits", [1 << 16, 1 << 20, 1 << 22])
def test_logits_of_a_block_stay_within_max_logits_whatever_the_vocabulary(vocab, max_logits):
    head = nn.Linear(8, vocab, bias=False)
    lens = LogitLens(nn.ModuleList([nn.Identity()]), nn.Identity(), head)
    rows, chunk = lens.block_shape(max_logits)
    assert rows * chunk <= max_logits and chunk <= vocab
    assert lens.new_workspace(max_logits).numel() == 2 * rows * chunk


@pytest.mark.parametrize("name", ["float32", "bfloat16-split+offset"])
def test_every_chunk_the_statistics_see_holds_at_most_max_logits(name):
    head = nn.Linear(16, 30000, bias=False)
    lens = LogitLens(nn.ModuleList([nn.Identity()]), nn.Identity(), head)
    max_logits = 1 << 15
    seen = []
    import entropylens_hf.lens.logit as logit_module

    real = logit_module.streaming_lens_statistics

    def spy(chunk_logits, vocab, **kw):
        def wrapped(a, b):
            z = chunk_logits(a, b)
            seen.append(z.numel())
            return z

        return real(wrapped, vocab, **kw)

    with mock.patch.object(logit_module, "streaming_lens_statistics", spy):
        lens.statistics(torch.randn(50, 16), top_k=4, dtype=name, max_logits=max_logits,
                        workspace=lens.new_workspace(max_logits))
    assert seen and max(seen) <= max_logits
    np.testing.assert_equal(sum(seen), 50 * 30000)
