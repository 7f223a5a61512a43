"""``entropylens record``: prompts in, a trace (or a run folder of shards under a launcher) out."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import EntropyLensError
from ..outputs import check_output
from .common import check_live_interval, check_trace_is_free, generation_kwargs, model_folder, parse_alphas, parse_labels

if TYPE_CHECKING:
    from ..recording.distributed import Launch

__all__ = ["register", "cmd_record"]



def _prompt_rows(args: argparse.Namespace) -> bool | str:
    """``record_prompt`` from --prompt-rows / --no-prompt-rows, checked before the model loads."""
    from ..recording.recorder import parse_prompt_rows

    if args.no_prompt_rows:
        if args.prompt_rows not in (None, "none"):
            raise EntropyLensError(f"--no-prompt-rows contradicts --prompt-rows {args.prompt_rows}; give one of them")
        return False
    value = args.prompt_rows or "all"
    try:
        parse_prompt_rows(value)
    except ValueError:
        raise EntropyLensError(f"--prompt-rows {value!r}: expected all, none or last:N with N >= 1, e.g. last:64") from None
    return value


def _check_record_args(args: argparse.Namespace, folder: Path | None) -> tuple[list, list[float]]:
    """Every check ``record`` can make before the model loads; returns the prompts and Rényi orders.

    ``folder``: the run folder, checked by :func:`_run_folder` (None: ``--out`` is one trace file).
    """
    for option, value in (("--batch-size", args.batch_size), ("--max-new-tokens", args.max_new_tokens),
                          ("--top-k", args.top_k)):
        if value < 1:
            raise EntropyLensError(f"{option} {value}: must be at least 1")
    if args.sample and not args.temperature > 0:
        raise EntropyLensError(f"--temperature {args.temperature}: must be above 0 when sampling (greedy: leave out --sample)")
    if not 0 < args.top_p <= 1:
        raise EntropyLensError(f"--top-p {args.top_p}: must be in (0, 1]")
    check_live_interval(args.live_interval)
    alphas = parse_alphas(args.renyi)
    if any(not a >= 0 for a in alphas):
        raise EntropyLensError(f"--renyi {args.renyi}: Rényi orders must be >= 0 (inf allowed)")
    if args.device_map is None and args.device != "auto":
        import torch

        try:
            torch.device(args.device)
        except RuntimeError:
            raise EntropyLensError(f"--device {args.device}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
    from ..recording.prompts import read_prompts

    if folder is None:
        out = Path(args.out)
        check_output("--out", out)
        check_trace_is_free(out)
    return read_prompts(args.prompts, parse_labels(args.label)), alphas


def _run_folder(text: str, launch: "Launch") -> Path | None:
    """The run folder ``--out`` names (one shard file per process inside), or None for a single trace file.

    A folder is meant when the name ends in a slash, so a folder given by mistake (``--out .``)
    is never filled with shards; under a launcher with several processes it must be one, since
    each process needs its own file.
    """
    out = Path(text)
    if text.endswith(("/", os.sep)):
        if out.exists() and not out.is_dir():
            raise EntropyLensError(f"--out {text}: a file, not a folder; give a new folder name for the run")
        if not out.parent.is_dir():
            raise EntropyLensError(f"--out {text}: the folder {out.parent} does not exist")
        if not os.access(out if out.exists() else out.parent, os.W_OK):
            raise EntropyLensError(f"--out {text}: not writable here; choose another place")
        return out
    if out.is_dir():
        raise EntropyLensError(f"--out {text}: is a directory; give a file name, or {text}/ (with the slash) "
                               "to record into it as a run folder")
    if launch.distributed:
        raise EntropyLensError(
            f"--out {text}: {launch.world_size} processes need a run folder, one shard file each; "
            f"give a folder, e.g. --out {out.with_suffix('')}/"
        )
    return None


def _check_prompt_lengths(prompts: Sequence, tokenizer, model, max_new_tokens: int, *, chat: bool = False) -> None:
    """Refuse a prompt that, with the tokens to generate, does not fit the model's context.

    With ``chat`` the length is that of the rendered chat template, which is what generates.
    """
    from ..recording.prompts import tokenize_prompts

    from ..models.loading import context_length

    context = context_length(model)
    if context is None:
        return
    for number, prompt in enumerate(prompts, start=1):
        short = len(prompt.text) < 32 * context
        n = int(tokenize_prompts(tokenizer, [prompt], chat=chat)[0]["input_ids"].shape[1]) if short else None
        if n is None or n + max_new_tokens > context:
            size = f"{n} tokens" if n is not None else f"{len(prompt.text)} characters"
            raise EntropyLensError(
                f"prompt {number} ({size}) plus --max-new-tokens {max_new_tokens} exceeds the model's context of "
                f"{context} positions; shorten the prompt or lower --max-new-tokens"
            )


def _load_lens(args: argparse.Namespace, prompt_rows: bool | str, alphas: list[float], device: str):
    """The model and an :class:`EntropyLens` on it, as ``record``'s options ask."""
    from transformers import set_seed

    from ..models.loading import load_model
    from ..recording.recorder import EntropyLens

    lens_file = _lens_file(args.lens, args.model)
    model, tokenizer = load_model(args.model, device=device, dtype=args.dtype, device_map=args.device_map)
    if args.seed is not None:
        set_seed(args.seed)
    tuned = None
    if lens_file is not None:
        from ..lens.tuned import TunedLens

        tuned = TunedLens.load(lens_file)
    try:
        return EntropyLens(model, tokenizer, top_k=args.top_k, renyi_alphas=alphas, record_prompt=prompt_rows,
                           lens_dtype=args.lens_dtype, model_name=args.model, sublayers=args.sublayers, lens=tuned)
    except EntropyLensError:  # e.g. --sublayers on a model whose attention and MLP run in parallel, a lens for another model
        raise
    except ValueError as exc:
        raise EntropyLensError(f"--top-k {args.top_k}: {exc}") from None


