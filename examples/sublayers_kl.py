"""Attention vs MLP expansion and pruning, and KL to the final layer, on the bundled model and SmolLM2.

Records 12 prompts (3 per task) with sub-layer rows (``sublayers=True``), 16 greedy tokens each,
then draws per decoder layer the mean entropy step of its attention and of its MLP (generated
tokens; above 0 expands, below 0 prunes) and the mean KL(p_final || p_layer) of the logit lens
at every whole layer. Prints the attention shares of expansion and pruning per task and the
most frequent pruning sites.

    python examples/sublayers_kl.py [--out examples/sublayers] [--real-model smollm2] [--tokens 16] [--per-task 3]

Writes ``OUT/sublayers_kl.png``, ``OUT/summary.txt`` and the traces ``OUT/traces/*.h5``
(recording resumes: prompts already in a trace are skipped).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from entropylens_hf import EntropyLens, Trace
from entropylens_hf.analysis import (PRUNING, format_sublayer_shares, step_sites, token_profiles,
                                     trace_sublayer_shares)
from entropylens_hf.prompts import Prompt, record_prompts

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "entropylens_hf" / "assets" / "prompts" / "tasks.jsonl"
# For the chat model: one user message per task type and topic.
CHAT = {
    "explain": "Explain what {} is.",
    "story": "Write a short story about {}.",
    "pros-cons": "What are the good and bad sides of {}?",
    "compare": "Compare {} with a train.",
}
TOPICS = ["a bicycle", "coffee", "the moon"]


def bundled_prompts(per_task: int) -> list[Prompt]:
    """The first ``per_task`` prompts of each task in the bundled labelled prompts."""
    seen: Counter = Counter()
    prompts = []
    for line in TASKS.read_text().splitlines():
        item = json.loads(line)
        task = item["labels"]["task"]
        if seen[task] < per_task:
            seen[task] += 1
            prompts.append(Prompt(item["prompt"], {"task": task}))
    return prompts


def chat_prompts(per_task: int) -> list[Prompt]:
    return [Prompt(text.format(topic), {"task": task}) for task, text in CHAT.items() for topic in TOPICS[:per_task]]


def record(name: str, model, tokenizer, prompts: list[Prompt], path: Path, tokens: int, chat: bool) -> None:
    lens = EntropyLens(model, tokenizer, top_k=5, sublayers=True, model_name=name)
    tokenizer.padding_side = "left"
    record_prompts(lens, prompts, path, batch_size=6, chat=chat, progress=False, max_new_tokens=tokens,
                   min_new_tokens=tokens, do_sample=False)


def summarise(path: Path) -> dict:
    """Per-layer attention and MLP steps, KL to final per whole layer, shares per task, pruning sites."""
    with Trace.open(path) as trace:
        m = trace.metadata
        overall = trace_sublayer_shares(trace)["all"]
        by_task = trace_sublayer_shares(trace, "task")
        whole = m.whole_layer_rows
        kl = np.concatenate([seq.kl_final[seq.is_generated][:, whole] for seq in trace])
        sites: Counter = Counter()
        tokens = 0
        for seq in trace:
            for profile in token_profiles(seq):
                tokens += 1
                sites.update(step_sites(profile, m.layer_kinds, PRUNING).rows)
    return {"name": m.model_name, "overall": overall, "by_task": by_task, "kl": kl.mean(axis=0),
            "sites": sites, "tokens": tokens}


def figure(results: list[dict], out: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(results), 6.4))
    for j, r in enumerate(results):
        s = r["overall"]
        layers = np.arange(1, len(s.mean_attention) + 1)
        ax = fig.add_subplot(2, len(results), j + 1)
        ax.bar(layers - 0.2, s.mean_attention, width=0.4, color="tab:orange", label="attention step")
        ax.bar(layers + 0.2, s.mean_mlp, width=0.4, color="tab:blue", label="MLP step")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"{r['name']}: mean entropy step per sub-layer\n(> 0 expands, < 0 prunes; {r['tokens']} generated "
                     f"tokens)\nattention does {100 * s.expansion_attention:.0f}% of expansion, "
                     f"{100 * s.pruning_attention:.0f}% of pruning", fontsize=8)
        ax.set_xlabel("decoder layer")
        if j == 0:
            ax.set_ylabel("nats")
        ax.legend(fontsize=7)
        ax = fig.add_subplot(2, len(results), len(results) + j + 1)
        ax.plot(np.arange(len(r["kl"])), r["kl"], marker="o", markersize=3, color="tab:green", label="logit lens")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_title(f"{r['name']}: mean KL(p_final || p_layer)", fontsize=8)
        ax.set_xlabel("lens layer (0 = embeddings)")
        if j == 0:
            ax.set_ylabel("nats")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "examples" / "sublayers")
    parser.add_argument("--real-model", default="smollm2", help="a name or folder for load_model; 'none' to skip")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--per-task", type=int, default=3, choices=[1, 2, 3], help="prompts per task (4 tasks)")
    args = parser.parse_args(argv)
    (args.out / "traces").mkdir(parents=True, exist_ok=True)
    from entropylens_hf.models import default_model

    model, tokenizer = default_model()
    paths = [args.out / "traces" / "bundled.h5"]
    record("bundled model", model, tokenizer, bundled_prompts(args.per_task), paths[0], args.tokens, chat=False)
    if args.real_model != "none":
        from entropylens_hf.loading import load_model

        model, tokenizer = load_model(args.real_model, device="cpu", dtype="float32")
        paths.append(args.out / "traces" / f"{args.real_model}.h5")
        record(args.real_model, model, tokenizer, chat_prompts(args.per_task), paths[-1], args.tokens, chat=True)
    results = [summarise(p) for p in paths]
    figure(results, args.out / "sublayers_kl.png")
    lines = []
    for r in results:
        lines.append(f"== {r['name']}")
        lines.append(format_sublayer_shares(r["by_task"], label="task"))
        top = ", ".join(f"{row} {100 * c / r['tokens']:.0f}%" for row, c in r["sites"].most_common(6))
        lines.append(f"most frequent pruning sites (steps doing 80% of a token's pruning; share of tokens): {top}")
        lines.append("mean KL to final per lens layer (nats): " + " ".join(f"{v:.2f}" for v in r["kl"]))
        lines.append("")
    (args.out / "summary.txt").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"figure: {args.out / 'sublayers_kl.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
