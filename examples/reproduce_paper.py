"""Reproduce the claims of Entropy-Lens (arXiv 2502.16570) on small local models; write a Markdown report.

For every model folder under ``--models`` (default ``examples/models/``; each a
``from_pretrained`` folder with tokenizer), the bundled labelled prompts
(``entropylens_hf/assets/prompts/tasks.jsonl``: task x output format) are recorded into a
trace, and the report checks, claim by claim, with a stated criterion:

1. profiles differ by model family (k-NN on depth-rescaled profiles; t-SNE fingerprint);
2. they are invariant when depth is rescaled to [0, 1] (a family classifier trained on one
   depth, tested on the other; distances between rescaled mean profiles);
3. prompt type and output format are predictable from generated-token profiles (k-NN, 10-fold CV);
4. answer correctness is predictable from profiles (multiple choice);
5. skipping the layers of maximal expansion hurts multiple-choice accuracy more than skipping
   those of maximal pruning (next to random layers).

    python examples/reproduce_paper.py [--models examples/models] [--out reports] [--quick]
    python examples/reproduce_paper.py --real-model PATH_OR_NAME --out examples/report/smollm2

``--real-model`` runs the same claims on a real instruction-following model in the paper's
setting instead (chat template, task types x output formats, greedy generation; see
``real_model_study.py``).

Writes ``OUT/report.md``, figures ``OUT/*.png`` and the traces ``OUT/traces/*.h5``.
``--quick`` uses a quarter of the prompts, fewer tokens and fewer random seeds (for CI).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from entropylens_hf import EntropyLens, Trace
from entropylens_hf.analysis import (classify_trace, embed_2d, format_classification, format_skip_experiment,
                                     group_dynamics, group_profiles, knn_cross_validate, layer_dynamics, profile_matrix,
                                     read_multiple_choice, rescale_depth, skip_experiment, text_profiles,
                                     token_profiles)
from entropylens_hf.analysis.evaluation import choice_log_likelihoods
from entropylens_hf.analysis.fingerprint import Fingerprint, plot_fingerprint
from entropylens_hf.prompts import read_prompts, record_prompts

ROOT = Path(__file__).resolve().parent.parent
PROMPTS_DIR = ROOT / "entropylens_hf" / "assets" / "prompts"
TASKS_FILE = PROMPTS_DIR / "tasks.jsonl"
RENYI = (0.5, 2.0, math.inf)
DEPTH_POINTS = 20

# --------------------------------------------------------------------------- the prompt set

TASK_TEMPLATES = {
    "question": [
        "Question: What does the {noun} do when the {noun2} is empty?",
        "Question: Why would a {noun} need a {noun2}?",
        "Question: How is a {noun} different from a {noun2}?",
        "Question: When should you use a {noun} instead of a {noun2}?",
    ],
    "code": [
        'def {verb}_{noun}({noun2}):\n    """{Verb} the {noun} of a {noun2}."""',
        'class {Noun}{Noun2}:\n    """A {noun} that holds a {noun2}."""',
        "import {noun}\n\n{noun2} = {noun}.{verb}()",
        "for {noun} in {noun2}_items:\n    # {verb} each {noun}",
    ],
    "story": [
        "Once upon a time, {name} found a {noun} next to an old {noun2}.",
        "{name} woke up and decided to {verb} the {noun} before the {noun2} arrived.",
        "It was raining when {name} first saw the {noun} and the {noun2}.",
        "Long ago, {name} lived in a house full of {noun}s and {noun2}s.",
    ],
    "instruction": [
        "Explain how to {verb} a {noun} with a {noun2}.",
        "Describe the steps needed to {verb} the {noun} into a {noun2}.",
        "Write instructions to {verb} a {noun} without a {noun2}.",
        "Summarise how a {noun} can {verb} a {noun2}.",
    ],
}
# The requested output format: an instruction line, then the cue that starts the answer.
FORMAT_CUES = {
    "prose": "\nAnswer in one paragraph.\n\n",
    "bullets": "\nAnswer as a bulleted list.\n\n- ",
    "json": '\nAnswer in JSON.\n\n{"',
    "table": "\nAnswer as a table.\n\n| ",
}
NOUNS = ["file", "list", "string", "module", "function", "number", "dictionary", "class", "method", "value",
         "tuple", "object", "thread", "socket", "queue", "buffer", "window", "record", "key", "path"]
VERBS = ["read", "sort", "open", "copy", "parse", "write", "split", "join", "close", "find", "load", "check"]
NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack", "Kate", "Leo"]


def make_task_prompts(per_cell: int = 16, seed: int = 0) -> list[dict]:
    """Prompts for every (task, format) pair from templates: ``per_cell`` each, labels ``task`` and ``format``."""
    rng = random.Random(seed)
    prompts = []
    for (task, templates), (fmt, cue) in itertools.product(TASK_TEMPLATES.items(), FORMAT_CUES.items()):
        for i in range(per_cell):
            noun, noun2 = rng.sample(NOUNS, 2)
            verb = rng.choice(VERBS)
            text = templates[i % len(templates)].format(
                noun=noun, noun2=noun2, Noun=noun.title(), Noun2=noun2.title(), verb=verb, Verb=verb.title(),
                name=rng.choice(NAMES))
            prompts.append({"prompt": text + cue, "labels": {"task": task, "format": fmt}})
    return prompts


def write_task_prompts(path: Path = TASKS_FILE) -> None:
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in make_task_prompts()), encoding="utf-8")
    print(f"wrote {path}")


MC_FILE = PROMPTS_DIR / "mc_pydoc_cloze.jsonl"
_WORD = re.compile(r"^[a-z]{4,}$")


def _prose_paragraphs(doc: str):
    """Paragraphs of running text (no code, no tables, at least 15 words), whitespace collapsed."""
    for para in re.split(r"\n\s*\n", doc):
        lines = [line for line in para.splitlines() if line.strip()]
        if not lines or any(line.startswith("      ") for line in lines):
            continue
        text = " ".join(line.strip() for line in lines)
        if re.search(r"[{}=<>\[\]]|::|\(\)|->", text) or len(text.split()) < 15:
            continue
        yield re.sub(r"\s+", " ", text)


def make_cloze_items(docs: list[str], n: int = 240, seed: int = 0, context_words: int = 30) -> list[dict]:
    """Multiple-choice next-word questions from held-out text.

    Question: up to ``context_words`` words of a prose paragraph; answer: the word that follows
    (lower-case, 4+ letters); three distractors drawn from words of similar frequency in the same
    text (within a factor 3), so word frequency alone does not give the answer away.
    """
    rng = random.Random(seed)
    paragraphs = [p for d in docs for p in _prose_paragraphs(d)]
    counts = Counter(w for p in paragraphs for w in p.split() if _WORD.match(w))
    vocab = sorted(w for w, c in counts.items() if c >= 3)
    candidates = []
    for p in paragraphs:
        words = p.split()
        candidates += [(words[max(0, i - context_words) : i], words[i]) for i in range(8, len(words))
                       if _WORD.match(words[i]) and counts[words[i]] >= 3]
    rng.shuffle(candidates)
    items, seen = [], set()
    for context, answer in candidates:
        question = " ".join(context)
        band = [w for w in vocab if w != answer and counts[answer] / 3 <= counts[w] <= counts[answer] * 3]
        if question in seen or len(band) < 3:
            continue
        seen.add(question)
        choices = rng.sample(band, 3) + [answer]
        rng.shuffle(choices)
        items.append({"question": question, "choices": choices, "answer": choices.index(answer)})
        if len(items) == n:
            break
    return items


def write_cloze_items(path: Path = MC_FILE) -> None:
    """From the documents ``tools/train_model.py`` holds out (needs ``apt-get install python3-doc``)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from train_model import DEFAULT_CORPUS, load_corpus

    _, held_out = load_corpus(DEFAULT_CORPUS)
    path.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in make_cloze_items(held_out)), encoding="utf-8")
    print(f"wrote {path}")


