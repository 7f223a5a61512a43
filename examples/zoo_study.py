"""The paper's claim (ii) on real models: entropy profiles are family-specific and invariant to depth.

Four fetched models of three families (SmolLM2-135M: Llama; Gemma 3 270M; Qwen2.5-Coder 0.5B
and 1.5B: one family at two depths) answer the same 40 prompts (through the chat template where
the model has one, as plain text for the Gemma base model), 24 greedy tokens each. Every
sequence's mean profile over its generated tokens is resampled onto 20 points of normalised
depth. The report then checks, each with a stated criterion:

1. the family is predictable from a single profile (k-NN, leave-one-prompt-out, against a
   stratified dummy, label-permutation p-value; and the package's stratified 10-fold k-NN);
2. depth invariance: a classifier that never saw one Qwen model recognises it as Qwen from the
   other Qwen depth, and the two Qwen mean profiles are closer to each other than either is to
   another family's (RMS distance, permutation test over model assignments within prompts).

Run: ``python examples/zoo_study.py`` (fetch the models first: ``entropylens fetch NAME``).
Writes ``examples/report/zoo/report.md``, ``profiles.png``, the traces under ``traces/``
(recording resumes), and the zoo section of ``examples/report/report.md``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from entropylens_hf import EntropyLens, Trace
from entropylens_hf.analysis import format_classification, knn_cross_validate, profile_matrix
from entropylens_hf.loading import load_model
from entropylens_hf.models.registry import REGISTRY
from entropylens_hf.prompts import Prompt, record_prompts

ROOT = Path(__file__).resolve().parent
MODELS = ["smollm2", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]  # the 1.5B model last: the cost
FAMILY = {"smollm2": "Llama", "gemma3-270m": "Gemma3", "qwen2.5-coder-0.5b": "Qwen2", "qwen2.5-coder-1.5b": "Qwen2"}
QWEN = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
TASKS = {
    "explain": "Explain what {} is.",
    "story": "Write a short story about {}.",
    "fact": "What is the most important fact about {}?",
    "list": "List three things about {}.",
}
TOPICS = ["a bicycle", "coffee", "the ocean", "a library", "chess", "bread", "the moon", "a volcano", "music", "rain"]
DEPTH_POINTS = 20
SECTION = ("<!-- zoo-study:begin -->", "<!-- zoo-study:end -->")


def prompts() -> list[Prompt]:
    return [Prompt(template.format(topic), {"task": task, "prompt": f"{task}:{topic}"})
            for task, template in TASKS.items() for topic in TOPICS]


def record(name: str, out: Path, new_tokens: int, batch_size: int) -> tuple[float, int]:
    """Record the prompt set on one model into ``out`` (resumes); returns ``(seconds, prompts recorded now)``."""
    started = time.perf_counter()
    model, tokenizer = load_model(name, device="cpu", dtype="float32")
    lens = EntropyLens(model, tokenizer, top_k=5, record_prompt=False)
    recorded, _ = record_prompts(lens, prompts(), out, batch_size=batch_size, chat=REGISTRY[name].chat,
                                 max_new_tokens=new_tokens, do_sample=False)
    del lens, model
    gc.collect()
    return time.perf_counter() - started, recorded


def lopo_knn(X: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int = 5) -> np.ndarray:
    """Leave-one-prompt-out k-NN predictions: each prompt's profiles are predicted from the other prompts' only."""
    from sklearn.neighbors import KNeighborsClassifier

    pred = np.empty_like(y)
    for g in np.unique(groups):
        test = groups == g
        pred[test] = KNeighborsClassifier(n_neighbors=k).fit(X[~test], y[~test]).predict(X[test])
    return pred


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def zscore(p: np.ndarray) -> np.ndarray:
    return (p - p.mean()) / p.std()


def distances(means: dict[str, np.ndarray], shape: bool) -> dict[tuple[str, str], float]:
    f = zscore if shape else (lambda p: p)
    return {(a, b): rms(f(means[a]), f(means[b])) for a, b in itertools.combinations(MODELS, 2)}


def qwen_margin(d: dict[tuple[str, str], float]) -> float:
    """Closest across-family distance of a Qwen model minus the Qwen-Qwen distance (> 0: the Qwen pair is closest)."""
    across = [v for (a, b), v in d.items() if (a in QWEN) != (b in QWEN)]
    return min(across) - d[QWEN]


def permutation_p(per_prompt: np.ndarray, shape: bool, n: int, seed: int = 0) -> tuple[float, float]:
    """``(observed margin, p)``: ``per_prompt [prompts, models, depth]``; the null shuffles which model
    produced each of a prompt's profiles (prompt effects kept), and asks how often the margin is as large."""
    def margin(x):
        return qwen_margin(distances({m: x[:, j].mean(0) for j, m in enumerate(MODELS)}, shape))

    observed = margin(per_prompt)
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n):
        order = np.argsort(rng.random(per_prompt.shape[:2]), axis=1)
        hits += margin(np.take_along_axis(per_prompt, order[:, :, None], axis=1)) >= observed
    return observed, (1 + hits) / (1 + n)


