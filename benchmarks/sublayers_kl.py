"""Cost of KL-to-final and of sub-layer rows, measured side by side in one run.

For each model and batch, greedy generation, every lens row's entropy and top-10:
  plain        : model.generate
  rec-no-kl    : recorded to a trace without KL to the final layer (EntropyLens._record_kl = False)
  recorded     : recorded with KL (the default)
  sublayers    : recorded with KL and sub-layer rows (2 x layers + 1 lens rows, sublayers=True)
Runs are interleaved (every method once, then again); medians with their ratio to plain and
to rec-no-kl are printed. ``--lens-only`` instead times the lens pass alone
(``LogitLens.token_statistics`` on one block of random residuals, with and without KL, whole
layers and sub-layers), which is what KL and sub-layers add to, with far less noise on a
shared machine than whole generate calls.

    python benchmarks/sublayers_kl.py [--models gpt2,smollm2] [--repeats 3] [--tokens 32] [--batches 1,8] [--lens-only]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from pathlib import Path

import torch

from common import gpt2_small, machine, prompt_texts, real_model, timed
from entropylens_hf import EntropyLens


def _kwargs(inputs: dict, tokens: int) -> dict:
    return dict(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, eos_token_id=None, pad_token_id=0)


def run(model, inputs, tokens, path, *, kl=True, sublayers=False, plain=False):
    if plain:
        model.generate(**_kwargs(inputs, tokens))
        return
    lens = EntropyLens(model, None, top_k=10, sublayers=sublayers)
    lens._record_kl = kl
    lens.generate(**_kwargs(inputs, tokens), trace=path)


METHODS = {
    "plain": dict(plain=True),
    "rec-no-kl": dict(kl=False),
    "recorded": dict(kl=True),
    "sublayers": dict(kl=True, sublayers=True),
}


def compare(title, model, make_inputs, batches, args, tmp: Path) -> None:
    print(f"\n{title}, {args.tokens} new tokens, median of {args.repeats} interleaved runs", flush=True)
    for batch in batches:
        inputs = make_inputs(batch)
        run(model, inputs, 2, None, plain=True)  # warm-up
        times = {name: [] for name in METHODS}
        for r in range(args.repeats):
            for name, options in METHODS.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    times[name].append(timed(run, model, inputs, args.tokens, tmp / f"{id(model)}_{name}_{batch}_{r}.h5",
                                             **options))
        med = {name: statistics.median(v) for name, v in times.items()}
        cells = [f"{name} {t:6.2f} s ({t / med['plain']:4.2f}x plain, {t / med['rec-no-kl']:4.2f}x no-kl)"
                 for name, t in med.items()]
        print(f"batch {batch:2d}: " + " | ".join(cells), flush=True)


def lens_only(title, model, args) -> None:
    """The lens pass of one block (as the recorder resolves it) with and without KL, L and 2L - 1 rows."""
    from entropylens_hf.lens import LogitLens

    lens = LogitLens.from_model(model)
    layers, d = len(lens.layers), model.config.hidden_size
    budget = 1 << 22
    block_rows = lens.block_shape(budget)[0]
    workspace = lens.new_workspace(budget)
    torch.manual_seed(0)
    cases = {}
    for name, rows in (("whole layers", layers), ("sub-layers", 2 * layers)):  # + the head's final row
        tokens = max(1, block_rows // rows)
        residuals = torch.randn(tokens, rows, d) * 3
        head = lens.project(residuals[:, -1])  # stands in for the model's own logits
        targets = torch.randint(0, lens.vocab_size, (tokens,))
        for kl in (False, True):
            cases[f"{name}, {'KL' if kl else 'no KL'}"] = (tokens, lambda r=residuals, h=head, t=targets, kl=kl: lens.token_statistics(
                r, top_k=10, targets=t, head_logits=h, max_logits=budget, workspace=workspace, kl=kl))
    times = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, (_, fn) in cases.items():
            times[name].append(timed(fn))
    print(f"\n{title}: lens pass of one block ({block_rows} rows budget), median of {args.repeats} interleaved runs")
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, (tokens, _) in cases.items():
        base = med[name.replace(", KL", ", no KL")]
        per_token = med[name] / tokens * 1e3
        print(f"  {name:<22} {tokens:3d} tokens  {per_token:7.3f} ms per token  ({med[name] / base:4.2f}x no KL)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt2,smollm2")
    parser.add_argument("--real-model", default="smollm2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--lens-only", action="store_true", help="time the lens pass alone (see above)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine())
    batches = [int(b) for b in args.batches.split(",") if b]
    if args.lens_only:
        if "gpt2" in args.models:
            lens_only("GPT-2-small shape (12 layers, d 768, V 50,257)", gpt2_small(), args)
        if "smollm2" in args.models:
            model, _ = real_model(args.real_model)
            lens_only(f"{args.real_model} ({model.config.num_hidden_layers} layers, V {model.config.vocab_size:,})", model, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if "gpt2" in args.models:
            compare("GPT-2-small shape (12 layers, d 768, V 50,257), random weights", gpt2_small(),
                    lambda b: {"input_ids": torch.randint(100, 50000, (b, 8))}, batches, args, Path(tmp))
        if "smollm2" in args.models:
            model, tokenizer = real_model(args.real_model)
            compare(f"{args.real_model} ({model.config.num_hidden_layers} layers, V {model.config.vocab_size:,})", model,
                    lambda b: dict(tokenizer(prompt_texts(tokenizer, b), return_tensors="pt", padding=True)),
                    batches, args, Path(tmp))


if __name__ == "__main__":
    main()
