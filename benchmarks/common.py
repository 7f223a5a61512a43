"""Models and prompts shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForCausalLM, GPT2Config

from entropylens_hf.models import demo_prompts_path


def gpt2_small(device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """GPT-2-small shape (12 layers, d 768, vocabulary 50,257), seeded random weights."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257)
    return AutoModelForCausalLM.from_config(config).to(device, dtype).eval()


def real_model(name: str, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """A pretrained model through the package's own loader (``smollm2``, a folder, ``default``)."""
    from entropylens_hf.loading import load_model

    model, tokenizer = load_model(name, device=device, dtype=dtype)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def prompt_texts(tokenizer: Any, count: int) -> list[str]:
    """``count`` prompts cycled from the bundled demo prompts, in the chat template when there is one."""
    base = [json.loads(line)["prompt"] for line in demo_prompts_path().read_text().splitlines() if line.strip()]
    texts = [base[i % len(base)] for i in range(count)]
    if getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                               add_generation_prompt=True) for t in texts]
    return texts


def machine() -> str:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wide = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
            f"CPU flags: {' '.join(wide) or 'unknown'}, {gpu}")


def timed(fn: Callable, *args: Any, **kwargs: Any) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start