# --------------------------------------------------------------------------- models and traces


@dataclass
class Model:
    name: str
    path: Path
    family: str
    depth: int
    params: int
    model: torch.nn.Module
    tokenizer: object
    info: dict


def load_models(folder: Path, include_default: bool) -> list[Model]:
    from entropylens_hf.loading import load_model

    paths = sorted(p.parent for p in folder.glob("*/config.json")) if folder.is_dir() else []
    if include_default:
        default = ROOT / "entropylens_hf" / "assets" / "default_model"
        if (default / "config.json").is_file():
            paths.insert(0, default)
    models = []
    for path in paths:
        model, tokenizer = load_model(str(path), device="cpu", dtype="float32")
        info_file = path / "training_info.json"
        name = "default" if path.name == "default_model" else path.name
        models.append(Model(name=name, path=path, family=model.config.model_type,
                            depth=model.config.num_hidden_layers, params=sum(p.numel() for p in model.parameters()),
                            model=model, tokenizer=tokenizer,
                            info=json.loads(info_file.read_text()) if info_file.is_file() else {}))
    return models


def load_real_model(name: str):
    """``(model, tokenizer, display name)`` in float32 on CPU: a folder, a hub id, or a name ``load_model`` knows."""
    from entropylens_hf.loading import load_model

    model, tokenizer = load_model(name, device="cpu", dtype="float32")
    path = Path(name)
    display = path.name if path.exists() else name
    return model, tokenizer, display


