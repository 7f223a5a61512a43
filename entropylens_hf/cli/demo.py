"""``entropylens demo`` (the bundled model on bundled prompts) and ``entropylens view`` (the desktop viewer)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EntropyLensError
from ..outputs import check_output
from . import common
from .common import display_available
from .traces import sparkline, summarize

__all__ = ["register"]



def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from ..models.bundled import default_model, demo_prompts_path
    from ..recording.prompts import read_prompts, record_prompts
    from ..recording.recorder import EntropyLens
    from ..trace import Trace

    out = Path(args.out)
    check_output("--out", out)
    if out.exists() and not args.keep:
        out.unlink()
    model, tokenizer = default_model()
    lens = EntropyLens(model, tokenizer, top_k=10, model_name="entropylens-hf default model")
    prompts = read_prompts(demo_prompts_path())
    record_prompts(lens, prompts, out, batch_size=len(prompts), progress=False,
                   max_new_tokens=args.max_new_tokens, do_sample=False)
    with Trace.open(out) as trace:
        print(summarize(trace))
        print()
        print("per prompt: entropy (nats) at the first decoder layer -> last layer, averaged over generated tokens")
        for seq in trace:
            gen = seq.entropy[seq.is_generated]
            kind = ",".join(f"{v}" for v in seq.labels.values())
            text = (seq.prompt_text + "⟦" + seq.generated_text + "⟧").replace("\n", "⏎")
            print(f"  [{kind:>11}] {gen[:, 1].mean():5.2f} -> {gen[:, -1].mean():5.2f}  {sparkline(gen.mean(0))}  {text[:70]}")
        kinds = sorted({v for lab in trace.labels for v in lab.values()})
        if kinds:
            print("mean profile per kind (embeddings .. last layer):")
            for kind in kinds:
                profile = np.mean([s.entropy[s.is_generated].mean(0) for s in trace if kind in s.labels.values()], axis=0)
                print(f"  {kind:>11}  {sparkline(profile)}  final {profile[-1]:.2f} nats")
    viewer = common.viewer_main()
    if args.no_view or viewer is None or not display_available():
        reason = "" if args.no_view else (" (no display)" if viewer is not None else " (viewer not installed: pip install ./viewer)")
        print(f"\ntrace written to {out}; view it with: entropylens-view {out}{reason}")
        return 0
    return int(viewer([str(out)]) or 0)


def cmd_view(args: argparse.Namespace) -> int:
    viewer = common.viewer_main()
    if viewer is None:
        raise EntropyLensError(
            "the viewer is a separate package: pip install entropylens-viewer (from a clone: pip install ./viewer)"
        )
    return int(viewer([str(t) for t in args.traces]) or 0)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` and ``view`` commands."""
    demo = subparsers.add_parser("demo", help="record bundled prompts with the bundled model and show the result")
    demo.add_argument("--out", default="entropylens_demo.h5")
    demo.add_argument("--max-new-tokens", type=int, default=24)
    demo.add_argument("--no-view", action="store_true", help="do not open the viewer")
    demo.add_argument("--keep", action="store_true", help="append to an existing demo trace instead of replacing it")
    demo.set_defaults(func=cmd_demo)

    view = subparsers.add_parser("view", help="open traces in the desktop viewer (entropylens-viewer)")
    view.add_argument("traces", nargs="+")
    view.set_defaults(func=cmd_view)
