"""What the KL, prompt-comparison and sub-layer panels add to a sequence switch (offscreen Qt, one run).

Writes (once) two synthetic sub-layer traces of the same 300 prompts (128 tokens, 30 layers = 61
lens rows, KL recorded), a logit-lens and a tuned-lens one, opens both, and for each bottom tab
times "select a sequence and a token" and the part of it spent in the panels' redraws.

    QT_QPA_PLATFORM=offscreen python viewer/tools/bench_lens_panels.py [--folder /tmp/lens_bench]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from entropylens_hf.trace import SequenceRecord, TraceMetadata, TraceWriter

SEQUENCES, TOKENS, DECODER_LAYERS, TOP_K = 300, 128, 30, 5
ROWS = 2 * DECODER_LAYERS + 1


def write_trace(path: Path, lens: dict) -> None:
    kinds = ("emb",) + ("attn", "mlp") * DECODER_LAYERS
    meta = TraceMetadata(model_name="synthetic", num_layers=ROWS, layer_names=tuple(map(str, range(ROWS))),
                         vocab_size=32000, top_k=TOP_K, lens=lens, layer_kinds=kinds)
    rng = np.random.default_rng(0)
    n = TOKENS - 1
    records = [SequenceRecord(
        token_ids=np.arange(TOKENS) + i, token_texts=tuple(f" w{j}" for j in range(TOKENS)), prompt_length=16,
        entropy=5 * rng.random((n, ROWS), dtype=np.float32), topk_ids=rng.integers(0, 32000, (n, ROWS, TOP_K)),
        topk_probs=rng.random((n, ROWS, TOP_K), dtype=np.float32), target_prob=rng.random((n, ROWS), dtype=np.float32),
        target_rank=rng.integers(0, 100, (n, ROWS)), output_entropy=rng.random(n, dtype=np.float32),
        renyi=np.zeros((n, 0, ROWS), np.float32), prompt_text=f"prompt {i}", key=str(i),
        kl_final=rng.random((n, ROWS), dtype=np.float32)) for i in range(SEQUENCES)]
    with TraceWriter(path, meta) as writer:
        writer.write(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lens_bench"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    logit, tuned = args.folder / "logit.h5", args.folder / "tuned.h5"
    tuned_lens = {"kind": "tuned", "name": "x.safetensors", "sha256": "ab"}
    for path, lens in ((logit, {"kind": "logit"}), (tuned, tuned_lens)):
        if not path.exists():
            write_trace(path, lens)

    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    from entropylens_viewer.app import MainWindow

    window = MainWindow()
    window.live_timer.stop()
    window.resize(1280, 800)
    window.show()
    window.open_path(tuned)
    window.open_path(logit)
    app.processEvents()

    spent: dict[str, list[float]] = defaultdict(list)

    def timed(name, redraw):
        def run(*args):
            t = time.perf_counter()
            redraw(*args)
            spent[name].append(time.perf_counter() - t)
        return run

    window.kl.redraw = timed("KL", window.kl.redraw)
    window.prompt_compare.redraw = timed("prompt comparison", window.prompt_compare.redraw)
    slots = window.state.sequence_changed._slots
    slots[slots.index(window.sublayer_marks.redraw)] = timed("separators", window.sublayer_marks.redraw)
    for tab in range(window.tabs.count()):
        window.tabs.setCurrentIndex(tab)
        app.processEvents()
        totals, parts = [], defaultdict(list)
        for i in np.random.default_rng(1).integers(0, SEQUENCES, 30):
            spent.clear()
            t = time.perf_counter()
            window.state.select_sequence(int(i))
            window.state.select_row(60)
            app.processEvents()
            totals.append(1000 * (time.perf_counter() - t))
            for name in ("KL", "prompt comparison", "separators"):
                parts[name].append(1000 * sum(spent[name]))
        shares = ", ".join(f"{name} {statistics.median(v):.1f} ms" for name, v in parts.items())
        print(f"tab {window.tabs.tabText(tab)!r}: switch + drill down median {statistics.median(totals):.0f} ms; "
              f"of it, median: {shares}")


if __name__ == "__main__":
    main()
