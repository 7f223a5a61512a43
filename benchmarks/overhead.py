"""Cost of recording, measured side by side in one run (CPU, random GPT-2-small weights).

Prints, for batch 1 and batch 8 and 64 new tokens, the wall time of
  plain   : model.generate
  recorded: EntropyLens.generate writing a trace (hooks, KV cache on, lens rows resolved in blocks)
  rerun   : the paper's reference-code approach, a full forward over the whole sequence with
            output_hidden_states and no cache at every step, logit lens on the last position
and the ratios to plain. Runs are interleaved and repeated; the median is reported.
With ``--memory`` it also reports the peak resident memory that plain and recorded
generation add on top of the loaded model, each measured in a fresh child process.

    python benchmarks/overhead.py [--repeats 3] [--tokens 64] [--batches 1,8] [--memory]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPT2Config

from entropylens_hf import EntropyLens
from entropylens_hf.metrics import entropy


def plain(model, ids, tokens):
    model.generate(input_ids=ids, max_new_tokens=tokens, do_sample=False, eos_token_id=None, pad_token_id=0)


def recorded(model, ids, tokens, path):
    EntropyLens(model, None, top_k=10).generate(
        input_ids=ids, max_new_tokens=tokens, do_sample=False, eos_token_id=None, pad_token_id=0, trace=path
    )


@torch.no_grad()
def rerun(model, ids, tokens):
    norm, head = model.transformer.ln_f, model.lm_head
    seq = ids
    for _ in range(tokens):
        out = model(seq, output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states
        last = [norm(h[:, -1]) for h in hidden[:-1]] + [hidden[-1][:, -1]]
        entropy(head(torch.stack(last, 1)))  # [batch, layers]
        seq = torch.cat([seq, out.logits[:, -1].argmax(-1, keepdim=True)], 1)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def gpt2_small() -> torch.nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257)
    return AutoModelForCausalLM.from_config(config).eval()


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(kind: str, batch: int, tokens: int) -> None:
    """Print the peak RSS (MiB) one generation adds to the loaded model (Linux only)."""
    model = gpt2_small()
    ids = torch.randint(100, 50000, (batch, 8))
    plain(model, ids, 2)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    before = _rss_kib("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "plain":
            plain(model, ids, tokens)
        else:
            recorded(model, ids, tokens, Path(tmp) / "t.h5")
    print(json.dumps({"extra_mib": (_rss_kib("VmHWM") - before) / 1024}))


def measure_memory(batch: int, tokens: int) -> dict[str, float]:
    result = {}
    for kind in ("plain", "recorded"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", kind, "--batches", str(batch),
                              "--tokens", str(tokens)], capture_output=True, text=True, check=True)
        result[kind] = json.loads(out.stdout.strip().splitlines()[-1])["extra_mib"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--skip-rerun", action="store_true")
    parser.add_argument("--memory", action="store_true", help="also measure peak extra memory (Linux)")
    parser.add_argument("--memory-child", choices=["plain", "recorded"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, int(args.batches), args.tokens)
        return

    model = gpt2_small()
    print(f"GPT-2-small shape (12 layers, d=768, V=50257), random weights, {args.tokens} new tokens, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in [int(b) for b in args.batches.split(",")]:
            ids = torch.randint(100, 50000, (batch, 8))
            plain(model, ids, 4)  # warm-up
            times = {"plain": [], "recorded": [], "rerun": []}
            for r in range(args.repeats):
                times["plain"].append(timed(plain, model, ids, args.tokens))
                times["recorded"].append(timed(recorded, model, ids, args.tokens, Path(tmp) / f"b{batch}_{r}.h5"))
                if not args.skip_rerun:
                    times["rerun"].append(timed(rerun, model, ids, args.tokens))
            base = statistics.median(times["plain"])
            for name, values in times.items():
                if values:
                    med = statistics.median(values)
                    print(f"batch {batch:2d}  {name:9s} {med:7.2f} s   {med / base:5.2f}x plain")
            if args.memory:
                mem = measure_memory(batch, args.tokens)
                print(f"batch {batch:2d}  peak memory added by generation: plain {mem['plain']:.0f} MiB, "
                      f"recorded {mem['recorded']:.0f} MiB")


if __name__ == "__main__":
    main()
