import shutil

import numpy as np
import pytest

from entropylens_hf.analysis import AnalysisError, embed_2d, fingerprint_traces, plot_fingerprint


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_two_well_separated_families_land_apart_in_the_embedding(method):
    rng = np.random.default_rng(0)
    depth = np.linspace(0, 1, 20)
    a = 6 - 5 * depth + rng.normal(0, 0.2, (20, 20))              # falls steadily
    b = 6 - 5 * depth**4 + rng.normal(0, 0.2, (20, 20))           # stays high, falls late
    coords = embed_2d(np.concatenate([a, b]), method=method)
    ca, cb = coords[:20], coords[20:]
    gap = np.linalg.norm(ca.mean(0) - cb.mean(0))
    spread = max(ca.std(0).max(), cb.std(0).max())
    assert gap > 3 * spread


def test_fingerprint_of_models_of_different_depth_shares_one_feature_space(make_trace, tmp_path):
    shallow = make_trace("fp-llama.h5", family="llama", n=8)
    deep = make_trace("fp-gpt2.h5", family="gpt2", n=8, layers=5)
    result = fingerprint_traces([shallow, deep], method="pca", points=12)
    assert result.features.shape == (16, 12) and result.coords.shape == (16, 2)
    assert result.models == ("tiny-llama",) * 8 + ("tiny-gpt2",) * 8
    out = plot_fingerprint(result, tmp_path / "fp.png")
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_traces_of_the_same_model_are_told_apart_by_file_name(llama_trace, tmp_path):
    a, b = tmp_path / "same-a.h5", tmp_path / "same-b.h5"
    shutil.copy(llama_trace, a)
    shutil.copy(llama_trace, b)
    result = fingerprint_traces([a, b], method="pca", points=5)
    assert set(result.models) == {"tiny-llama (same-a.h5)", "tiny-llama (same-b.h5)"}


def test_too_few_profiles_to_embed_is_an_error():
    with pytest.raises(AnalysisError, match="at least 3 profiles"):
        embed_2d(np.zeros((2, 4)))
