"""One viewer screenshot per model family: the same question, its answer token drilled down.

    xvfb-run -s "-screen 0 1280x800x24" python viewer/tools/screenshot_zoo.py \
        smollm2 gemma3-270m qwen2.5-coder-0.5b [--out viewer/docs]

For each MODEL (a fetched name or a model folder): records "What is the capital of France?"
greedily, through the chat template where the model has one and as a plain "Question: ...
Answer:" text where it has none (a base model such as Gemma 3 270M), then grabs the viewer
with the first generated token containing "Paris" selected at the last layer, as
zoo_<name>.png. Prints, per model, the layer where " Paris" first becomes the top-1 prediction.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from entropylens_hf.models.loading import load_model
from entropylens_hf.recording.prompts import Prompt, record_prompts
from entropylens_hf.recording.recorder import EntropyLens

QUESTION = "What is the capital of France?"


def record_question(model_name: str, trace: Path) -> None:
    model, tokenizer = load_model(model_name, device="cpu", dtype="float32")
    name = Path(model_name).name if Path(model_name).exists() else model_name
    lens = EntropyLens(model, tokenizer, top_k=10, model_name=name)
    chat = bool(getattr(tokenizer, "chat_template", None))
    prompt = Prompt(QUESTION) if chat else Prompt(f"Question: {QUESTION}\nAnswer:")
    record_prompts(lens, [prompt], trace, chat=chat, progress=False, max_new_tokens=12, do_sample=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="fetched names or model folders")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    from entropylens_viewer.app import MainWindow
    from screenshot import grab, open_window

    folder = Path(tempfile.mkdtemp())
    for model_name in args.models:
        short = Path(model_name).name if Path(model_name).exists() else model_name
        trace = folder / f"{short}.h5"
        record_question(model_name, trace)
        window = open_window(MainWindow, trace)
        state = window.state
        state.select_sequence(0)
        seq = state.sequence
        rows = np.flatnonzero(seq.is_generated)
        answer = next((int(r) for r in rows if "Paris" in seq.token_texts[seq.first_target + r]), int(rows[0]))
        state.select_row(answer)
        state.set_layer(state.num_layers - 1)
        grab(app, window, args.out / f"zoo_{short}.png")
        top1 = seq.topk_ids[answer, :, 0]
        target = seq.token_ids[seq.first_target + answer]
        first = next((i for i, t in enumerate(top1) if t == target), None)
        print(f"{short}: {state.num_layers} lens layers; answer token {seq.token_texts[seq.first_target + answer]!r} "
              f"is top-1 from lens layer {first}; generated {seq.generated_text!r}")
        window.close()
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
