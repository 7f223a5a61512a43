import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from model_zoo import tiny_model  # noqa: E402

from entropylens_hf import EntropyLens  # noqa: E402


@pytest.fixture(scope="session")
def recorded_trace(tmp_path_factory):
    """A trace written by the real recorder: 3 sequences of a tiny Llama with labels."""
    path = tmp_path_factory.mktemp("traces") / "llama.h5"
    model = tiny_model("llama")
    lens = EntropyLens(model, None, top_k=5)
    prompts = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]])
    lens.generate(input_ids=prompts, max_new_tokens=10, eos_token_id=None, pad_token_id=0, trace=path,
                  labels=[{"task": "qa"}, {"task": "code"}, {"task": "qa"}])
    return path


@pytest.fixture(scope="session")
def deeper_trace(tmp_path_factory):
    """A trace of a 4-layer GPT-2, for comparisons across depths."""
    path = tmp_path_factory.mktemp("traces") / "gpt2.h5"
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(GPT2Config(n_layer=4, n_embd=32, n_head=4, vocab_size=128)).eval()
    EntropyLens(model, None).generate(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=6, eos_token_id=None,
                                      pad_token_id=0, trace=path)
    return path