def _record(lens, prompts: Sequence, out: Path, args: argparse.Namespace, chat: bool, progress: bool) -> tuple[int, int]:
    from ..recording.prompts import record_prompts

    _check_prompt_lengths(prompts, lens.tokenizer, lens.model, args.max_new_tokens, chat=chat)
    return record_prompts(lens, prompts, out, batch_size=args.batch_size, chat=chat, progress=progress,
                          live=args.live, live_interval=args.live_interval, **generation_kwargs(args))


def cmd_record(args: argparse.Namespace) -> int:
    from ..recording.distributed import launch

    where = launch()
    folder = _run_folder(args.out, where)
    prompt_rows = _prompt_rows(args)
    prompts, alphas = _check_record_args(args, folder)
    chat = args.chat or any(p.messages for p in prompts)
    lens_file = _lens_file(args.lens, args.model)  # checked before any model loads
    if folder is not None:
        return _record_into_folder(args, folder, where, prompts, alphas, prompt_rows, chat)
    _check_trace_lens(Path(args.out), lens_file)
    lens = _load_lens(args, prompt_rows, alphas, args.device)
    recorded, skipped = _record(lens, prompts, Path(args.out), args, chat, progress=not args.quiet)
    note = f", skipped {skipped} already in the file" if skipped else ""
    print(f"recorded {recorded} prompt(s) into {args.out}{note}")
    return 0


def _lens_file(value: str, model: str) -> Path | None:
    """The tuned-lens file ``--lens`` names (``None`` for the logit lens), checked before the model loads.

    ``tuned`` means ``tuned_lens.safetensors`` in the model's folder: the bundled model's
    folder for ``default``, the cache folder of a fetched model, a local model folder, or the
    folder of a GGUF file.
    """
    from ..lens.tuned import LENS_FILE_NAME, read_header

    if value == "logit":
        return None
    if value == "tuned":
        folder = model_folder(model)
        path = folder / LENS_FILE_NAME if folder is not None else None
        if path is None or not path.is_file():
            where = f"no {LENS_FILE_NAME} in {folder}" if folder is not None else f"{model} has no local folder"
            raise EntropyLensError(
                f"--lens tuned: {where}; train one with `entropylens train-lens {model} --text FILE --out "
                f"{path if path is not None else LENS_FILE_NAME}`, or give the lens file's path")
    else:
        path = Path(value)
        if not path.is_file():
            raise EntropyLensError(f"--lens {value}: neither logit, tuned nor an existing tuned-lens file")
    read_header(path)
    return path


def _check_trace_lens(out: Path, lens_file: Path | None) -> None:
    """Refuse, before the model loads, to append to a trace recorded through another lens."""
    if not out.exists():
        return
    from ..trace import Trace
    from ..lens.tuned import file_sha256

    with Trace.open(out) as trace:
        recorded = trace.metadata.lens
    kind, sha = ("logit", "") if lens_file is None else ("tuned", file_sha256(lens_file))
    if recorded.get("kind", "logit") != kind or recorded.get("sha256", "") != sha:
        was = recorded.get("kind", "logit") + (f" ({recorded['name']})" if recorded.get("name") else "")
        now = "logit" if lens_file is None else f"tuned ({lens_file.name})"
        raise EntropyLensError(f"--out {out}: recorded through the {was} lens, not the {now} lens; "
                               "write to a new file, or record with the trace's own --lens")