def label_permutation_p(X, y, groups, observed: float, n: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hits = sum(np.mean(lopo_knn(X, (perm := rng.permutation(y)), groups) == perm) >= observed for _ in range(n))
    return (1 + hits) / (1 + n)


def figure(means: dict, stds: dict, out: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    depth = np.linspace(0, 1, DEPTH_POINTS)
    for col, (title, scale) in enumerate((("entropy (nats)", lambda m: 1.0),
                                          ("entropy / ln(vocabulary)", lambda m: 1 / math.log(REGISTRY[m].vocabulary)))):
        ax = fig.add_subplot(1, 2, col + 1)
        for m in MODELS:
            s = scale(m)
            ax.plot(depth, means[m] * s, label=f"{m} ({FAMILY[m]}, {REGISTRY[m].layers} layers)")
            ax.fill_between(depth, (means[m] - stds[m]) * s, (means[m] + stds[m]) * s, alpha=0.15)
        ax.set_xlabel("normalised depth (0 = embeddings, 1 = last layer)")
        ax.set_title(f"mean profile over generated tokens, {title}", fontsize=9)
        if col == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _p(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _verdict(ok: bool) -> str:
    return "**holds**" if ok else "**does not hold**"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "report" / "zoo")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--permutations", type=int, default=2000)
    parser.add_argument("--report", type=Path, default=ROOT / "report" / "report.md",
                        help="the project report whose zoo section is rewritten ('' to leave it alone)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    (args.out / "traces").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings = args.out / "recording_seconds.json"  # kept from the run that recorded each trace (reruns resume)
    seconds = json.loads(timings.read_text()) if timings.is_file() else {}
    for name in MODELS:
        took, recorded = record(name, args.out / "traces" / f"{name}.h5", args.new_tokens, args.batch_size)
        if recorded == len(prompts()) or name not in seconds:
            seconds[name] = round(took, 1)
        print(f"{name}: {recorded} prompts recorded in {took:.0f} s", flush=True)
    timings.write_text(json.dumps(seconds, indent=2) + "\n", encoding="utf-8")

    per_prompt, tokens = [], {}
    for name in MODELS:
        with Trace.open(args.out / "traces" / f"{name}.h5") as trace:
            ps = profile_matrix(trace, depth_points=DEPTH_POINTS)
            order = np.argsort(ps.label_values("prompt").astype(str))
            per_prompt.append(ps.features[order])
            keys = np.sort(ps.label_values("prompt").astype(str))
            tokens[name] = float(np.mean([len(trace[int(i)].target_ids) for i in ps.indices]))
    per_prompt = np.stack(per_prompt, axis=1)  # [prompts, models, depth]
    n_prompts = per_prompt.shape[0]
    X = per_prompt.reshape(-1, DEPTH_POINTS)
    models = np.tile(np.array(MODELS), n_prompts)
    y = np.array([FAMILY[m] for m in models])
    groups = np.repeat(keys, len(MODELS))

    # 1. family from single profiles
    pred = lopo_knn(X, y, groups)
    accuracy = float(np.mean(pred == y))
    rng = np.random.default_rng(0)
    counts = {f: float(np.mean(y == f)) for f in np.unique(y)}
    dummy = float(np.mean([np.mean(rng.choice(list(counts), size=len(y), p=list(counts.values())) == y)
                           for _ in range(200)]))
    p_family = label_permutation_p(X, y, groups, accuracy, n=200)
    pooled = knn_cross_validate(X, y, label="family", description=f"{DEPTH_POINTS} depth points")
    by_model = {m: float(np.mean(pred[models == m] == y[models == m])) for m in MODELS}

    # 2a. transfer across depth: one Qwen model never seen in training, nor the held-out prompt
    from sklearn.neighbors import KNeighborsClassifier

    transfer = {}
    for held in QWEN:
        hits = []
        for g in np.unique(groups):
            train = (models != held) & (groups != g)
            test = (models == held) & (groups == g)
            hits.append(KNeighborsClassifier(n_neighbors=5).fit(X[train], y[train]).predict(X[test])[0] == "Qwen2")
        transfer[held] = float(np.mean(hits))

    # 2b. distances between depth-rescaled mean profiles, and the permutation test
    means = {m: per_prompt[:, j].mean(0) for j, m in enumerate(MODELS)}
    stds = {m: per_prompt[:, j].std(0, ddof=1) for j, m in enumerate(MODELS)}
    raw, shape = distances(means, False), distances(means, True)
    raw_margin, raw_p = permutation_p(per_prompt, False, args.permutations)
    shape_margin, shape_p = permutation_p(per_prompt, True, args.permutations)
    figure(means, stds, args.out / "profiles.png")

    family_ok = accuracy >= 0.8 and p_family < 0.05
    transfer_ok = min(transfer.values()) >= 0.8
    distance_ok = {"raw": raw_margin > 0 and raw_p < 0.05, "shape": shape_margin > 0 and shape_p < 0.05}
    total = time.perf_counter() - started

    lines = [
        "# Entropy profiles of three real model families (the paper's claim ii)",
        "",
        f"Generated by `examples/zoo_study.py` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}); this run {total:.0f} s. Recording all 40 "
        "prompts took " + ", ".join(f"{m} {seconds[m]:.0f} s" for m in MODELS)
        + " (the run that recorded each trace, kept in `recording_seconds.json`); reruns reuse "
        "the traces under `traces/` (not in git).",
        "",
        "| model | family | decoder layers | vocabulary | prompt rendering | mean generated tokens |",
        "|---|---|---|---|---|---|",
        *[f"| {m} | {FAMILY[m]} | {REGISTRY[m].layers} | {REGISTRY[m].vocabulary:,} | "
          f"{'chat template' if REGISTRY[m].chat else 'plain text (base model)'} | {tokens[m]:.1f} |" for m in MODELS],
        "",
        f"Prompts: {n_prompts} ({len(TASKS)} tasks x {len(TOPICS)} topics: "
        + "; ".join(f"{t}: \"{s.format('...')}\"" for t, s in TASKS.items())
        + f"), {args.new_tokens} greedy tokens at most, float32 on CPU. Each sequence's feature is its mean "
        f"Shannon-entropy profile over its generated tokens, resampled onto {DEPTH_POINTS} points of normalised depth "
        "(0 = embeddings, 1 = last layer). The models are the dequantised GGUF models `entropylens fetch` "
        "installs, not the original bfloat16 weights.",
        "",
        "![depth-rescaled mean profiles](profiles.png)",
        "",
        "The right panel divides by ln(vocabulary), the entropy of a uniform distribution, since the vocabularies "
        "differ (49k, 152k, 262k); the analyses below use nats (left panel).",
        "",
        "## 1. The family is predictable from one profile",
        "",
        f"k-NN (k=5) on single profiles of all four models, leave-one-prompt-out (a prompt's four profiles are "
        f"predicted from the other {n_prompts - 1} prompts' profiles): family accuracy **{accuracy:.3f}** against "
        f"{dummy:.3f} for a stratified dummy; label-permutation p = {_p(p_family)} (200 permutations). "
        "Per model: " + ", ".join(f"{m} {by_model[m]:.3f}" for m in MODELS) + ".",
        "",
        "The package's stratified 10-fold k-NN (`entropylens_hf.analysis.knn_cross_validate`) on the same features:",
        "",
        "```",
        format_classification(pooled),
        "```",
        "",
        f"Criterion: leave-one-prompt-out accuracy >= 0.8 and p < 0.05. Verdict: {_verdict(family_ok)}. "
        "This pooled test can succeed by recognising each model; section 2 asks whether the family signal "
        "survives a change of depth.",
        "",
        "## 2. The family survives a change of depth",
        "",
        "**Transfer.** A k-NN trained without one Qwen model (and without the held-out prompt) classifies that "
        "model's profiles; the only Qwen examples it saw are from the other depth:",
        "",
        "| held-out model | trained on | predicted Qwen2 |",
        "|---|---|---|",
        *[f"| {held} | {', '.join(m for m in MODELS if m != held)} | {transfer[held]:.3f} |" for held in QWEN],
        "",
        f"Criterion: both >= 0.8. Verdict: {_verdict(transfer_ok)}.",
        "",
        "**Distances.** RMS distance between depth-rescaled mean profiles, raw (nats) and of their shapes "
        "(each mean profile z-scored):",
        "",
        "| model A | model B | same family | raw RMS (nats) | shape RMS |",
        "|---|---|---|---|---|",
        *[f"| {a} | {b} | {'yes' if FAMILY[a] == FAMILY[b] else 'no'} | {raw[a, b]:.3f} | {shape[a, b]:.3f} |"
          for a, b in raw],
        "",
        "Permutation test: the statistic is the smallest across-family distance of a Qwen model minus the "
        "Qwen-Qwen distance (positive: the two Qwen depths are each other's nearest); the null shuffles, within "
        f"every prompt, which model produced which of its four profiles ({args.permutations} permutations).",
        "",
        "| distance | margin | p |",
        "|---|---|---|",
        f"| raw | {raw_margin:+.3f} | {_p(raw_p)} |",
        f"| shape | {shape_margin:+.3f} | {_p(shape_p)} |",
        "",
        f"Criterion: margin > 0 and p < 0.05. Verdict: raw {_verdict(distance_ok['raw'])}, "
        f"shape {_verdict(distance_ok['shape'])}.",
        "",
        "## The same question in the viewer",
        "",
        "\"What is the capital of France?\" (Gemma: `Question: ...\\nAnswer:`), the answer token \" Paris\" selected "
        "at the last layer (`python examples/zoo_screenshots.py`):",
        "",
        *[f"![{m} in the viewer](viewer_{m}.png)" for m in ("smollm2", "gemma3-270m", "qwen2.5-coder-0.5b")
          if (args.out / f"viewer_{m}.png").is_file()],
        "",
        "## Limits",
        "",
        "- One family comes at two depths (Qwen2, 24 and 28 layers: a small change of depth); Llama and Gemma 3 "
        "are one model each, so \"family\" and \"model\" coincide for them and section 1 alone cannot tell the two apart.",
        "- Gemma 3 270M is a base model and is the only one given plain text; its profile differs from the others "
        "in rendering as well as in family. The two Qwen models share the template, the tokenizer and the training "
        "recipe, which the claim counts as the family.",
        "- The p-values are bounded below by the number of permutations (1 / (n + 1)).",
        "",
    ]
    (args.out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    summary = [
        SECTION[0],
        "## 7. Three real families: family-specific and depth-invariant profiles",
        "",
        f"`examples/zoo_study.py` ({time.strftime('%Y-%m-%d')}, recording {sum(seconds[m] for m in MODELS):.0f} s on "
        f"{torch.get_num_threads()} CPU threads) "
        f"records {n_prompts} prompts on SmolLM2-135M (Llama), Gemma 3 270M and Qwen2.5-Coder 0.5B and 1.5B; "
        "details, tables and figure in [zoo/report.md](zoo/report.md).",
        "",
        "![depth-rescaled mean profiles of the zoo](zoo/profiles.png)",
        "",
        f"- Family from one profile (k-NN, leave-one-prompt-out): accuracy {accuracy:.3f} vs dummy {dummy:.3f}, "
        f"p = {_p(p_family)}; criterion >= 0.8 and p < 0.05: {_verdict(family_ok)}.",
        "- Across depth: a classifier without one Qwen model calls it Qwen2 in "
        + " and ".join(f"{transfer[h]:.3f} ({h})" for h in QWEN) + f" of prompts; criterion >= 0.8: {_verdict(transfer_ok)}.",
        f"- Qwen 0.5B and 1.5B closer to each other than to another family: raw margin {raw_margin:+.3f} nats "
        f"(p = {_p(raw_p)}), shape margin {shape_margin:+.3f} (p = {_p(shape_p)}); criterion margin > 0 and "
        f"p < 0.05: raw {_verdict(distance_ok['raw'])}, shape {_verdict(distance_ok['shape'])}.",
        SECTION[1],
    ]
    if str(args.report):
        _write_section(args.report, "\n".join(summary))
    print("\n".join(summary))
    return 0


def _write_section(report: Path, section: str) -> None:
    """Replace the zoo section of the project report (appended the first time)."""
    text = report.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(SECTION[0]) + ".*?" + re.escape(SECTION[1]), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
    report.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
