"""The bundled default model: a small Llama trained on the Python documentation.

Nothing can be downloaded on many machines this runs on (and in CI), so the package ships a
real trained model whose entropy profiles show real dynamics. See
``entropylens_hf/assets/default_model/README.md`` for how it was trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import EntropyLensError

__all__ = ["default_model", "default_model_path", "demo_prompts_path"]

_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def default_model_path() -> Path:
    """Folder of the bundled model (config, safetensors weights, tokenizer)."""
    path = _ASSETS / "default_model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise EntropyLensError(
            f"the bundled model is missing from {path}; reinstall entropylens-hf, or retrain it with "
            "`python tools/train_model.py --out entropylens_hf/assets/default_model`"
        )
    return path


def demo_prompts_path() -> Path:
    """JSONL of the demo prompts, labelled by kind."""
    return _ASSETS / "prompts" / "demo.jsonl"


def default_model(*, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of the bundled model, in eval mode, loaded without any network access."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True).to(device).eval()
    return model, tokenizer