def _record_into_folder(args: argparse.Namespace, folder: Path, where: "Launch", prompts: list, alphas: list[float],
                        prompt_rows: bool | str, chat: bool) -> int:
    """This process's share of the prompts into its shard of the run folder; one summary at the end.

    Every process reads the folder before any writes to it (a barrier when a process group
    exists), and loads the model only if its share is not empty.
    """
    import dataclasses

    from ..recording.distributed import RunGroup, pick_device, prepare_share
    from ..trace.writer import settings_differences

    if chat:
        prompts = [p.as_chat() for p in prompts]  # the keys a chat prompt is recorded under
    with RunGroup(where) as group:
        def check(reference):  # the settings known before loading; all of them once the model is there
            _refuse_other_settings(folder, settings_differences(reference, dataclasses.replace(
                reference, model_name=args.model, top_k=args.top_k, renyi_alphas=tuple(alphas))))

        share = prepare_share(folder, prompts, where, check)
        group.barrier()
        reference = share.metadata
        recorded = 0
        if share.prompts:
            device = args.device if args.device_map is not None else pick_device(where, args.device)
            lens = _load_lens(args, prompt_rows, alphas, device)
            if reference is not None:
                _refuse_other_settings(folder, settings_differences(reference, lens.metadata()))
            recorded, _ = _record(lens, share.prompts, share.shard, args, chat,
                                  progress=not args.quiet and where.rank == 0)
        counts, met = group.gather(recorded), group.joined
    if counts is None:
        return 0
    if met or not where.distributed:
        per = f" ({' + '.join(map(str, counts))} by {len(counts)} processes)" if len(counts) > 1 else ""
        print(f"recorded {sum(counts)} prompt(s) into {folder}/{per}"
              + (f", skipped {share.skipped} already in the folder" if share.skipped else ""))
    else:  # no process group to meet in: each process says what it did
        print(f"rank {where.rank}/{where.world_size}: recorded {recorded} prompt(s) into {share.shard}"
              + (f", skipped {share.skipped} already in {folder}" if share.skipped else ""))
    return 0


def _refuse_other_settings(folder: Path, differences: list[str]) -> None:
    if differences:
        raise EntropyLensError(f"--out {folder}: the run was recorded with other settings ({'; '.join(differences)}); "
                               "use the same settings to resume it, or record into a new folder")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``record`` command."""
    rec = subparsers.add_parser("record", help="record the entropy lens of generated text into a trace")
    rec.add_argument("model", help="'default' (the bundled model), a fetched name (smollm2, see `entropylens fetch`), "
                     "a .gguf file or a folder holding one, a local model folder, or a hub id")
    rec.add_argument("--prompts", required=True,
                     help="text file (one prompt per line) or JSONL with prompt (or chat messages) and labels")
    rec.add_argument("--chat", action="store_true",
                     help="render each prompt as a user message through the model's chat template "
                          "(implied when a JSONL line gives messages)")
    rec.add_argument("--out", required=True,
                     help="trace file (.h5), or a run folder (RUN/: one shard file per process under torchrun, "
                          "accelerate or srun); appended to and resumed if it exists")
    rec.add_argument("--max-new-tokens", type=int, default=64)
    rec.add_argument("--top-k", type=int, default=10, help="top-k predictions stored per layer (default 10)")
    rec.add_argument("--batch-size", type=int, default=8)
    rec.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    rec.add_argument("--device-map", default=None, help="spread the model over devices, e.g. auto (needs accelerate)")
    rec.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, else float32), float32, bfloat16, float16")
    rec.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    rec.add_argument("--temperature", type=float, default=1.0)
    rec.add_argument("--top-p", type=float, default=1.0)
    rec.add_argument("--seed", type=int, default=None, help="seed for sampling (reproducible runs)")
    rec.add_argument("--renyi", default=None, help="extra Rényi orders to record, e.g. 0,2,inf")
    rec.add_argument("--no-prompt-rows", action="store_true", help="record generated tokens only")
    rec.add_argument("--prompt-rows", default=None, metavar="all|none|last:N",
                     help="prompt positions to record: all (default), none, or the last N (cheap long prompts)")
    rec.add_argument("--lens-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                     help="lens product: auto (default: the fastest product within 0.005 nats of float32 on this hardware, see docs/performance.md), float32, bfloat16, float16")
    rec.add_argument("--sublayers", action="store_true",
                     help="also read each layer's residual after attention, before the MLP (rows 1.attn, 1.mlp, ...)")
    rec.add_argument("--lens", default="logit", metavar="logit|tuned|FILE",
                     help="logit (default): the logit lens; tuned: the tuned lens stored with the model "
                          "(tuned_lens.safetensors in its folder; the bundled model has one); FILE: a tuned lens "
                          "written by `entropylens train-lens`")
    rec.add_argument("--live", action="store_true",
                     help="write each batch's rows while it is generated, so a viewer following the trace sees them grow")
    rec.add_argument("--live-interval", type=float, default=1.0,
                     help="with --live: seconds between live writes at most (default 1)")
    rec.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label for every prompt (repeatable)")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=cmd_record)
