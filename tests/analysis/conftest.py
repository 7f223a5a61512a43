"""Traces written by the real recorder from tiny seeded models, shared by the analysis tests."""

import math

import pytest
import torch

import transformers as tf

from model_zoo import FAMILIES

from entropylens_hf import EntropyLens


def _model(family, layers, seed):
    config = FAMILIES[family]()
    config.num_hidden_layers = layers
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # random init is near-uniform; give the lens something to see
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def _record(path, family, layers, n, new_tokens, seed, labels):
    model = _model(family, layers, seed)
    lens = EntropyLens(model, None, top_k=3, renyi_alphas=[0, 2, math.inf], model_name=f"tiny-{family}")
    ids = torch.randint(3, 128, (n, 5), generator=torch.Generator().manual_seed(seed))
    labels = labels or [{"task": "ab"[i % 2], "format": "xyz"[i % 3]} for i in range(n)]
    torch.manual_seed(seed)
    lens.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=True,
                  eos_token_id=None, pad_token_id=0, trace=path, labels=labels)
    return path


@pytest.fixture(scope="session")
def make_trace(tmp_path_factory):
    """``make_trace(name, family="llama", layers=2, n=24, new_tokens=8, seed=0, labels=None)`` -> a recorded trace's path.

    Prompts are 5 random tokens; generation samples ``new_tokens`` tokens (no EOS stop);
    default labels: ``task`` alternates a/b, ``format`` cycles x/y/z. Rényi orders 0, 2, inf.
    """
    folder = tmp_path_factory.mktemp("traces")

    def make(name, family="llama", layers=2, n=24, new_tokens=8, seed=0, labels=None):
        return _record(folder / name, family, layers, n, new_tokens, seed, labels)

    return make


@pytest.fixture(scope="session")
def llama_trace(make_trace):
    return make_trace("llama.h5")
