"""One viewer screenshot per family of the zoo: the same question, " Paris" selected at the last layer.

    QT_QPA_PLATFORM=offscreen python examples/zoo_screenshots.py   # needs the viewer and the fetched models

Writes ``examples/report/zoo/viewer_<model>.png``. Chat models are asked through their template;
the Gemma base model gets the question as plain text with an answer cue.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "viewer" / "tools"))

from screenshot import grab, open_window  # noqa: E402

from entropylens_hf import EntropyLens  # noqa: E402
from entropylens_hf.loading import load_model  # noqa: E402
from entropylens_hf.models.registry import REGISTRY  # noqa: E402
from entropylens_hf.prompts import Prompt, record_prompts  # noqa: E402

QUESTION = "What is the capital of France?"
MODELS = {"smollm2": QUESTION, "gemma3-270m": f"Question: {QUESTION}\nAnswer:", "qwen2.5-coder-0.5b": QUESTION}


def main() -> None:
    from PySide6 import QtWidgets

    from entropylens_viewer.app import MainWindow

    out = ROOT / "examples" / "report" / "zoo"
    out.mkdir(parents=True, exist_ok=True)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    folder = Path(tempfile.mkdtemp())
    for name, question in MODELS.items():
        model, tokenizer = load_model(name, device="cpu", dtype="float32")
        trace = folder / f"{name}.h5"
        lens = EntropyLens(model, tokenizer, top_k=10, model_name=name)
        record_prompts(lens, [Prompt(question)], trace, chat=REGISTRY[name].chat, progress=False, max_new_tokens=12,
                       do_sample=False)
        window = open_window(MainWindow, trace)
        state = window.state
        state.select_sequence(0)
        seq = state.sequence
        rows = np.flatnonzero(seq.is_generated)
        answer = next(r for r in rows if "Paris" in seq.token_texts[seq.first_target + r])
        state.select_row(int(answer))
        state.set_layer(state.num_layers - 1)
        grab(app, window, out / f"viewer_{name}.png")
        window.close()
        del model
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
