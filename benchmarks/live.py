"""Cost of live recording against normal recording, measured side by side in one run.

One prompt through the model's chat template (when it has one), greedy, ``--tokens`` new tokens:
  plain        : model.generate, nothing recorded
  recorded     : lens.record(path), rows written when the call returns
  live@X       : lens.record(path, live=True, live_interval=X): rows written at block boundaries
                 and at least every X seconds (X = 0: after every step; inf: block boundaries only)
Runs are interleaved (each method once per round), the median of ``--repeats`` rounds is reported
with its ratio to ``recorded``, with the trace's size and the number of live writes.

    python benchmarks/live.py [--model default] [--tokens 256] [--repeats 3] [--intervals 0,0.25,1,inf]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, real_model  # noqa: E402

from entropylens_hf import EntropyLens  # noqa: E402
from entropylens_hf.live import LiveRecording  # noqa: E402

PROMPT = "Explain in detail how a hash table works, with an example in Python."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--intervals", default="0,0.25,1,inf")
    args = parser.parse_args()
    model, tokenizer = real_model(args.model)
    text = PROMPT
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                             add_generation_prompt=True)
    inputs = tokenizer([text], return_tensors="pt", add_special_tokens=not tokenizer.chat_template)
    lens = EntropyLens(model, tokenizer, top_k=10)
    lens._token_bytes()  # the vocabulary is decoded once per lens, not per run
    kwargs = dict(**inputs, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                  pad_token_id=tokenizer.pad_token_id)
    intervals = [float(x) for x in args.intervals.split(",")]
    folder = Path(tempfile.mkdtemp())
    times: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    writes: dict[str, int] = {}

    def run(name: str, live: float | None) -> None:
        path = folder / f"{name}.h5"
        path.unlink(missing_ok=True)
        start = time.perf_counter()
        if live is None and name == "plain":
            model.generate(**kwargs)
        else:
            before = WRITES[0]
            with lens.record(path, live=live is not None, live_interval=live if live is not None else 1.0) as rec:
                model.generate(**kwargs, logits_processor=[rec])
            writes[name] = WRITES[0] - before
        times.setdefault(name, []).append(time.perf_counter() - start)
        if path.exists():
            sizes[name] = path.stat().st_size

    methods = [("plain", None), ("recorded", None)] + [(f"live@{x:g}", x) for x in intervals]
    run("recorded", None)  # warm-up
    times.clear()
    for _ in range(args.repeats):
        for name, live in methods:
            run(name, live)
    base = statistics.median(times["recorded"])
    print(f"{args.model}, batch 1, {inputs['input_ids'].shape[1]} prompt tokens + {args.tokens} new; {machine()}")
    print(f"{'method':<12} {'median s':>9} {'vs recorded':>12} {'trace bytes':>12} {'live writes':>12}")
    for name, _ in methods:
        median = statistics.median(times[name])
        print(f"{name:<12} {median:9.3f} {median / base:12.3f} {sizes.get(name, 0):12,} {writes.get(name, 0):12}")


WRITES = [0]
_write = LiveRecording.write


def _counted_write(self, state):
    WRITES[0] += 1
    return _write(self, state)


LiveRecording.write = _counted_write


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
