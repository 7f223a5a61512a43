"""The statistics pass alone: streaming_lens_statistics, former (fused=False) against fused, side by side.

Times entropy, top-k, target prob/rank (and KL to a reference, and Rényi orders if asked) of
``R`` rows of random float32 logits at realistic shapes, with the lens's chunk width
(``LogitLens.block_shape`` of the default 4M-logit budget: 8,192 columns) and, for the final
rows, one whole-vocabulary chunk. Each chunk is copied from a prepared tensor, as the lens
writes a product into its workspace; that copy is timed on its own and reported apart.
Runs alternate (former, fused, former, ...) and the median is reported with the ratio.

    python benchmarks/statistics_pass.py [--repeats 15] [--threads N] [--alphas 2,inf]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from entropylens_hf.lens.metrics import streaming_lens_statistics

#: (label, rows, vocabulary, chunk): Gemma 3 270M (18 layers: 19 rows a token) at batch 1 and 8,
#: its final rows as one chunk, SmolLM2-135M (30 layers: 31 rows a token).
SHAPES = [
    ("gemma3-270m b1", 19, 262144, 8192),
    ("gemma3-270m b8", 152, 262144, 8192),
    ("gemma3 final b1", 1, 262144, 262144),
    ("gemma3 final b8", 8, 262144, 262144),
    ("smollm2 b1", 31, 49152, 8192),
]


def cpu() -> str:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", "x86_64"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wide = " ".join(sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma")))
    return (f"{name}; avx512_bf16 {'yes' if 'avx512_bf16' in flags else 'no'}, amx {'yes' if 'amx_tile' in flags else 'no'}"
            f"; flags: {wide or 'unknown'}\ntorch {torch.__version__}, {torch.get_num_threads()} threads")


def run(z, rows, vocab, chunk, *, fused, kl, alphas, workspace):
    targets = torch.randint(0, vocab, (rows,))
    targets[-1] = -1
    target_logits = z.gather(-1, targets.clamp(min=0)[:, None])[:, 0]
    reference = torch.softmax(z[:1], -1) if kl else None
    h_ref = -(reference * reference.clamp_min(1e-30).log()).sum(-1) if kl else None

    def chunk_logits(a, b):
        return workspace[: rows * (b - a)].view(rows, b - a).copy_(z[:, a:b])

    def once():
        return streaming_lens_statistics(chunk_logits, vocab, top_k=10, target_ids=targets, target_logits=target_logits,
                                         alphas=alphas, chunk_size=chunk, scratch=workspace[rows * chunk :],
                                         reference=reference, reference_entropy=h_ref, fused=fused)
    return once


def copy_time(z, rows, vocab, chunk, workspace) -> float:
    start = time.perf_counter()
    for a in range(0, vocab, chunk):
        b = min(a + chunk, vocab)
        workspace[: rows * (b - a)].view(rows, b - a).copy_(z[:, a:b])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--alphas", default="", help="comma-separated Rényi orders, e.g. 2,inf (default none)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    alphas = [float(a) for a in args.alphas.split(",") if a]
    print(cpu())
    print(f"top_k 10, targets on, Rényi orders {alphas or 'none'}; median of {args.repeats}, ms per call")
    print(f"{'shape':18} {'rows x vocab / chunk':26} {'KL':3} {'copy':>7} {'former':>8} {'fused':>8} {'ratio':>6}")
    for label, rows, vocab, chunk in SHAPES:
        torch.manual_seed(0)
        z = torch.randn(rows, vocab) * 3
        workspace = torch.empty(2 * rows * chunk)
        copy = statistics.median(copy_time(z, rows, vocab, chunk, workspace) for _ in range(5)) * 1e3
        for kl in (False, True):
            calls = {f: run(z, rows, vocab, chunk, fused=f, kl=kl, alphas=alphas, workspace=workspace) for f in (False, True)}
            times = {False: [], True: []}
            for _ in range(args.repeats + 1):  # the first round warms up
                for f, call in calls.items():
                    start = time.perf_counter()
                    call()
                    times[f].append(time.perf_counter() - start)
            old, new = (statistics.median(times[f][1:]) * 1e3 - copy for f in (False, True))
            print(f"{label:18} {f'{rows} x {vocab} / {chunk}':26} {'yes' if kl else 'no':3} {copy:7.2f} {old:8.2f} "
                  f"{new:8.2f} {old / new:5.2f}x")
    print("former/fused: the statistics pass less the chunk copy; ratio = former / fused")


if __name__ == "__main__":
    main()
