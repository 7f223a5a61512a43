"""Cost of recording through a tuned lens against the logit lens, side by side in one run.

For the bundled model (and SmolLM2 with ``--smollm2-lens FILE``): the demo prompts as one
batch, greedy, ``--tokens`` new tokens; plain ``generate``, recording through the logit lens,
recording through the tuned lens. Runs are interleaved and the median of ``--repeats`` is
reported with its ratio to plain generate.

    OMP_NUM_THREADS=1 python benchmarks/tuned_lens.py [--tokens 32] [--repeats 3] [--smollm2-lens FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from entropylens_hf import EntropyLens, TunedLens, default_model
from entropylens_hf.models import default_model_path, demo_prompts_path
from entropylens_hf.prompts import read_prompts


def measure(name: str, model, tokenizer, tuned: TunedLens, tokens: int, repeats: int) -> None:
    texts = [p.text for p in read_prompts(demo_prompts_path())]
    inputs = tokenizer(texts, return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    logit, tuned_lens = EntropyLens(model, tokenizer), EntropyLens(model, tokenizer, lens=tuned)
    runs = {
        "plain generate": lambda: model.generate(**inputs, **kwargs),
        "logit lens": lambda: logit.generate(**inputs, **kwargs),
        "tuned lens": lambda: tuned_lens.generate(**inputs, **kwargs),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for _ in range(repeats):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
    base = statistics.median(times["plain generate"])
    print(f"{name}: batch {len(texts)}, {tokens} new tokens, median of {repeats}")
    for key, values in times.items():
        median = statistics.median(values)
        print(f"  {key:<15} {median:7.2f} s  {median / base:5.2f}x plain  "
              f"({median / statistics.median(times['logit lens']):.2f}x the logit lens)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smollm2-lens", default=None)
    args = parser.parse_args()
    model, tokenizer = default_model()
    measure("bundled model", model, tokenizer, TunedLens.load(default_model_path() / "tuned_lens.safetensors"),
            args.tokens, args.repeats)
    if args.smollm2_lens:
        from entropylens_hf import smollm2

        model, tokenizer = smollm2()
        measure("SmolLM2-135M-Instruct", model, tokenizer, TunedLens.load(args.smollm2_lens), args.tokens, args.repeats)


if __name__ == "__main__":
    main()
