"""The ``entropylens`` command line: record | merge | info | export | demo | view, plus the analyses.

Every user error is an :class:`EntropyLensError`, printed as one line with exit code 2.
Heavy imports (torch, transformers) happen inside the commands that need them, so
``entropylens info`` and ``--help`` start fast.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .._version import __version__
from ..errors import EntropyLensError
from ..outputs import check_output
from .fetch import register as register_fetch

if TYPE_CHECKING:
    from ..recording.distributed import Launch

__all__ = ["main"]

_BARS = " ▁▂▃▄▅▆▇█"


# ---------------------------------------------------------------------- record


def _parse_labels(pairs: Sequence[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise EntropyLensError(f"--label {pair!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def _parse_alphas(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        return [math.inf if a.strip().lower() in ("inf", "infinity") else float(a) for a in text.split(",")]
    except ValueError:
        raise EntropyLensError(f"--renyi {text!r}: expected comma-separated orders, e.g. 0,2,inf") from None


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


def _generation_kwargs(args: argparse.Namespace) -> dict:
    kwargs = {"max_new_tokens": args.max_new_tokens}
    if args.sample:
        kwargs.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def _check_live_interval(value: float) -> None:
    if not value >= 0:
        raise EntropyLensError(f"--live-interval {value}: must be >= 0 seconds")


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
    _check_live_interval(args.live_interval)
    alphas = _parse_alphas(args.renyi)
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
        from ..trace import Trace
        from ..trace.locking import lock_holder

        busy = lock_holder(out)
        if busy is not None:
            raise EntropyLensError(str(busy))
        if out.exists():
            Trace.open(out).close()  # a foreign or damaged file is refused now, not after loading the model
    return read_prompts(args.prompts, _parse_labels(args.label)), alphas


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
                          live=args.live, live_interval=args.live_interval, **_generation_kwargs(args))


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
        folder = _model_folder(model)
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


def _model_folder(model: str) -> Path | None:
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


# ---------------------------------------------------------------------- train-lens


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


# ---------------------------------------------------------------------- info


def _sparkline(values: Sequence[float]) -> str:
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(_BARS[1 + int(round((v - lo) / span * (len(_BARS) - 2)))] for v in values)


def summarize(trace) -> str:
    """A human summary of a trace: model, sizes, labels, mean entropy profile."""
    m = trace.metadata
    n = len(trace)
    lengths, prompts = trace.sequence_lengths, trace.prompt_lengths
    size = trace.file_size()
    rows = trace.num_rows
    lens = m.lens_kind + " lens" + (f" {m.lens['name']} (sha256 {str(m.lens.get('sha256', ''))[:16]}...)"
                                     if m.lens.get("name") else "")
    lines = [
        f"trace      {trace.path}  ({size / 1e6:.2f} MB, schema {m.schema_version}, written by entropylens-hf {m.library_version})",
        f"model      {m.model_name}  ({m.num_layers} lens layers: embeddings + {m.decoder_layers} decoder layers"
        f"{' at attention and MLP outputs' if m.sublayers else ''}; vocabulary {m.vocab_size}; top-{m.top_k}"
        + (f"; Rényi orders {', '.join(str(a) for a in m.renyi_alphas)}" if m.renyi_alphas else "")
        + ")",
        f"lens       {lens}",
        f"sequences  {n} in {len(trace.runs())} generate call(s); {int(lengths.sum())} tokens "
        f"({int(prompts.sum())} prompt, {int((lengths - prompts).sum())} generated)",
    ]
    shards = getattr(trace, "shards", None)
    if shards is not None:
        lines.insert(1, f"shards     {len(shards)}: {', '.join(p.name for p in shards)}")
    if rows:
        lines.append(f"storage    {size / (rows * m.num_layers):.1f} bytes per token-layer ({rows} rows x {m.num_layers} layers)")
    counts: dict[str, dict[str, int]] = {}
    for labels in trace.labels:
        for key, value in labels.items():
            counts.setdefault(key, {}).setdefault(value, 0)
            counts[key][value] += 1
    for key, values in sorted(counts.items()):
        shown = ", ".join(f"{v} {c}" for v, c in sorted(values.items(), key=lambda kv: -kv[1])[:8])
        more = f", ... ({len(values)} values)" if len(values) > 8 else ""
        lines.append(f"label      {key}: {shown}{more}")
    if n:
        mean = trace.mean_profiles.mean(axis=0)
        lines.append("mean entropy profile over generated tokens (nats):")
        width = max(len(name) for name in m.layer_names)
        top = float(mean.max()) or 1.0
        for name, value in zip(m.layer_names, mean):
            lines.append(f"  {name:<{width}}  {value:6.3f}  {'█' * max(1, int(round(30 * value / top)))}")
    return "\n".join(lines)


def cmd_merge(args: argparse.Namespace) -> int:
    from ..trace.shards import merge_shards

    folder, out = Path(args.folder), Path(args.out)
    if not folder.is_dir():
        raise EntropyLensError(f"{folder}: not a run folder" + ("; it is one trace file already, nothing to merge"
                                                                if folder.is_file() else ""))
    check_output("--out", out)
    if out.resolve().parent == folder.resolve():
        raise EntropyLensError(f"--out {out}: inside the run folder, where it would be read as one more shard; "
                               "write it next to the folder")
    n = merge_shards(folder, out)
    print(f"merged {n} sequence(s) from {folder} into {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..trace import Trace

    with Trace.open(args.trace) as trace:
        print(summarize(trace))
    return 0


# ---------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from ..trace import Trace

    out = Path(args.out) if args.out else Path(args.trace).with_suffix(f".{args.to}")
    check_output("--out", out)
    with Trace.open(args.trace) as trace:
        try:
            frame = trace.to_dataframe(layout=args.layout)
        except ImportError as exc:
            raise EntropyLensError(str(exc)) from None
    if args.to == "csv":
        frame.to_csv(out, index=False)
    else:
        try:
            frame.to_parquet(out, index=False)
        except ImportError:
            raise EntropyLensError("parquet export needs pyarrow: pip install 'entropylens-hf[export]'") from None
    print(f"wrote {len(frame)} rows ({args.layout}) to {out}")
    return 0


# ---------------------------------------------------------------------- demo / view


def _display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _viewer_main():
    try:
        from entropylens_viewer.app import main as viewer_main
    except ImportError:
        return None
    return viewer_main


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
            print(f"  [{kind:>11}] {gen[:, 1].mean():5.2f} -> {gen[:, -1].mean():5.2f}  {_sparkline(gen.mean(0))}  {text[:70]}")
        kinds = sorted({v for lab in trace.labels for v in lab.values()})
        if kinds:
            print("mean profile per kind (embeddings .. last layer):")
            for kind in kinds:
                profile = np.mean([s.entropy[s.is_generated].mean(0) for s in trace if kind in s.labels.values()], axis=0)
                print(f"  {kind:>11}  {_sparkline(profile)}  final {profile[-1]:.2f} nats")
    viewer = _viewer_main()
    if args.no_view or viewer is None or not _display_available():
        reason = "" if args.no_view else (" (no display)" if viewer is not None else " (viewer not installed: pip install ./viewer)")
        print(f"\ntrace written to {out}; view it with: entropylens-view {out}{reason}")
        return 0
    return int(viewer([str(out)]) or 0)


def cmd_view(args: argparse.Namespace) -> int:
    viewer = _viewer_main()
    if viewer is None:
        raise EntropyLensError(
            "the viewer is a separate package: pip install entropylens-viewer (from a clone: pip install ./viewer)"
        )
    return int(viewer([str(t) for t in args.traces]) or 0)


# ---------------------------------------------------------------------- chat


def cmd_chat(args: argparse.Namespace) -> int:
    import subprocess

    out = Path(args.out)
    check_output("--out", out)
    for option, value in (("--max-new-tokens", args.max_new_tokens), ("--top-k", args.top_k)):
        if value < 1:
            raise EntropyLensError(f"{option} {value}: must be at least 1")
    _check_live_interval(args.live_interval)
    if args.sample and not args.temperature > 0:
        raise EntropyLensError(f"--temperature {args.temperature}: must be above 0 when sampling")
    from ..trace import Trace
    from ..trace.locking import lock_holder

    busy = lock_holder(out)
    if busy is not None:
        raise EntropyLensError(str(busy))
    if out.exists():
        Trace.open(out).close()  # a foreign or damaged file is refused now, not after loading the model
    if args.view and _viewer_main() is None:
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
        session = ChatSession(lens, rec, _generation_kwargs(args), system=args.system)
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


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entropylens", description="Entropy-Lens for Hugging Face language models.")
    parser.add_argument("--version", action="version", version=f"entropylens-hf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rec = sub.add_parser("record", help="record the entropy lens of generated text into a trace")
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
                     help="dtype of the lens product: auto (the model's dtype, default), float32, bfloat16, float16")
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

    tl = sub.add_parser("train-lens", help="train a tuned lens (one affine translator per layer) for a model on a text")
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

    register_fetch(sub)

    merge = sub.add_parser("merge", help="write the shards of a run folder into one trace file")
    merge.add_argument("folder", help="run folder written by `record --out RUN/` (one shard file per process)")
    merge.add_argument("--out", required=True, help="the trace file to write (.h5); must not exist")
    merge.set_defaults(func=cmd_merge)

    chat = sub.add_parser("chat", help="chat with a model in the terminal, every reply recorded live into a trace")
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

    info = sub.add_parser("info", help="summarise a trace")
    info.add_argument("trace")
    info.set_defaults(func=cmd_info)

    exp = sub.add_parser("export", help="export a trace as CSV or Parquet")
    exp.add_argument("trace")
    exp.add_argument("--to", choices=["csv", "parquet"], default="csv")
    exp.add_argument("--layout", choices=["wide", "long"], default="wide",
                     help="wide: a row per token with entropy_0..entropy_L; long: a row per token and layer")
    exp.add_argument("--out", default=None, help="output path (default: the trace's name with .csv/.parquet)")
    exp.set_defaults(func=cmd_export)

    demo = sub.add_parser("demo", help="record bundled prompts with the bundled model and show the result")
    demo.add_argument("--out", default="entropylens_demo.h5")
    demo.add_argument("--max-new-tokens", type=int, default=24)
    demo.add_argument("--no-view", action="store_true", help="do not open the viewer")
    demo.add_argument("--keep", action="store_true", help="append to an existing demo trace instead of replacing it")
    demo.set_defaults(func=cmd_demo)

    view = sub.add_parser("view", help="open traces in the desktop viewer (entropylens-viewer)")
    view.add_argument("traces", nargs="+")
    view.set_defaults(func=cmd_view)

    import importlib.util

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
