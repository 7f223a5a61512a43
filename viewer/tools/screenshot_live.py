"""Screenshot of the viewer following a real chat while the answer is being generated.

    xvfb-run -s "-screen 0 1280x800x24" python viewer/tools/screenshot_live.py [--model smollm2] [--out viewer/docs]

Runs ``entropylens chat MODEL`` in a child process with the question on its stdin, opens the
viewer on the trace it writes (following it, as ``chat --view`` does), waits until the reply has
``--rows`` generated rows while it is still being written, selects the newest generated token and
saves live_chat.png. The child is stopped afterwards.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTION = "Why is the sky blue? Explain it in a few sentences."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--rows", type=int, default=24, help="generated rows to wait for before the grab")
    args = parser.parse_args()
    from PySide6 import QtWidgets

    from entropylens_viewer.app import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    trace = Path(tempfile.mkdtemp()) / "chat.h5"
    chat = subprocess.Popen([sys.executable, "-c", "import sys; from entropylens_hf.cli import main; sys.exit(main())",
                             "chat", args.model, "--out", str(trace), "--max-new-tokens", "200", "--live-interval", "0.5"],
                            stdin=subprocess.PIPE, text=True)
    chat.stdin.write(args.question + "\n")
    chat.stdin.flush()
    window = MainWindow()
    window.state.follow = True
    window.resize(1280, 800)
    window.show()
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if not window.state.traces and trace.exists():
                window.open_path(trace)
            app.processEvents()
            seq = window.state.sequence
            if seq is not None and window.state.in_progress and seq.n_generated >= args.rows:
                break
            time.sleep(0.05)
        else:
            raise SystemExit("the reply did not reach the rows asked for in time")
        window.live_timer.stop()  # hold the picture still while grabbing
        seq = window.state.sequence
        window.state.select_row(seq.n_rows - 2)
        window.state.set_layer(window.state.num_layers - 1)
        for _ in range(5):
            app.processEvents()
        args.out.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(args.out / "live_chat.png"))
        print(f"{args.out / 'live_chat.png'}: {seq.n_generated} generated tokens so far: {seq.generated_text!r}")
    finally:
        chat.send_signal(signal.SIGINT)
        try:
            chat.communicate("/quit\n", timeout=60)
        except subprocess.TimeoutExpired:
            chat.kill()


if __name__ == "__main__":
    main()
