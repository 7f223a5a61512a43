"""``entropylens train-lens``: train a tuned lens for a model on a text, resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EntropyLensError
from ..outputs import check_output

__all__ = ["register", "cmd_train_lens"]



def _train_settings(args: argparse.Namespace):
    from ..lens.training import TrainSettings

    settings = TrainSettings(steps=args.steps, seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr,
                             optimizer=args.optimizer, seed=args.seed, held_out=args.held_out,
                             eval_tokens=args.eval_tokens, checkpoint_every=args.checkpoint_every)
    settings.check()
    return settings


def cmd_train_lens(args: argparse.Namespace) -> int:
    from ..lens.training import TextSource, checkpoint_path

    settings = _train_settings(args)
    out = Path(args.out)
    check_output("--out", out)
    if out.suffix != ".safetensors":
        raise EntropyLensError(f"--out {out}: a tuned lens is a .safetensors file; name it e.g. {out.stem}.safetensors")
    ckpt = checkpoint_path(out)
    if out.exists() and not ckpt.exists():
        raise EntropyLensError(f"--out {out}: exists already (a finished lens); delete it or choose another --out")
    text = TextSource.read(args.text)
    held_out = TextSource.read(args.eval_text, "--eval-text") if args.eval_text else None
    from transformers import set_seed

    from ..lens.logit import LogitLens
    from ..lens.training import kl_table, train_lens
    from ..models.loading import load_model

    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    set_seed(args.seed)
    try:
        tuned = train_lens(model, tokenizer, text, out, held_out=held_out, settings=settings, model_name=args.model,
                           save_dtype=args.save_dtype, progress=not args.quiet)
    except KeyboardInterrupt:
        where = f"{ckpt} keeps the last finished step" if ckpt.exists() else "no step had finished"
        print(f"entropylens train-lens: interrupted; {where}; rerun the same command to resume", file=sys.stderr)
        return 130
    print(kl_table(tuned.evaluation, LogitLens.from_model(model).layer_names))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, sha256 {tuned.sha256[:16]}...); "
          f"record through it with: entropylens record {args.model} --lens {out} --prompts P.txt --out T.h5")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train-lens`` command."""
    tl = subparsers.add_parser("train-lens", help="train a tuned lens (one affine translator per layer) for a model on a text")
    tl.add_argument("model", help="as for record: default, a fetched name (smollm2), a .gguf file or folder, a model folder, a hub id")
    tl.add_argument("--text", required=True, help="UTF-8 text file to train on (its last --held-out part is held out)")
    tl.add_argument("--eval-text", default=None, help="UTF-8 text file to evaluate on instead of the held-out part of --text")
    tl.add_argument("--out", required=True, help="lens file to write (.safetensors); its checkpoint OUT.ckpt lies next to it "
                    "while training, and rerunning the same command resumes from it")
    tl.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    tl.add_argument("--seq-len", type=int, default=128, help="tokens per training sequence (default 128)")
    tl.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    tl.add_argument("--optimizer", default="adam", choices=["adam", "sgd"],
                    help="adam: Adam (AMSGrad) with 20%% warm-up (default); sgd: SGD with Nesterov momentum 0.9, as tuned-lens")
    tl.add_argument("--lr", type=float, default=None, help="peak learning rate, decayed linearly to 0 (default 1e-3 for adam, 0.1 for sgd)")
    tl.add_argument("--seed", type=int, default=0, help="seed of the data order (default 0)")
    tl.add_argument("--held-out", type=float, default=0.1, help="fraction of --text (its end) held out when there is no --eval-text (default 0.1)")
    tl.add_argument("--eval-tokens", type=int, default=16384, help="held-out tokens to evaluate on at the end (default 16384)")
    tl.add_argument("--checkpoint-every", type=int, default=25, help="steps between checkpoints (default 25; also on Ctrl-C)")
    tl.add_argument("--save-dtype", default="float16", choices=["float16", "float32"],
                    help="dtype of the stored weights (default float16; the evaluation uses them as stored)")
    tl.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    tl.add_argument("--dtype", default="float32", help="model dtype: float32 (default), bfloat16, float16, auto")
    tl.add_argument("--quiet", action="store_true", help="no progress bar")
    tl.set_defaults(func=cmd_train_lens)
