"""Plot the mean KL to the final layer per layer, logit lens vs tuned lens, on held-out text.

    python examples/tuned_lens_kl.py                                   # the bundled model's lens, as evaluated when trained
    python examples/tuned_lens_kl.py LENS --model MODEL --text FILE    # measure it again on FILE (all of it is held out)

Without ``--text`` the figure shows the held-out evaluation stored in the lens file by
``entropylens train-lens``; with it, the KL is measured here on the text's first
``--tokens`` tokens. Needs matplotlib (``pip install "entropylens-hf[plots]"``).
"""

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "entropylens_hf" / "assets" / "default_model" / "tuned_lens.safetensors"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("lens", nargs="?", default=str(BUNDLED), help="tuned-lens file (default: the bundled model's)")
parser.add_argument("--model", default="default", help="MODEL as for `entropylens record` (with --text)")
parser.add_argument("--text", default=None, help="held-out text to measure on (default: use the stored evaluation)")
parser.add_argument("--tokens", type=int, default=16384, help="tokens of --text to measure on")
parser.add_argument("--seq-len", type=int, default=128)
parser.add_argument("--title", default=None)
parser.add_argument("--out", default="tuned_lens_kl.png")
args = parser.parse_args()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from entropylens_hf.tuned_lens import TunedLens  # noqa: E402

tuned = TunedLens.load(args.lens)
if args.text is None:
    evaluation = tuned.evaluation
    source = f"held-out: {tuned.training_settings.get('eval_text') or evaluation.get('held_out', '')}"
else:
    from entropylens_hf.lens_training import read_text, sequences_of, evaluate_kl
    from entropylens_hf.loading import load_model

    model, tokenizer = load_model(args.model, device="cpu", dtype="float32")
    tuned.check_model(model)
    sequences = sequences_of(tokenizer, read_text(args.text), args.seq_len)[: max(1, args.tokens // args.seq_len)]
    evaluation = evaluate_kl(model, tuned, sequences)
    source = Path(args.text).name

# The last layer's distribution is the model's own (KL 0 for both lenses): left out of the log-scale plot.
rows = list(range(len(evaluation["logit"])))
names = ["emb"] + [str(i) for i in rows[1:]]
logit, tuned_kl = evaluation["logit"], evaluation["tuned"]
fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
ax.plot(rows, logit, "o-", label="logit lens", color="tab:gray")
ax.plot(rows, tuned_kl, "o-", label="tuned lens", color="tab:blue")
ax.set_yscale("log")
ax.set_xticks(rows, names if len(rows) <= 16 else [n if i % 5 == 0 else "" for i, n in enumerate(names)])
ax.set_xlabel(f"layer (emb = embedding output; the last, {len(rows)}, is the model's own: KL 0)")
ax.set_ylabel("mean KL to the final layer (nats, log)")
ax.set_title(args.title or f"{tuned.model_name}: {evaluation['tokens']:,} tokens, {source}", fontsize=9)
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(args.out)
print(f"wrote {args.out}")
for name, a, b in zip(names, logit, tuned_kl):
    print(f"  {name:>4}  logit {a:.4f}  tuned {b:.4f}")
