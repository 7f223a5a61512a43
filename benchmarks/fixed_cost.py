"""The fixed cost of a new trace file: one ``record()`` of a one-token generation vs plain ``generate``.

Before the vocabulary was decoded once per tokenizer, every ``record()`` into a new file
decoded the whole vocabulary (seconds on a 262k vocabulary). Prints, side by side in one run:
plain generate, the first ``record()`` of a session, and later ones (a fresh EntropyLens on the
same tokenizer, a new file each time), as seconds and as the excess over plain.

    python benchmarks/fixed_cost.py --model gemma3-270m      # a fetched name or a model folder
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import machine, real_model

from entropylens_hf import EntropyLens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="a fetched name (smollm2, gemma3-270m, ...) or a model folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(machine())
    model, tokenizer = real_model(args.model)
    # One prompt token, so the lens's own work (a row per token and layer) is as small as it gets
    # and what remains above plain generate is the cost of a new file.
    first_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer("The")["input_ids"][0]
    inputs = {"input_ids": torch.tensor([[first_id]]), "attention_mask": torch.ones(1, 1, dtype=torch.long)}
    kwargs = dict(max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)

    def plain() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, **kwargs)
        return time.perf_counter() - start

    def recorded(folder: Path, i: int) -> float:
        start = time.perf_counter()
        lens = EntropyLens(model, tokenizer)  # a fresh lens each time, as a notebook cell makes one
        with lens.record(folder / f"t{i}.h5"):
            model.generate(**inputs, **kwargs)
        return time.perf_counter() - start

    plain()  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        first = recorded(Path(tmp), 0)
        plains, laters = [], []
        for i in range(args.repeats):  # interleaved, so load changes hit both alike
            plains.append(plain())
            laters.append(recorded(Path(tmp), i + 1))
    p, later = statistics.median(plains), statistics.median(laters)
    print(f"{args.model}: vocabulary {model.get_output_embeddings().weight.shape[0]}, {args.new_tokens} new token(s), "
          f"a one-token prompt, a new trace file per record()")
    print(f"  plain generate            {p:7.3f} s")
    print(f"  first record() of a run   {first:7.3f} s  (+{first - p:.3f} s)")
    print(f"  later record() (median)   {later:7.3f} s  (+{later - p:.3f} s)")


if __name__ == "__main__":
    main()
