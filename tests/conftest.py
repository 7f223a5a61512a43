import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from model_zoo import tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def llama():
    return tiny_model("llama")


@pytest.fixture
def gpt2():
    return tiny_model("gpt2")
