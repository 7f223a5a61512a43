"""The ``entropylens`` command line: a small ``main`` over one module per command group.

Each command module (``record``, ``train``, ``fetch``, ``traces``, ``html``, ``chat``, ``demo``; the analyses in
:mod:`entropylens_hf.analysis.commands`) has a ``register(subparsers)`` that adds its parsers
and their handlers; adding a command is one entry in :data:`COMMAND_GROUPS`. Every user error
is an :class:`EntropyLensError`, printed as one line with exit code 2. Heavy imports (torch,
transformers) happen inside the commands that need them, so ``entropylens info`` and
``--help`` start fast.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Sequence

from .._version import __version__
from ..errors import EntropyLensError
from . import chat, demo, fetch, html, record, traces, train

__all__ = ["main", "build_parser", "COMMAND_GROUPS"]

#: The command modules, in the order ``--help`` lists them.
COMMAND_GROUPS = (record, train, fetch, traces, html, chat, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entropylens", description="Entropy-Lens for Hugging Face language models.")
    parser.add_argument("--version", action="version", version=f"entropylens-hf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    if importlib.util.find_spec("entropylens_hf.analysis.commands") is not None:
        from ..analysis.commands import register

        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EntropyLensError as exc:
        print(f"entropylens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"entropylens {args.command}: interrupted; finished sequences are in the trace", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `entropylens info t.h5 | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
