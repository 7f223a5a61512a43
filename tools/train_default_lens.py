"""Train the bundled model's tuned lens on its own training corpus, evaluated on its held-out documents.

The documents come from ``tools/train_model.py``'s ``load_corpus`` (Debian ``python3-doc``,
every 20th document held out), written as two text files (documents separated by a blank
line) and handed to ``entropylens train-lens``:

    apt-get install python3-doc
    python tools/train_default_lens.py            # writes entropylens_hf/assets/default_model/tuned_lens.safetensors

``--compare`` instead trains one lens per optimizer (SGD with Nesterov momentum, Adam) for the
same steps and data in one run and prints their held-out mean KL, with float32 and with
float16 weights (how the defaults were chosen).
Extra arguments after ``--`` go to ``train-lens`` (e.g. ``-- --steps 50``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_model import DEFAULT_CORPUS, load_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "entropylens_hf" / "assets" / "default_model" / "tuned_lens.safetensors"
DEFAULTS = ["--steps", "100", "--seq-len", "128", "--batch-size", "8", "--eval-tokens", "32768", "--seed", "0"]


def write_texts(corpus: Path, folder: Path) -> tuple[Path, Path]:
    train_docs, held_docs = load_corpus(corpus)
    train, held = folder / "python3-doc-train.txt", folder / "python3-doc-held-out.txt"
    train.write_text("\n\n".join(train_docs), encoding="utf-8")
    held.write_text("\n\n".join(held_docs), encoding="utf-8")
    print(f"corpus: {len(train_docs)} training documents, {len(held_docs)} held-out documents", flush=True)
    return train, held


def compare(train: Path, held: Path, extra: list[str], folder: Path) -> None:
    """SGD vs Adam for the same steps and data, in one run; each also read back with float16 weights."""
    from entropylens_hf.lens_training import TextSource, TrainSettings, evaluate_kl, split_data, train_lens
    from entropylens_hf.models import default_model

    model, tokenizer = default_model()
    steps = int(extra[extra.index("--steps") + 1]) if "--steps" in extra else 60
    text, held_text = TextSource.read(train), TextSource.read(held, "--eval-text")
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    for optimizer in ("sgd", "adam"):
        settings = TrainSettings(steps=steps, seq_len=128, batch_size=8, optimizer=optimizer, eval_tokens=16384)
        lens = train_lens(model, tokenizer, text, folder / f"{optimizer}.safetensors", held_out=held_text,
                          settings=settings, save_dtype="float32", progress=False, log=lambda m: None)
        lens.load_state_dict({k: v.half().float() for k, v in lens.state_dict().items()})
        half = evaluate_kl(model, lens, split_data(tokenizer, text, held_text, settings)[1])
        full = lens.evaluation
        print(f"{optimizer:>4}, {steps} steps, {full['tokens']} held-out tokens: mean KL over rows: logit lens "
              f"{mean(full['logit']):.4f}, tuned {mean(full['tuned']):.4f} (float16 weights {mean(half['tuned']):.4f})")
        print("      per row, tuned: " + " ".join(f"{v:.4f}" for v in full["tuned"]))
        print("      float16 - float32: " + " ".join(f"{h - f:+.5f}" for h, f in zip(half["tuned"], full["tuned"])))
        print("      logit lens:       " + " ".join(f"{v:.4f}" for v in full["logit"]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--workdir", type=Path, default=None, help="where the two text files go (default: a temporary folder)")
    parser.add_argument("--compare", action="store_true", help="compare optimizers and float16 weights instead")
    parser.add_argument("--texts-only", action="store_true", help="only write the two text files (with --workdir)")
    parser.add_argument("extra", nargs="*", help="more train-lens arguments, after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        train, held = write_texts(args.corpus, folder)
        if args.texts_only:
            print(f"wrote {train} and {held}")
            return
        if args.compare:
            compare(train, held, args.extra, folder)
            return
        from entropylens_hf.cli import main as cli

        sys.exit(cli(["train-lens", "default", "--text", str(train), "--eval-text", str(held),
                      "--out", str(args.out), *DEFAULTS, *args.extra]))


if __name__ == "__main__":
    main()
