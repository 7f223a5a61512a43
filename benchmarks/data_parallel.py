"""Data parallel or threads? Throughput of 2 processes x 1 thread vs 1 process x 2 threads, side by side
(and 1 process x 1 thread as the control).

Both configurations record the same prompts (the first ``--prompts`` of the bundled task
prompts, greedy, ``--tokens`` new tokens, batch 8, every prompt row) into a fresh run folder
through the package's own path (``distributed.prepare_share`` then ``record_prompts``):

  dp 2x1      : ``torchrun --standalone --nproc-per-node 2``, OMP_NUM_THREADS=1 per process
  threads 1x2 : one process, OMP_NUM_THREADS=2
  single 1x1  : one process, OMP_NUM_THREADS=1 (the control: what either adds to one core)

The time measured is the recording phase (every process has loaded its model; a barrier; the
slowest process's ``record_prompts``), so process start-up and model loading, which a long
study pays once, do not blur it; the command's whole wall time is printed too. Rounds are
interleaved (the order alternates) and the median of the per-round ratios is reported, with
the load average before and after, since the machine may be shared.

    python benchmarks/data_parallel.py [--models default,smollm2] [--rounds 3] [--prompts 32] [--tokens 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(model_name: str, folder: Path, count: int, tokens: int) -> None:
    """One process of a configuration: its share of the prompts, timed between two barriers."""
    import torch

    from entropylens_hf import EntropyLens
    from entropylens_hf.distributed import RunGroup, launch, prepare_share
    from entropylens_hf.loading import load_model
    from entropylens_hf.models.bundled import _ASSETS
    from entropylens_hf.prompts import read_prompts, record_prompts

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    where = launch()
    prompts = read_prompts(_ASSETS / "prompts" / "tasks.jsonl")[:count]
    with RunGroup(where) as group:
        share = prepare_share(folder, prompts, where)
        model, tokenizer = load_model(model_name, device="cpu", dtype="float32")
        lens = EntropyLens(model, tokenizer, top_k=10, model_name=model_name)
        group.barrier()
        start = time.perf_counter()
        record_prompts(lens, share.prompts, share.shard, batch_size=8, progress=False, max_new_tokens=tokens,
                       do_sample=False)
        seconds = time.perf_counter() - start
        gathered = group.gather((seconds, len(share.prompts)))
    if gathered is not None:
        print(json.dumps({"seconds": max(s for s, _ in gathered), "shares": [n for _, n in gathered]}), flush=True)


def run(config: str, model_name: str, count: int, tokens: int) -> dict:
    """One configuration once, in a fresh folder: recording seconds, generated tokens, rows, wall time."""
    from entropylens_hf.trace import Trace

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        args = ["--worker", model_name, str(folder), str(count), str(tokens)]
        if config == "dp 2x1":
            env["OMP_NUM_THREADS"] = "1"
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                       str(HERE), *args]
        else:
            env["OMP_NUM_THREADS"] = "2" if config == "threads 1x2" else "1"
            command = [sys.executable, str(HERE), *args]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{config} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
        with Trace.open(folder) as trace:
            generated = int((trace.sequence_lengths - trace.prompt_lengths).sum())
            rows = trace.num_rows
            assert len(trace) == count, f"{config}: {len(trace)} of {count} prompts recorded"
    return {**result, "generated": generated, "rows": rows, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="default,smollm2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()
    configs = ["dp 2x1", "threads 1x2", "single 1x1"]
    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{args.prompts} prompts x {args.tokens} new tokens, batch 8, {args.rounds} interleaved rounds", flush=True)
    for model_name in args.models.split(","):
        results: dict[str, list[dict]] = {c: [] for c in configs}
        for r in range(args.rounds):
            for config in configs if r % 2 == 0 else configs[::-1]:
                res = run(config, model_name, args.prompts, args.tokens)
                results[config].append(res)
                print(f"  {model_name} round {r + 1} {config:<12} recording {res['seconds']:6.2f} s "
                      f"({res['rows'] / res['seconds']:7.1f} rows/s, shares {res['shares']}), "
                      f"command {res['wall']:6.2f} s; load {os.getloadavg()[0]:.2f}", flush=True)
        ratios = [t["seconds"] / d["seconds"] for d, t in zip(results["dp 2x1"], results["threads 1x2"])]
        walls = [t["wall"] / d["wall"] for d, t in zip(results["dp 2x1"], results["threads 1x2"])]
        single = [s["seconds"] / d["seconds"] for d, s in zip(results["dp 2x1"], results["single 1x1"])]
        print(f"{model_name}: dp 2x1 records {statistics.median(ratios):.2f}x the throughput of threads 1x2 "
              f"(median of {len(ratios)} rounds: {', '.join(f'{x:.2f}' for x in ratios)}); whole command "
              f"{statistics.median(walls):.2f}x; {statistics.median(single):.2f}x that of single 1x1", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
