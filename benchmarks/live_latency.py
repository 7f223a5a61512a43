"""Latency of live following: from a row being resolved and written to it showing in the viewer.

A child process records a reply of the bundled (or another) model with ``lens.record(path,
live=True)`` and prints, after each live write, the wall-clock time and the rows written. This
process runs the real viewer window (offscreen unless a display is set) with its own live timer
and notes when each row count first shows in the viewer's data model (``state.sequence``). The
latency of a write is the time between its print and that moment; also reported is the time
from the token being generated (the writer's previous write, an upper bound of the wait for the
write itself).

    QT_QPA_PLATFORM=offscreen python benchmarks/live_latency.py [--model default] [--tokens 200] [--interval 1]
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHILD = r"""
import sys, time
from entropylens_hf import EntropyLens
from entropylens_hf.live import LiveRecording
from entropylens_hf.loading import load_model
path, name, tokens, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
model, tok = load_model(name, device="cpu", dtype="float32")
lens = EntropyLens(model, tok)
lens._token_bytes()
write = LiveRecording.write
def logged(self, state):
    write(self, state)
    print(f"{time.time():.6f} {self.batch.writer._file['sequences/row_count'][self.batch.indices[0]]}", flush=True)
LiveRecording.write = logged
inputs = tok(["The documentation of the module says that"], return_tensors="pt")
print("ready", flush=True)
with lens.record(path, live=True, live_interval=interval) as rec:
    model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0,
                   logits_processor=[rec])
print("done", flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    from PySide6 import QtCore, QtWidgets

    from entropylens_viewer.app import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    path = Path(tempfile.mkdtemp()) / "live.h5"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), args.model, str(args.tokens), str(args.interval)],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.stdout.readline().strip() == "ready"
    writes: list[tuple[float, int]] = []
    shown: dict[int, float] = {}
    window = MainWindow()
    window.state.follow = True
    window.show()

    def note() -> None:
        seq = window.state.sequence
        if seq is not None and seq.n_rows not in shown:
            shown[seq.n_rows] = time.time()

    window.state.sequence_grew.connect(note)
    window.state.sequence_changed.connect(note)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in child.stdout], daemon=True).start()
    finished = False
    while not finished:
        if not window.state.traces and path.exists():
            window.open_path(path)
        app.processEvents(QtCore.QEventLoop.AllEvents, 20)
        while not lines.empty():
            line = lines.get().strip()
            if line == "done":
                finished = True
            elif line:
                when, rows = line.split()
                writes.append((float(when), int(rows)))
        time.sleep(0.005)
    end = time.time() + 2 * window.live_timer.interval() / 1000
    while time.time() < end:
        app.processEvents(QtCore.QEventLoop.AllEvents, 20)
        time.sleep(0.01)
    child.wait()
    latencies, since_previous = [], []
    previous = None
    for when, rows in writes:
        seen = min((t for n, t in shown.items() if n >= rows), default=None)
        if seen is not None and window.state.trace is not None:
            latencies.append(seen - when)
            if previous is not None:
                since_previous.append(seen - previous)
        previous = when
    print(f"{args.model}: {len(writes)} live writes over {args.tokens} tokens, live_interval {args.interval} s, "
          f"viewer refresh every {window.live_timer.interval()} ms")
    print(f"write -> visible in the viewer: median {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s "
          f"({len(latencies)} writes seen)")
    print(f"previous write -> visible (bounds token generated -> visible): median {statistics.median(since_previous):.3f} s, "
          f"max {max(since_previous):.3f} s")


if __name__ == "__main__":
    main()
