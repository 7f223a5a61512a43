"""Plain vs recorded generation on one GPU (or the CPU when there is none), per lens dtype.

Prints, for each batch size, the median wall time of plain ``model.generate`` and of recorded
generation with each lens product dtype, their ratio, and generated tokens per second, all
measured side by side (interleaved repeats). On CUDA the model runs in bfloat16 by default
(``--dtype``), so ``auto`` is a bfloat16 lens with float32 output (cuBLAS ``out_dtype``).

    python benchmarks/gpu.py [--model gpt2|smollm2|PATH] [--batches 1,8,64] [--tokens 64]
                             [--lens-dtypes auto,float32,bfloat16,float16] [--repeats 3]

On a CPU-only machine it runs the same comparison on the CPU (use small ``--batches``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from common import gpt2_small, machine, prompt_texts, real_model, timed
from entropylens_hf import EntropyLens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="gpt2 (random GPT-2-small shape), smollm2, or a folder")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="auto", help="model dtype: auto (bfloat16 on CUDA, else float32)")
    parser.add_argument("--lens-dtypes", default="auto,float32,bfloat16")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    if args.model == "gpt2":
        model, tokenizer = gpt2_small(device, getattr(torch, dtype)), None
    else:
        model, tokenizer = real_model(args.model, device=device, dtype=dtype)
    print(f"{machine()}\n{args.model} in {dtype} on {device}, {args.tokens} new tokens, "
          f"median of {args.repeats} interleaved runs")
    for batch in [int(b) for b in args.batches.split(",")]:
        if tokenizer is None:
            inputs = {"input_ids": torch.randint(100, 50000, (batch, 8), device=device)}
        else:
            inputs = dict(tokenizer(prompt_texts(tokenizer, batch), return_tensors="pt", padding=True).to(device))
        kwargs = dict(**inputs, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                      eos_token_id=None, pad_token_id=0)
        model.generate(**{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        runs = {"plain": lambda: model.generate(**kwargs)}
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.lens_dtypes.split(","):
                lens = EntropyLens(model, None, top_k=10, lens_dtype=name)
                runs[f"lens {name}"] = lambda lens=lens, name=name: lens.generate(**kwargs, trace=Path(tmp) / f"{name}.h5")
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    times[name].append(timed(fn))
        base = statistics.median(times["plain"])
        for name, values in times.items():
            med = statistics.median(values)
            print(f"batch {batch:3d}  {name:16s} {med:7.2f} s  {med / base:5.2f}x plain  "
                  f"{batch * args.tokens / med:8.1f} tokens/s")


if __name__ == "__main__":
    main()
