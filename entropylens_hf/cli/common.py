"""Option checks and helpers that several commands share (each raises one-line EntropyLensError)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Sequence

from ..errors import EntropyLensError



def parse_labels(pairs: Sequence[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise EntropyLensError(f"--label {pair!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def parse_alphas(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        return [math.inf if a.strip().lower() in ("inf", "infinity") else float(a) for a in text.split(",")]
    except ValueError:
        raise EntropyLensError(f"--renyi {text!r}: expected comma-separated orders, e.g. 0,2,inf") from None


def generation_kwargs(args: argparse.Namespace) -> dict:
    kwargs = {"max_new_tokens": args.max_new_tokens}
    if args.sample:
        kwargs.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def check_live_interval(value: float) -> None:
    if not value >= 0:
        raise EntropyLensError(f"--live-interval {value}: must be >= 0 seconds")


def model_folder(model: str) -> Path | None:
    """The local folder MODEL loads from, if any (without loading it)."""
    from ..models.fetch import REGISTRY, model_dir

    if model == "default":
        from ..models.bundled import default_model_path

        return default_model_path()
    if model in REGISTRY:
        return model_dir(model)
    path = Path(model).expanduser()
    if path.is_file():
        return path.parent
    return path if path.is_dir() else None


def display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def viewer_main():
    try:
        from entropylens_viewer.app import main as viewer_main
    except ImportError:
        return None
    return viewer_main



def check_trace_is_free(out: Path) -> None:
    """Refuse, before a model loads, a trace that another writer holds or that is foreign or damaged."""
    from ..trace import Trace
    from ..trace.locking import lock_holder

    busy = lock_holder(out)
    if busy is not None:
        raise EntropyLensError(str(busy))
    if out.exists():
        Trace.open(out).close()  # a foreign or damaged file is refused now, not after loading the model
