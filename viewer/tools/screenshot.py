"""Render screenshots of the viewer on a trace recorded with the bundled model.

    xvfb-run -s "-screen 0 1280x800x24" python viewer/tools/screenshot.py [--out viewer/docs]

Writes main.png (a token drilled down), playback.png (replay stopped half-way) and
mean_profile.png (the aggregate tab); with ``--compare MODEL_DIR`` (e.g. examples/models/llama-3l)
also compare.png, the two models' mean profiles on normalised depth. With ``--chat-model MODEL``
(an instruct model with a chat template, e.g. SmolLM2-135M-Instruct) also chat_main.png and
chat_playback.png: a factual question asked through the chat template, the answer token
selected at the last layer, and the replay stopped two thirds of the way up. With ``--sublayers``
(a library that records sub-layer rows) also sublayers.png (the demo prompts read after every
attention block and every MLP, a token drilled down), kl.png (the KL-to-final tab) and
compare_lens.png (the same prompt in the whole-layer and the sub-layer trace, plus every
``--with-trace FILE``, e.g. the demo prompts recorded through a tuned lens with
``entropylens record default --lens LENS --prompts demo.jsonl --max-new-tokens 24 --top-k 10``);
with ``--chat-model`` too, chat_sublayers.png (61 rows for SmolLM2).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from entropylens_hf.models import default_model, demo_prompts_path
from entropylens_hf.prompts import read_prompts, record_prompts
from entropylens_hf.recorder import EntropyLens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    parser.add_argument("--compare", type=Path, default=None, help="a second model folder for compare.png")
    parser.add_argument("--chat-model", default=None, help="an instruct model for chat_main.png and chat_playback.png")
    parser.add_argument("--question", default="What is the capital of France?", help="the chat question")
    parser.add_argument("--answer-token", default="Paris", help="the generated token to select in chat_main.png")
    parser.add_argument("--sublayers", action="store_true", help="also the sub-layer, KL and lens-comparison shots")
    parser.add_argument("--with-trace", type=Path, action="append", default=[],
                        help="a trace of the demo prompts to add to compare_lens.png (repeatable)")
    parser.add_argument("--only-new", action="store_true",
                        help="skip main/playback/mean_profile (--sublayers shots only)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    trace = Path(tempfile.mkdtemp()) / "demo.h5"
    model, tokenizer = default_model()
    lens = EntropyLens(model, tokenizer, top_k=10, model_name="entropylens-hf default model")
    record_prompts(lens, read_prompts(demo_prompts_path()), trace, progress=False, max_new_tokens=24, do_sample=False)

    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    from entropylens_viewer.app import MainWindow

    window = open_window(MainWindow, trace)
    state = window.state
    if not args.only_new:
        state.select_sequence(0)
        seq = state.sequence
        row = int(seq.is_generated.argmax()) + 1
        state.select_row(row)
        state.set_layer(state.num_layers - 1)
        grab(app, window, args.out / "main.png")

        state.select_sequence(2)
        state.select_row(int(state.sequence.is_generated.argmax()))
        state.set_layer(state.num_layers // 2)
        grab(app, window, args.out / "playback.png")

        show_tab(window, "mean profile")
        grab(app, window, args.out / "mean_profile.png")
    if args.sublayers:
        sublayer_screenshots(app, args, model, tokenizer, trace)

    if args.compare is not None:
        from entropylens_hf.loading import load_model

        other, other_tokenizer = load_model(str(args.compare), device="cpu", dtype="float32")
        second = trace.with_name("compare.h5")
        lens = EntropyLens(other, other_tokenizer, top_k=10, model_name=args.compare.name)
        record_prompts(lens, read_prompts(demo_prompts_path()), second, progress=False, max_new_tokens=24,
                       do_sample=False)
        window.open_path(second)
        show_tab(window, "compare traces")
        grab(app, window, args.out / "compare.png")
    if args.chat_model is not None:
        chat_screenshots(app, args, trace.with_name("chat.h5"))
    print(f"screenshots in {args.out}")


def chat_screenshots(app, args, trace: Path) -> None:
    """Record ``args.question`` through the model's chat template and grab a fresh viewer window on it."""
    from entropylens_hf.loading import load_model
    from entropylens_hf.prompts import Prompt
    from entropylens_viewer.app import MainWindow

    model, tokenizer = load_model(args.chat_model, device="cpu", dtype="float32")
    name = Path(args.chat_model).name if Path(args.chat_model).exists() else args.chat_model
    lens = EntropyLens(model, tokenizer, top_k=10, model_name=name)
    record_prompts(lens, [Prompt(args.question)], trace, chat=True, progress=False, max_new_tokens=12, do_sample=False)
    window = open_window(MainWindow, trace)
    state = window.state
    state.select_sequence(0)
    seq = state.sequence
    rows = np.flatnonzero(seq.is_generated)
    answer = next((r for r in rows if args.answer_token in seq.token_texts[seq.first_target + r]), rows[0])
    state.select_row(int(answer))
    state.set_layer(state.num_layers - 1)
    grab(app, window, args.out / "chat_main.png")
    state.set_layer(2 * (state.num_layers - 1) // 3)
    grab(app, window, args.out / "chat_playback.png")
    if args.sublayers:
        sub = trace.with_name("chat_sublayers.h5")
        lens = EntropyLens(model, tokenizer, top_k=10, model_name=name, sublayers=True)
        record_prompts(lens, [Prompt(args.question)], sub, chat=True, progress=False, max_new_tokens=12,
                       do_sample=False)
        window = open_window(MainWindow, sub)
        window.state.select_sequence(0)
        window.state.select_row(int(answer))
        window.state.set_layer(window.state.num_layers - 1)
        grab(app, window, args.out / "chat_sublayers.png")


def sublayer_screenshots(app, args, model, tokenizer, plain: Path) -> None:
    """The demo prompts recorded with sub-layer rows, next to the whole-layer trace and ``args.with_trace``."""
    from entropylens_viewer.app import MainWindow

    sub = plain.with_name("sublayers.h5")
    lens = EntropyLens(model, tokenizer, top_k=10, model_name="entropylens-hf default model", sublayers=True)
    record_prompts(lens, read_prompts(demo_prompts_path()), sub, progress=False, max_new_tokens=24, do_sample=False)
    window = open_window(MainWindow, sub)
    state = window.state
    state.select_sequence(0)
    state.select_row(int(state.sequence.is_generated.argmax()) + 1)
    state.set_layer(state.num_layers - 1)
    grab(app, window, args.out / "sublayers.png")
    show_tab(window, "KL to final")
    grab(app, window, args.out / "kl.png")
    for path in (plain, *args.with_trace):
        if not window.open_path(path):
            raise SystemExit(f"cannot open {path}")
    window.trace_box.setCurrentIndex(0)  # the sub-layer trace, its token still selected
    state.select_sequence(0)
    state.select_row(int(state.sequence.is_generated.argmax()) + 1)
    show_tab(window, "compare traces")
    grab(app, window, args.out / "compare_lens.png")


def show_tab(window, title: str) -> None:
    """Bring the bottom tab named ``title`` to the front."""
    tabs = window.tabs
    tabs.setCurrentIndex(next(i for i in range(tabs.count()) if tabs.tabText(i) == title))


def open_window(main_window_class, trace: Path):
    """A 1280 x 800 viewer window showing ``trace``, not polling for live updates."""
    window = main_window_class()
    window.live_timer.stop()
    window.resize(1280, 800)
    window.show()
    window.open_path(trace)
    return window


def grab(app, window, path: Path) -> None:
    """Let Qt paint, then save the window as a PNG."""
    for _ in range(5):
        app.processEvents()
    window.grab().save(str(path))


if __name__ == "__main__":
    main()