def record_traces(models: list[Model], prompts, folder: Path, new_tokens: int, seed: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    traces = {}
    for m in models:
        path = folder / f"{m.name}.h5"
        path.unlink(missing_ok=True)
        torch.manual_seed(seed)
        lens = EntropyLens(m.model, m.tokenizer, top_k=5, renyi_alphas=RENYI, model_name=m.name)
        start = time.perf_counter()
        record_prompts(lens, prompts, path, batch_size=64, progress=False, max_new_tokens=new_tokens,
                       do_sample=True, top_p=0.9, temperature=1.0)
        print(f"  recorded {len(prompts)} prompts with {m.name} in {time.perf_counter() - start:.1f} s")
        traces[m.name] = path
    return traces


# --------------------------------------------------------------------------- figures (no pyplot: no global state)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _label_panel(ax, column: int, title: str, xlabel: str, ylabel: str, *, legend: bool = True) -> None:
    """Title and x label on every panel of a row; the y label only on the first."""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    if column == 0:
        ax.set_ylabel(ylabel)
    if legend:
        ax.legend(fontsize=7)


def _save(fig, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def figure_profiles(models: list[Model], sets: dict, out: Path) -> None:
    fig = _figure(4.2 * len(models), 3.6)
    for j, m in enumerate(models):
        ax = fig.add_subplot(1, len(models), j + 1)
        ps = sets[m.name]
        layers = np.arange(ps.num_layers)
        for task, g in group_profiles(ps.features, ps.label_values("task")).items():
            ax.plot(layers, g.mean, label=f"{task} ({g.count})")
            ax.fill_between(layers, g.mean - g.std, g.mean + g.std, alpha=0.12)
        _label_panel(ax, j, f"{m.name}: {m.family}, {m.depth} layers", "lens layer (0 = embeddings)",
                     "entropy (nats), mean ± std")
    _save(fig, out)


def figure_depth(models: list[Model], sets: dict, out: Path) -> None:
    families = sorted({m.family for m in models})
    fig = _figure(4.2 * (len(families) + 1), 3.6)
    depth = np.linspace(0, 1, DEPTH_POINTS)
    styles = ["-", "--", ":", "-."]
    colors = {f: c for f, c in zip(families, ["tab:blue", "tab:orange", "tab:green", "tab:red"])}
    panels = [(f, [m for m in models if m.family == f]) for f in families] + [("all families", models)]
    for j, (title, members) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        for i, m in enumerate(sorted(members, key=lambda m: m.depth)):
            curve = rescale_depth(sets[m.name].features.mean(axis=0), DEPTH_POINTS)
            ax.plot(depth, curve, styles[i % len(styles)], color=colors[m.family] if title == "all families" else None,
                    label=f"{m.name} ({m.depth} layers)")
        _label_panel(ax, j, title, "normalised depth", "mean entropy (nats)")
    _save(fig, out)


def figure_steps(models: list[Model], dynamics: dict, out: Path) -> None:
    fig = _figure(4.2 * len(models), 3.2)
    for j, m in enumerate(models):
        ax = fig.add_subplot(1, len(models), j + 1)
        steps = dynamics[m.name].mean_steps
        ax.bar(np.arange(len(steps)), steps, color=["tab:red" if s > 0 else "tab:blue" for s in steps])
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xticks(np.arange(len(steps)))  # one bar per layer step: integer ticks only
        _label_panel(ax, j, f"{m.name}: red expands, blue prunes", "layer index i (step lens i -> i+1)",
                     "mean entropy change (nats)", legend=False)
    _save(fig, out)


# --------------------------------------------------------------------------- analyses


def _zscore(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / (v.std() or 1.0)


def depth_distances(models: list[Model], sets: dict) -> list[tuple[str, str, bool, float, float]]:
    """RMS distance of every pair of rescaled mean profiles: raw (nats) and of their shapes (z-scored)."""
    curves = {m.name: rescale_depth(sets[m.name].features.mean(axis=0), DEPTH_POINTS) for m in models}
    rows = []
    for a, b in itertools.combinations(models, 2):
        raw = float(np.sqrt(np.mean((curves[a.name] - curves[b.name]) ** 2)))
        shape = float(np.sqrt(np.mean((_zscore(curves[a.name]) - _zscore(curves[b.name])) ** 2)))
        rows.append((a.name, b.name, a.family == b.family, raw, shape))
    return rows


def cross_depth_transfer(models: list[Model], traces: dict, k: int) -> list[tuple[str, str, float, int]]:
    """Train a family k-NN on the models of some depths, test it on a held-out model of another depth."""
    from sklearn.neighbors import KNeighborsClassifier

    feats = {}
    for m in models:
        with Trace.open(traces[m.name]) as t:
            feats[m.name] = profile_matrix(t, depth_points=DEPTH_POINTS).features
    rows = []
    for held in models:
        train = [m for m in models if m.depth != held.depth and m.name != held.name]
        if len({m.family for m in train}) < 2:
            continue
        X = np.concatenate([feats[m.name] for m in train])
        y = np.concatenate([[m.family] * len(feats[m.name]) for m in train])
        knn = KNeighborsClassifier(n_neighbors=k).fit(X, y)
        acc = float((knn.predict(feats[held.name]) == held.family).mean())
        rows.append((held.name, ", ".join(m.name for m in train), acc, len(feats[held.name])))
    return rows


def correctness_study(m: Model, items, k: int):
    """Is the model's multiple-choice answer right? Predicted from the profile of it reading the question."""
    scored = choice_log_likelihoods(m.model, m.tokenizer, items)
    correct = np.array([int(np.argmax(total) == it.answer) for (total, _), it in zip(scored, items)])
    per_question = text_profiles(m.model, m.tokenizer, [it.question for it in items], per_text=True)
    features = np.stack([p.mean(axis=0) for p in per_question])
    labels = np.where(correct == 1, "correct", "wrong")
    if min(correct.sum(), len(correct) - correct.sum()) < 2:
        return None, correct.mean()
    return knn_cross_validate(features, labels, k=k, label=f"correct ({m.name})",
                              description="Shannon, mean over question tokens"), correct.mean()


# --------------------------------------------------------------------------- report


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def _layer(index: int) -> str:
    """A layer index, or 'none' where no step of that sign exists (-1)."""
    return "none" if index < 0 else str(index)


def _verdict(ok: bool, partial: bool = False) -> str:
    return "**holds**" if ok else ("**partly holds**" if partial else "**does not hold**")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--no-default", action="store_true", help="leave out the bundled default model")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--quick", action="store_true", help="a quarter of the prompts, fewer tokens and seeds (CI)")
    parser.add_argument("--new-tokens", type=int, default=None, help="generated tokens per prompt (default 32, quick 16)")
    parser.add_argument("--mc", type=Path, default=None, help="multiple-choice JSONL (default: bundled mc_*.jsonl)")
    parser.add_argument("--text", type=Path, default=None, help="held-out text for next-token skipping (default: bundled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=None, help="random-layer draws in the skip control (default 5, quick 2)")
    parser.add_argument("--mc-limit", type=int, default=None,
                        help="use only the first N multiple-choice questions (default all 240, quick 60)")
    parser.add_argument("--real-model", default=None, metavar="PATH_OR_NAME",
                        help="instead of the small models, study this instruct model through its chat template "
                             "(examples/real_model_study.py); --mc then defaults to mc_general_knowledge.jsonl")
    parser.add_argument("--write-prompts", action="store_true", help="regenerate tasks.jsonl from the templates and exit")
    parser.add_argument("--write-mc", action="store_true", help="regenerate the multiple-choice set from held-out text and exit")
    args = parser.parse_args(argv)
    if args.write_prompts or args.write_mc:
        if args.write_prompts:
            write_task_prompts()
        if args.write_mc:
            write_cloze_items()
        return 0
    if args.real_model:
        import real_model_study

        return real_model_study.run(args, load_real_model)
    t0 = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    new_tokens = args.new_tokens or (16 if args.quick else 32)
    seeds = args.seeds or (2 if args.quick else 5)
    k = 5

    models = load_models(args.models, include_default=not args.no_default)
    if len(models) < 2:
        print(f"found {len(models)} model(s) under {args.models}; the report needs at least two", file=sys.stderr)
        return 2
    prompts = read_prompts(TASKS_FILE)
    if args.quick:
        prompts = prompts[::4]
    print(f"{len(models)} models, {len(prompts)} prompts, {new_tokens} new tokens")
    traces = record_traces(models, prompts, out / "traces", new_tokens, args.seed)
    t_record = time.perf_counter() - t0

    sets, dynamics, task_dynamics = {}, {}, {}
    for m in models:
        with Trace.open(traces[m.name]) as t:
            sets[m.name] = profile_matrix(t)
            per_seq = [(token_profiles(s), s.labels["task"]) for s in t]
        all_tokens = np.concatenate([p for p, _ in per_seq])
        dynamics[m.name] = layer_dynamics(all_tokens)
        task_dynamics[m.name] = group_dynamics(all_tokens, np.concatenate([[task] * len(p) for p, task in per_seq]))

    figure_profiles(models, sets, out / "profiles.png")
    figure_depth(models, sets, out / "depth_rescaled.png")
    figure_steps(models, dynamics, out / "steps.png")

    # 1. family fingerprint and family classification on pooled, depth-rescaled profiles
    pooled, fam, names = [], [], []
    for m in models:
        with Trace.open(traces[m.name]) as t:
            f = profile_matrix(t, depth_points=DEPTH_POINTS).features
        pooled.append(f)
        fam += [m.family] * len(f)
        names += [m.name] * len(f)
    pooled = np.concatenate(pooled)
    fp = Fingerprint(embed_2d(pooled, method="tsne", seed=args.seed), tuple(names), pooled, "tsne", DEPTH_POINTS)
    plot_fingerprint(fp, out / "fingerprint.png", title="Depth-rescaled entropy profiles (t-SNE), one point per prompt")
    family_result = knn_cross_validate(pooled, fam, k=k, label="family", description=f"{DEPTH_POINTS} depth points")
    model_result = knn_cross_validate(pooled, names, k=k, label="model", description=f"{DEPTH_POINTS} depth points")

    # 2. depth invariance
    distances = depth_distances(models, sets)
    transfer = cross_depth_transfer(models, traces, k)

    # 3. task and format
    task_results = []
    for m in models:
        with Trace.open(traces[m.name]) as t:
            for label in ("task", "format"):
                for windows, alpha in ((None, None), (4, None), (None, 2.0)):
                    r = classify_trace(t, label, windows=windows, alpha=alpha, k=k, seed=args.seed)
                    task_results.append((m.name, label, windows, alpha, r))

    # 4 + 5. multiple choice: correctness, and layer skipping
    mc_file = args.mc or MC_FILE
    items = read_multiple_choice(mc_file)
    if args.mc_limit or args.quick:
        items = items[: args.mc_limit or 60]
    # Held-out text for next-token accuracy: a given file, else the passages of the questions.
    if args.text:
        texts = [p for p in args.text.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    else:
        texts = [it.answer_text for it in items]
    correctness, skips = [], []
    for m in models:
        if items:
            correctness.append((m.name, *correctness_study(m, items, k)))
        for what, kwargs in (("mc", {"items": items}), ("text", {"texts": texts})):
            if not next(iter(kwargs.values())):
                continue
            for n in sorted({1, max(1, m.depth // 4)}):
                # Also with the first layer kept out: in small models it does nearly all the pruning,
                # and skipping it breaks the model whatever its entropy role.
                for exclude in ((), (0,)):
                    exp = skip_experiment(m.model, m.tokenizer, n_layers=n, seeds=seeds, seed=args.seed,
                                          model_name=m.name, exclude=exclude, **kwargs)
                    skips.append((m.name, what, n, exp))
    runtime = time.perf_counter() - t0

    write_report(out, args, models, prompts, new_tokens, traces, sets, dynamics, task_dynamics, family_result, model_result, distances,
                 transfer, task_results, correctness, skips, mc_file, args.text, t_record, runtime)
    print(f"report written to {out / 'report.md'} in {runtime:.0f} s")
    return 0


def write_report(out, args, models, prompts, new_tokens, traces, sets, dynamics, task_dynamics, family_result, model_result, distances,
                 transfer, task_results, correctness, skips, mc_file, text_file, t_record, runtime) -> None:
    L = []
    w = L.append
    w("# Entropy-Lens claims on small local models\n")
    flags = ((" --quick" if args.quick else "") + (f" --mc-limit {args.mc_limit}" if args.mc_limit else "")
             + (f" --seeds {args.seeds}" if args.seeds else ""))
    w(f"Generated by `examples/reproduce_paper.py{flags}` on "
      f"{time.strftime('%Y-%m-%d')} ({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}); "
      f"total {runtime:.0f} s, of which recording {t_record:.0f} s.\n")
    w("Each claim below comes with the criterion used to call it; the numbers are this run's. "
      "The models are tiny and briefly trained, far from the paper's 1B-70B models, so a claim that "
      "does not hold here says something about these models, not necessarily about the paper.\n")

    w("## Setup\n")
    rows = []
    for m in models:
        info = m.info
        ppl = info.get("held_out_perplexity")
        tied = info.get("tied_embeddings", m.model.config.tie_word_embeddings)
        rows.append([m.name, m.family, str(m.depth), str(info.get("d_model", "?")), "yes" if tied else "no",
                     f"{m.params / 1e6:.2f} M", str(info.get("steps", "?")), f"{ppl:.1f}" if ppl else "?"])
    w(_table(["model", "family", "decoder layers", "d_model", "tied embeddings", "parameters", "training steps",
              "held-out perplexity"], rows) + "\n")
    w("All models share the bundled model's tokenizer and corpus (`tools/train_model.py`). GPT-2 ties its input "
      "and output embeddings, as the original does; the Llama models do not, as Llama does not. With tied "
      "embeddings the lens at the embedding layer predicts the input token itself (low entropy), so the two "
      "families differ from layer 0 on.\n")
    counts = {}
    for p in prompts:
        for key in ("task", "format"):
            counts.setdefault(key, {}).setdefault(p.labels[key], 0)
            counts[key][p.labels[key]] += 1
    w(f"Prompts: {len(prompts)} from `entropylens_hf/assets/prompts/tasks.jsonl` "
      f"(tasks: {', '.join(f'{k} {v}' for k, v in counts['task'].items())}; "
      f"formats: {', '.join(f'{k} {v}' for k, v in counts['format'].items())}). "
      f"Each prompt is the task text, an instruction naming the format, and a cue that starts the answer "
      f"(e.g. `- ` for bullets, `{{\"` for JSON): these models follow no instructions, so the *cue* is what "
      f"shapes the output format. Generation: {new_tokens} new tokens, sampling with top-p 0.9, seed {args.seed}; "
      f"profiles are over generated tokens (the paper's choice). Rényi orders recorded: {', '.join(map(str, RENYI))}.\n")

    w("## 1. Profiles are family-specific\n")
    w("![profiles per model and task](profiles.png)\n")
    w("![fingerprint](fingerprint.png)\n")
    w("k-NN (k=5, 10-fold stratified CV) on every prompt's mean profile resampled to "
      f"{DEPTH_POINTS} points of normalised depth, all models pooled:\n")
    w("```\n" + format_classification([family_result, model_result]) + "\n```\n")
    ok = family_result.roc_auc >= 0.8 and family_result.p_value < 0.05
    w(f"Criterion: family ROC-AUC >= 0.8 and p < 0.05. Verdict: {_verdict(ok)} "
      f"(family ROC-AUC {family_result.roc_auc:.3f} vs dummy {family_result.baseline_roc_auc:.3f}). "
      "Pooled classification can also succeed by recognising each model (see the `model` row); "
      "section 2 tests the family signal across depths, which is the stronger test.\n")

    w("## 2. Profiles are invariant when depth is rescaled to [0, 1]\n")
    w("![depth-rescaled mean profiles](depth_rescaled.png)\n")
    w("A family classifier trained on models of one depth and tested on a model of another depth "
      "(k-NN on depth-rescaled profiles):\n")
    w(_table(["tested on", "trained on", "family accuracy", "prompts"],
             [[a, b, f"{acc:.3f}", str(n)] for a, b, acc, n in transfer]) + "\n")
    w("RMS distance between depth-rescaled mean profiles: raw (nats) and of their shapes (each profile z-scored):\n")
    w(_table(["model A", "model B", "same family", "raw RMS (nats)", "shape RMS"],
             [[a, b, "yes" if s else "no", f"{r:.3f}", f"{z:.3f}"] for a, b, s, r, z in distances]) + "\n")
    within = [z for *_, s, r, z in distances if s]
    across = [z for *_, s, r, z in distances if not s]
    if transfer and within and across:
        transfer_ok = all(acc >= 0.8 for _, _, acc, _ in transfer)
        transfer_some = np.mean([acc for _, _, acc, _ in transfer]) > 0.5
        shape_ok = max(within) < min(across)
        w(f"Criterion: every cross-depth family accuracy >= 0.8 (chance 0.5), and every within-family shape distance "
          f"below every across-family one. Cross-depth transfer: {_verdict(transfer_ok, transfer_some)} "
          f"(mean accuracy {np.mean([a for _, _, a, _ in transfer]):.3f}); shape distances: "
          f"{_verdict(shape_ok)} (within {', '.join(f'{z:.2f}' for z in within)}; across "
          f"{', '.join(f'{z:.2f}' for z in across)}).\n")
    else:
        w("Not tested: needs two families with two depths each.\n")

    w("## 3. Prompt type and output format are predictable from profiles\n")
    w("k-NN (k=5) on each prompt's generated-token profile, stratified 10-fold CV, per model. Features: the mean "
      "Shannon profile, 4 window means over the generation (the paper's features), or the mean Rényi-2 profile.\n")
    rows = []
    for name, label, windows, alpha, r in task_results:
        feat = ("4 windows" if windows else "mean") + (f", Rényi {alpha:g}" if alpha else "")
        rows.append([name, label, feat, str(r.n_samples), f"{r.accuracy:.3f}", f"{r.baseline_accuracy:.3f}",
                     f"{r.roc_auc:.3f} ± {r.roc_auc_std:.3f}", f"{r.baseline_roc_auc:.3f}", _p(r.p_value)])
    w(_table(["model", "label", "features", "n", "accuracy", "dummy acc", "ROC-AUC", "dummy AUC", "p"], rows) + "\n")
    notes = sorted({f"{name}: {r.note}" for name, _, _, _, r in task_results if r.note})
    if notes:
        w("Notes: " + "; ".join(notes) + "\n")
    w("p: paired t-test (two-sided) of per-fold ROC-AUC, k-NN vs stratified dummy. Chance accuracy is 0.25 (4 classes).\n")
    for label in ("task", "format"):
        best = [r for _, lab, win, al, r in task_results if lab == label and win is None and al is None]
        ok = all(r.roc_auc >= 0.7 and r.p_value < 0.05 for r in best)
        some = any(r.p_value < 0.05 and r.roc_auc > r.baseline_roc_auc for r in best)
        w(f"- {label}: criterion ROC-AUC >= 0.7 and p < 0.05 for every model (mean features). "
          f"Verdict: {_verdict(ok, some)} (ROC-AUC {', '.join(f'{r.roc_auc:.2f}' for r in best)}).")
    w("")

    w("## 4. Expansion and pruning\n")
    w("![mean entropy change per layer](steps.png)\n")
    w("Layer index i is `layers[i]`, which turns lens layer i into lens layer i+1 (0 = embeddings). "
      "Over all generated tokens of all prompts:\n")
    rows = []
    for m in models:
        d = dynamics[m.name]
        rows.append([m.name, ", ".join(f"{s:+.2f}" for s in d.mean_steps), _layer(d.expansion_layer), _layer(d.pruning_layer),
                     ", ".join(f"{f:.2f}" for f in d.expansion_fraction)])
    w(_table(["model", "mean change per layer (nats)", "max expansion", "max pruning", "fraction of tokens expanding"],
             rows) + "\n")
    w("Per task (layer of maximal expansion / maximal pruning of the task's mean profile; in brackets the layer "
      "where most tokens have their own maximal expansion / pruning):\n")
    tasks = sorted(next(iter(task_dynamics.values())))
    rows = []
    for m in models:
        cells = []
        for task in tasks:
            d = task_dynamics[m.name][task]
            cells.append(f"{_layer(d.expansion_layer)} / {_layer(d.pruning_layer)} ({int(d.expansion_counts.argmax())} / "
                         f"{int(d.pruning_counts.argmax())})")
        rows.append([m.name, *cells])
    w(_table(["model", *tasks], rows) + "\n")

    w("## 5. Answer correctness from profiles\n")
    if correctness:
        rows = []
        for name, r, acc in correctness:
            if r is None:
                rows.append([name, f"{acc:.3f}", "-", "-", "-", "too few right or wrong answers"])
            else:
                rows.append([name, f"{acc:.3f}", f"{r.roc_auc:.3f} ± {r.roc_auc_std:.3f}", f"{r.baseline_roc_auc:.3f}",
                             _p(r.p_value), r.note or ""])
        w(f"Multiple-choice questions from `{mc_file.name}`; label: whether the model's highest-likelihood choice is "
          "right; features: the model's mean profile while reading the question (teacher-forced).\n")
        w(_table(["model", "MC accuracy", "ROC-AUC", "dummy AUC", "p", "note"], rows) + "\n")
        ok = all(r is not None and r.roc_auc >= 0.6 and r.p_value < 0.05 for _, r, _ in correctness)
        some = any(r is not None and r.p_value < 0.05 and r.roc_auc > r.baseline_roc_auc for _, r, _ in correctness)
        w(f"Criterion: ROC-AUC >= 0.6 and p < 0.05 for every model. Verdict: {_verdict(ok, some)}.\n")
    else:
        w("Not tested: no multiple-choice file.\n")

    w("## 6. Skipping expansion layers hurts more than skipping pruning layers\n")
    w("Layers ranked by the model's mean profile on the evaluation texts; the random control is drawn uniformly "
      "(mean ± std over seeds).\n")
    for name, what, n, exp in skips:
        w(f"```\n{format_skip_experiment(exp)}\n```\n")
    for excluded, title in (((), "all layers may be skipped"), ((0,), "the first decoder layer kept")):
        mc_rows = [(name, n, exp) for name, what, n, exp in skips if what == "mc" and exp.excluded == excluded]
        txt_rows = [(name, n, exp) for name, what, n, exp in skips if what == "text" and exp.excluded == excluded]
        if not mc_rows and not txt_rows:
            continue
        w(f"**{title.capitalize()}.**")
        if mc_rows:
            wins = [exp.score(f"max expansion ({n})", "accuracy") < exp.score(f"max pruning ({n})", "accuracy")
                    for _, n, exp in mc_rows]
            w(f"Criterion: multiple-choice accuracy after skipping the maximal-expansion layers is lower than after "
              f"skipping the maximal-pruning layers. Holds in {sum(wins)} of {len(wins)} (model, n) cases. "
              f"Verdict: {_verdict(all(wins), sum(wins) > len(wins) / 2)}.")
        if txt_rows:
            wins = [exp.score(f"max expansion ({n})", "NLL (nats/token)") > exp.score(f"max pruning ({n})", "NLL (nats/token)")
                    for _, n, exp in txt_rows]
            source = f"`{text_file}`" if text_file else "the passages of the multiple-choice questions"
            w(f"On next-token prediction over held-out text ({source}), skipping expansion layers raised the "
              f"loss more than skipping pruning layers in {sum(wins)} of {len(wins)} cases.")
        w("")
    (out / "report.md").write_text("\n".join(L), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
