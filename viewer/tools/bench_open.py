"""How fast the viewer opens a large trace and how responsive scrubbing is (offscreen Qt).

Writes (once) a trace of 10,000 sequences x 128 tokens x 32 lens layers with random data, then
measures, in one run: Trace.open; the main window from "open" to "first sequence shown";
switching sequences; moving the replay layer.

    QT_QPA_PLATFORM=offscreen python viewer/tools/bench_open.py [--path /tmp/big.h5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from entropylens_hf.trace import SequenceRecord, Trace, TraceMetadata, TraceWriter

SEQUENCES, TOKENS, LAYERS, TOP_K, PROMPT = 10_000, 128, 32, 5, 16


def write_trace(path: Path) -> None:
    meta = TraceMetadata(model_name="synthetic-32-layers", num_layers=LAYERS,
                         layer_names=("embeddings",) + tuple(f"layer {i}" for i in range(1, LAYERS)),
                         vocab_size=32000, top_k=TOP_K)
    rng = np.random.default_rng(0)
    texts = tuple(f" w{i}" for i in range(TOKENS))
    rows = TOKENS - 1
    with TraceWriter(path, meta) as writer:
        writer.begin_run({"synthetic": True})
        for start in range(0, SEQUENCES, 500):
            batch = []
            for i in range(start, start + 500):
                depth = np.linspace(1, 0, LAYERS, dtype=np.float32)
                entropy = (6 * depth + rng.random((rows, LAYERS), dtype=np.float32)).astype(np.float32)
                batch.append(SequenceRecord(
                    token_ids=rng.integers(0, 32000, TOKENS), token_texts=texts, prompt_length=PROMPT, entropy=entropy,
                    topk_ids=rng.integers(0, 32000, (rows, LAYERS, TOP_K)), topk_probs=rng.random((rows, LAYERS, TOP_K), dtype=np.float32),
                    target_prob=rng.random((rows, LAYERS), dtype=np.float32), target_rank=rng.integers(0, 100, (rows, LAYERS)),
                    output_entropy=rng.random(rows, dtype=np.float32), renyi=np.zeros((rows, 0, LAYERS), np.float32),
                    labels={"task": f"t{i % 4}"}, prompt_text=f"synthetic prompt {i}", key=str(i)))
            writer.write(batch)
            print(f"  wrote {start + 500} sequences", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=Path("/tmp/entropylens_bench_10k.h5"))
    args = parser.parse_args()
    if not args.path.exists():
        print(f"writing {args.path} ...")
        t = time.perf_counter()
        write_trace(args.path)
        print(f"  {time.perf_counter() - t:.1f} s, {args.path.stat().st_size / 1e9:.2f} GB")

    t = time.perf_counter()
    with Trace.open(args.path) as trace:
        n = len(trace)
    print(f"Trace.open + index of {n} sequences: {1000 * (time.perf_counter() - t):.0f} ms")

    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    from entropylens_viewer.app import MainWindow

    window = MainWindow()
    window.live_timer.stop()
    window.show()
    app.processEvents()
    t = time.perf_counter()
    window.open_path(args.path)
    app.processEvents()
    print(f"window: open to first sequence shown: {1000 * (time.perf_counter() - t):.0f} ms")

    rng = np.random.default_rng(1)
    switches = []
    for i in rng.integers(0, n, 30):
        t = time.perf_counter()
        window.state.select_sequence(int(i))
        window.state.select_row(60)
        app.processEvents()
        switches.append(1000 * (time.perf_counter() - t))
    scrubs = []
    for layer in list(range(LAYERS)) * 3:
        t = time.perf_counter()
        window.state.set_layer(layer)
        app.processEvents()
        scrubs.append(1000 * (time.perf_counter() - t))
    print(f"switch sequence + drill down: median {statistics.median(switches):.1f} ms, max {max(switches):.1f} ms")
    print(f"scrub one layer: median {statistics.median(scrubs):.1f} ms, max {max(scrubs):.1f} ms")


if __name__ == "__main__":
    main()
