"""``entropylens html``: a trace as one self-contained HTML page, to copy from a server and open anywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EntropyLensError
from ..outputs import check_output

__all__ = ["register", "parse_sequences"]


def parse_sequences(text: str) -> list[int]:
    """``"0,3,5-9"`` as ``[0, 3, 5, 6, 7, 8, 9]``: indices and inclusive ranges, in the order given."""
    chosen: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            if "-" in part[1:]:
                first, last = (int(x) for x in part.split("-", 1)) if not part.startswith("-") else (None, None)
                if first is None or last < first:
                    raise ValueError
                chosen.extend(range(first, last + 1))
            else:
                chosen.append(int(part))
        except (TypeError, ValueError):
            raise EntropyLensError(f"--sequences {text!r}: {part!r} is not an index or a range like 5-9; "
                                   "give e.g. --sequences 0,3,5-9") from None
    return chosen


def cmd_html(args: argparse.Namespace) -> int:
    from ..display import view
    from ..trace import Trace

    out = Path(args.out) if args.out else Path(str(Path(args.trace)).rstrip("/")).with_suffix(".html")
    check_output("--out", out)
    sequences = parse_sequences(args.sequences) if args.sequences is not None else None
    if args.top_k < 1:
        raise EntropyLensError(f"--top-k {args.top_k}: give at least 1 prediction per cell")
    with Trace.open(args.trace) as trace:
        page = view(trace, sequences=sequences, top_k=args.top_k)
        page.save(out)
    shown = len(page.data["sequences"])
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {shown} of {page.data['summary']['sequences']} "
          "sequence(s)); open it in any browser, no network needed")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``html`` command."""
    cmd = subparsers.add_parser("html", help="write a trace as one self-contained HTML page (heatmap, hover, profiles)")
    cmd.add_argument("trace", help="trace file (.h5) or run folder")
    cmd.add_argument("--sequences", default=None,
                     help="which sequences to include, e.g. 0,3,5-9 (default: the first few, up to about 7 MB)")
    cmd.add_argument("--top-k", type=int, default=5, help="predictions per cell shown on hover (default 5)")
    cmd.add_argument("--out", default=None, help="the page to write (default: the trace's name with .html)")
    cmd.set_defaults(func=cmd_html)
