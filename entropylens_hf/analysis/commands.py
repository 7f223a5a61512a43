"""The analysis subcommands of ``entropylens``: classify, skip-eval, fingerprint.

:func:`register` adds them to the main parser's subparsers; each handler returns an exit
code and raises :class:`~entropylens_hf.errors.EntropyLensError` for user errors. Imports of
numpy-heavy or torch-heavy modules happen inside the handlers, so ``entropylens --help``
stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EntropyLensError
from ..outputs import check_output

__all__ = ["register", "BUNDLED_MC"]

BUNDLED_MC = Path(__file__).resolve().parent.parent / "assets" / "prompts" / "mc_pydoc_cloze.jsonl"


def _alpha(text: str) -> float:
    try:
        return float(text)  # accepts "inf"
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a Rényi order such as 0, 2 or inf, got {text!r}") from None


def _layer_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices such as 0 or 0,1, got {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def cmd_classify(args: argparse.Namespace) -> int:
    from ..trace import Trace
    from .classify import classify_trace, format_classification

    with Trace.open(args.trace) as trace:
        result = classify_trace(trace, args.label, alpha=args.alpha, windows=args.windows, rows=args.rows,
                                k=args.k, folds=args.folds, seed=args.seed)
    print(format_classification(result))
    return 0


def _read_texts(path: str) -> list[str]:
    """Paragraphs (blocks separated by blank lines) of a text file."""
    file = Path(path)
    if not file.is_file():
        raise EntropyLensError(f"--text {path}: no such file")
    from ..recording.prompts import read_text

    paragraphs = [p.strip() for p in read_text(file).replace("\r\n", "\n").split("\n\n")]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        raise EntropyLensError(f"--text {path}: the file holds no text")
    return paragraphs


def _default_texts() -> list[str]:
    """Held-out text: the passages of the bundled multiple-choice set, each followed by its answer.

    They are Python-documentation paragraphs held out from the training of the bundled model
    (``tools/train_model.py`` holds out every 20th document).
    """
    from .evaluation import read_multiple_choice

    return [item.answer_text for item in read_multiple_choice(BUNDLED_MC)]


def cmd_skip_eval(args: argparse.Namespace) -> int:
    if args.mc and args.text:
        raise EntropyLensError("give either --mc or --text, not both")
    from ..models.loading import load_model
    from .evaluation import read_multiple_choice
    from .skipping import format_skip_experiment, skip_experiment

    items = read_multiple_choice(args.mc)[: args.limit] if args.mc else None
    texts = None if items is not None else (_read_texts(args.text) if args.text else _default_texts())[: args.limit]
    if args.trace:
        from ..trace import Trace

        Trace.open(args.trace).close()  # a missing or damaged trace is refused before the model loads
    model, tokenizer = load_model(args.model, device=args.device, dtype="float32")
    profile, source = None, ""
    if args.trace:
        from ..trace import Trace
        from .profiles import profile_matrix

        with Trace.open(args.trace) as trace:
            profiles = profile_matrix(trace)
        if profiles.features.shape[0] == 0:
            raise EntropyLensError(f"--trace {args.trace}: no sequence with generated tokens")
        profile, source = profiles.features.mean(axis=0), f"mean generated-token profile of {args.trace}"
    try:
        result = skip_experiment(model, tokenizer, n_layers=args.n_layers, items=items, texts=texts, profile=profile,
                                 profile_source=source, seeds=args.seeds, seed=args.seed, max_length=args.max_length,
                                 model_name=args.model, exclude=args.exclude)
    except ValueError as exc:  # n_layers too large, a trace of another depth
        raise EntropyLensError(str(exc)) from None
    print(format_skip_experiment(result))
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from .fingerprint import fingerprint_traces, plot_fingerprint

    out = Path(args.out)
    if args.points < 2:
        raise EntropyLensError(f"--points {args.points}: at least 2 depth points are needed")
    check_output("--out", out)
    result = fingerprint_traces(args.traces, method=args.method, points=args.points, alpha=args.alpha, seed=args.seed)
    plot_fingerprint(result, out)
    counts = {m: result.models.count(m) for m in dict.fromkeys(result.models)}
    print(f"{sum(counts.values())} profiles of {len(counts)} model(s) embedded with {args.method} into {out}")
    return 0


def cmd_sublayers(args: argparse.Namespace) -> int:
    from ..trace import Trace
    from .attribution import format_sublayer_shares, step_sites, trace_sublayer_shares
    from .dynamics import EXPANSION, PRUNING
    from .profiles import token_profiles

    with Trace.open(args.trace) as trace:
        shares = trace_sublayer_shares(trace, args.label, rows=args.rows)
        kinds = trace.metadata.layer_kinds
        counts = {EXPANSION: {}, PRUNING: {}}
        tokens = 0
        for record in trace:
            for profile in token_profiles(record, rows=args.rows):
                tokens += 1
                for kind in counts:
                    for row in step_sites(profile, kinds, kind, coverage=args.coverage).rows:
                        counts[kind][row] = counts[kind].get(row, 0) + 1
    print(format_sublayer_shares(shares, label=args.label))
    overall = next(iter(shares.values())) if len(shares) == 1 else None
    if overall is not None:
        print("mean entropy step per layer (nats): attention / MLP")
        for i, (a, m) in enumerate(zip(overall.mean_attention, overall.mean_mlp), start=1):
            print(f"  layer {i:>3}  {a:+.3f} / {m:+.3f}")
    for kind, name in ((EXPANSION, "expansion"), (PRUNING, "pruning")):
        top = sorted(counts[kind].items(), key=lambda kv: -kv[1])[:6]
        listed = ", ".join(f"{row} {100 * c / max(tokens, 1):.0f}%" for row, c in top) or "none"
        print(f"{name} sites (steps doing {100 * args.coverage:.0f}% of a token's {name}; share of tokens): {listed}")
    return 0


def _coverage(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``classify``, ``skip-eval``, ``fingerprint`` and ``sublayers`` to the ``entropylens`` command."""
    cls = subparsers.add_parser("classify", help="predict a label of each sequence from its entropy profile (k-NN, CV)")
    cls.add_argument("trace")
    cls.add_argument("--label", required=True, help="the stored label to predict, e.g. task")
    cls.add_argument("--alpha", type=_alpha, default=None, help="use the recorded Rényi entropy of this order (default: Shannon)")
    cls.add_argument("--windows", type=_positive, default=None,
                     help="split the generated tokens into N windows and concatenate their mean profiles (default: one mean)")
    cls.add_argument("--rows", choices=["generated", "prompt", "all"], default="generated",
                     help="which token rows to average (default: generated)")
    cls.add_argument("--k", type=_positive, default=5, help="neighbours of the k-NN classifier (default 5)")
    cls.add_argument("--folds", type=_positive, default=10, help="cross-validation folds (default 10; fewer if a class is smaller)")
    cls.add_argument("--seed", type=int, default=0)
    cls.set_defaults(func=cmd_classify)

    skip = subparsers.add_parser("skip-eval", help="skip the layers of maximal expansion / pruning / random layers; compare scores")
    skip.add_argument("model", help="local model folder, or 'default' for the bundled model")
    skip.add_argument("--mc", default=None, metavar="FILE.jsonl",
                      help='multiple-choice questions, one JSON per line: {"question": ..., "choices": [...], "answer": index}')
    skip.add_argument("--text", default=None, metavar="FILE",
                      help="held-out text (paragraphs separated by blank lines) for next-token accuracy; default: the "
                           "held-out documentation passages of the bundled multiple-choice set")
    skip.add_argument("--trace", default=None, help="rank layers by this trace's mean profile (default: the model on the evaluation texts)")
    skip.add_argument("--n-layers", type=_positive, default=1, help="layers skipped per condition (default 1)")
    skip.add_argument("--exclude", type=_layer_list, default=(), metavar="I,J",
                      help="decoder layer indices never skipped, e.g. 0 to keep the first layer (default: none)")
    skip.add_argument("--seeds", type=_positive, default=5, help="random-layer draws for the control (default 5)")
    skip.add_argument("--seed", type=int, default=0)
    skip.add_argument("--max-length", type=_positive, default=128, help="tokens per text piece (default 128)")
    skip.add_argument("--limit", type=_positive, default=None, help="evaluate only the first N questions or paragraphs")
    skip.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    skip.set_defaults(func=cmd_skip_eval)

    fp = subparsers.add_parser("fingerprint", help="embed depth-rescaled profiles of several traces in 2-D, coloured by model")
    fp.add_argument("traces", nargs="+")
    fp.add_argument("--out", required=True, help="figure file (.png, .pdf, .svg)")
    fp.add_argument("--method", choices=["tsne", "pca"], default="tsne")
    fp.add_argument("--points", type=_positive, default=20, help="normalised-depth points per profile (default 20)")
    fp.add_argument("--alpha", type=_alpha, default=None, help="use the recorded Rényi entropy of this order")
    fp.add_argument("--seed", type=int, default=0)
    fp.set_defaults(func=cmd_fingerprint)

    sl = subparsers.add_parser("sublayers", help="expansion and pruning by attention vs MLP (a --sublayers trace)")
    sl.add_argument("trace")
    sl.add_argument("--label", default=None, help="report per value of this stored label, e.g. task")
    sl.add_argument("--rows", choices=["generated", "prompt", "all"], default="generated",
                    help="which token rows to use (default: generated)")
    sl.add_argument("--coverage", type=_coverage, default=0.8,
                    help="a token's sites are its strongest steps doing this fraction of its pruning/expansion (default 0.8)")
    sl.set_defaults(func=cmd_sublayers)
