"""``entropylens chat``: a terminal chat whose every reply is recorded live into a trace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EntropyLensError
from ..outputs import check_output
from . import common
from .common import check_live_interval, check_trace_is_free, generation_kwargs

__all__ = ["register", "cmd_chat"]



def cmd_chat(args: argparse.Namespace) -> int:
    import subprocess

    out = Path(args.out)
    check_output("--out", out)
    for option, value in (("--max-new-tokens", args.max_new_tokens), ("--top-k", args.top_k)):
        if value < 1:
            raise EntropyLensError(f"{option} {value}: must be at least 1")
    check_live_interval(args.live_interval)
    if args.sample and not args.temperature > 0:
        raise EntropyLensError(f"--temperature {args.temperature}: must be above 0 when sampling")
    check_trace_is_free(out)
    if args.view and common.viewer_main() is None:
        raise EntropyLensError("--view needs the viewer: pip install entropylens-viewer (from a clone: pip install ./viewer)")
    from transformers import set_seed

    from ..recording.chat import HELP, ChatSession, run_chat
    from ..models.loading import load_model
    from ..recording.recorder import EntropyLens

    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.seed is not None:
        set_seed(args.seed)
    lens = EntropyLens(model, tokenizer, top_k=args.top_k, model_name=args.model)
    with lens.record(out, live=True, live_interval=args.live_interval) as rec:
        session = ChatSession(lens, rec, generation_kwargs(args), system=args.system)
        if session.plain:
            print(f"{args.model}: no chat template, so the conversation is sent as a plain 'User: / Assistant:' "
                  "transcript (text continuation, not an instruct model)")
        viewer = None
        if args.view:
            viewer = subprocess.Popen([sys.executable, "-m", "entropylens_viewer.app", "--follow", str(out)],
                                      start_new_session=True)  # Ctrl-C in the chat does not reach it
        print(f"recording every reply live into {out}; {HELP}", flush=True)
        replies = run_chat(session)
    print(f"{replies} repl{'y' if replies == 1 else 'ies'} recorded in {out}"
          + ("; the viewer stays open" if viewer is not None and viewer.poll() is None else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``chat`` command."""
    chat = subparsers.add_parser("chat", help="chat with a model in the terminal, every reply recorded live into a trace")
    chat.add_argument("model", help="as for record; 'default' has no chat template and gets a plain transcript")
    chat.add_argument("--out", default="chat.h5", help="trace file (default chat.h5); appended to if it exists")
    chat.add_argument("--view", action="store_true", help="open the viewer following the trace")
    chat.add_argument("--max-new-tokens", type=int, default=256, help="longest reply, in tokens (default 256)")
    chat.add_argument("--system", default=None, help="a system message that starts every conversation")
    chat.add_argument("--top-k", type=int, default=10, help="top-k predictions stored per layer (default 10)")
    chat.add_argument("--live-interval", type=float, default=1.0,
                      help="seconds between live writes at most (default 1; rows also go out at block boundaries)")
    chat.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    chat.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, else float32), float32, bfloat16, float16")
    chat.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    chat.add_argument("--temperature", type=float, default=1.0)
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--seed", type=int, default=None)
    chat.set_defaults(func=cmd_chat)
