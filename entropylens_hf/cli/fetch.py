"""``entropylens fetch``: download a registered real model once, convert it, and list the zoo."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["cmd_fetch", "register"]


def register(subparsers: Any) -> None:
    """Add the ``fetch`` command to the CLI's subparsers."""
    fetch = subparsers.add_parser("fetch", help="download a named real model once and cache it converted "
                                                "(smollm2, gemma3-270m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b)")
    fetch.add_argument("name", nargs="?", help="model name, e.g. smollm2 (see --list)")
    fetch.add_argument("--list", action="store_true", help="list the models that can be fetched and where they are cached")
    fetch.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                       help="dtype of the converted folder: float32 (default, the exact dequantised weights) or "
                            "bfloat16 (half the disk and memory)")
    fetch.set_defaults(func=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..models.fetch import fetch_model
    from ..models.registry import CACHE_ENV, cache_root, is_fetched, model_dir, registered

    if args.list or args.name is None:
        _print_zoo()
        return 0
    spec = registered(args.name)
    if is_fetched(spec.name):
        print(f"{spec.name}: already fetched in {model_dir(spec.name)}"
              f" ({_stored_dtype(spec.name)}; delete the folder to fetch it again)")
        return 0
    path = fetch_model(spec.name, dtype=args.dtype, log=lambda message: print(f"{spec.name}: {message}", flush=True))
    chat = " --chat" if spec.chat else ""
    print(f"{spec.name}: ready in {path} (cache {cache_root()}, set {CACHE_ENV} to move it); "
          f"use it as MODEL, e.g. entropylens record {spec.name}{chat} --prompts P.txt --out T.h5")
    return 0


def _print_zoo() -> None:
    from ..models.registry import CACHE_ENV, REGISTRY, cache_root, folder_size, is_fetched, model_dir

    for spec in REGISTRY.values():
        if is_fetched(spec.name):
            path = model_dir(spec.name)
            state = f"fetched in {path} ({folder_size(path) / 1e9:.2f} GB, {_stored_dtype(spec.name)})"
        else:
            state = f"not fetched (about {spec.parameters * 4 / 1e9:.2f} GB as float32, " \
                    f"{spec.parameters * 2 / 1e9:.2f} GB as bfloat16)"
        print(f"{spec.name:<19} {spec.title}\n{'':<19} family {spec.family}, {spec.layers} layers, vocabulary "
              f"{spec.vocabulary:,}{', chat template' if spec.chat else ', no chat template'}; licence {spec.licence}; "
              f"from PyPI {spec.requirement}\n{'':<19} {state}")
    print(f"cache: {cache_root()} (set {CACHE_ENV} to move it)")


def _stored_dtype(name: str) -> str:
    import json

    from ..models.registry import MANIFEST, model_dir

    return json.loads((model_dir(name) / MANIFEST).read_text(encoding="utf-8")).get("dtype", "float32")
