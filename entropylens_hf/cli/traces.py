"""Commands on recorded traces: ``info`` (a summary), ``merge`` (shards into one file), ``export`` (CSV, Parquet)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ..errors import EntropyLensError
from ..outputs import check_output

__all__ = ["register", "summarize", "sparkline"]



_BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    """One bar character per value, scaled between the smallest and the largest."""
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


def cmd_info(args: argparse.Namespace) -> int:
    from ..trace import Trace

    with Trace.open(args.trace) as trace:
        print(summarize(trace))
    return 0


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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``merge`` and ``info`` and ``export`` commands."""
    merge = subparsers.add_parser("merge", help="write the shards of a run folder into one trace file")
    merge.add_argument("folder", help="run folder written by `record --out RUN/` (one shard file per process)")
    merge.add_argument("--out", required=True, help="the trace file to write (.h5); must not exist")
    merge.set_defaults(func=cmd_merge)

    info = subparsers.add_parser("info", help="summarise a trace")
    info.add_argument("trace")
    info.set_defaults(func=cmd_info)

    exp = subparsers.add_parser("export", help="export a trace as CSV or Parquet")
    exp.add_argument("trace")
    exp.add_argument("--to", choices=["csv", "parquet"], default="csv")
    exp.add_argument("--layout", choices=["wide", "long"], default="wide",
                     help="wide: a row per token with entropy_0..entropy_L; long: a row per token and layer")
    exp.add_argument("--out", default=None, help="output path (default: the trace's name with .csv/.parquet)")
    exp.set_defaults(func=cmd_export)
