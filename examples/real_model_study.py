"""The paper's claims on a real instruction-following model (e.g. SmolLM2-135M-Instruct).

Run through ``reproduce_paper.py --real-model PATH_OR_NAME --out DIR``. The setting follows the
paper: the model is asked, through its chat template, to do tasks of several types in several
output formats; the report checks, each with a stated criterion:

1. task type and output format are predictable from the generated tokens' entropy profiles
   (k-NN on 4-window profiles, stratified 10-fold CV, ROC-AUC next to a dummy, p-value);
2. profiles show expansion and pruning, at which layers, and where the chosen token forms;
3. skipping the layers of maximal expansion hurts multiple-choice accuracy more than skipping
   those of maximal pruning (next to random layers), on questions the model answers above chance.

Writes ``DIR/report.md``, figures ``DIR/*.png`` and the trace ``DIR/traces/chat_tasks_<prompts>x<tokens>.h5``;
recording resumes: prompts already in that trace are not generated again.
"""

from __future__ import annotations

import copy
import itertools
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from entropylens_hf import EntropyLens, Trace
from entropylens_hf.analysis import (classify_trace, format_classification, group_dynamics, group_profiles,
                                     layer_dynamics, read_multiple_choice, skip_layers, token_profiles)
from entropylens_hf.analysis.dynamics import EXPANSION, PRUNING, entropy_steps
from entropylens_hf.prompts import Prompt, record_prompts, tokenize_prompts

from reproduce_paper import PROMPTS_DIR, RENYI, _figure, _label_panel, _layer, _p, _save, _table, _verdict

MC_GENERAL_FILE = PROMPTS_DIR / "mc_general_knowledge.jsonl"

# Task types x output formats, asked as one user message: "<task sentence> <format sentence>".
CHAT_TASKS = {
    "explain": "Explain what {topic} is.",
    "story": "Write a short story about {topic}.",
    "pros-cons": "What are the good and bad sides of {topic}?",
    "compare": "Compare {topic} with {other}.",
}
CHAT_FORMATS = {
    "paragraph": "Answer in one paragraph.",
    "bullets": "Answer as a bulleted list.",
    "json": "Answer in JSON.",
    "table": "Answer as a Markdown table.",
}
TOPICS = ["a bicycle", "a smartphone", "a guitar", "coffee", "a dog", "a garden", "the ocean", "a library", "chess",
          "a train", "bread", "the moon", "a volcano", "a computer", "a forest", "a city", "rain", "a museum", "a robot",
          "music", "a bridge", "a hospital", "the internet", "a school", "tea", "a camera", "a river", "football",
          "a castle", "electricity", "a painting", "the weather"]


def render_chat(tokenizer, text: str) -> str:
    """``text`` as a user message, rendered by the model's chat template up to the assistant's turn.

    The library's chat rendering (the same that ``record_prompts(..., chat=True)`` records), used
    here for the multiple-choice prefixes, which are scored rather than generated from.
    """
    return tokenize_prompts(tokenizer, [Prompt(text)], chat=True)[1][0]


def make_chat_prompts(per_cell: int = 8) -> list[tuple[str, dict]]:
    """``(user message, labels)`` for every (task, format) pair, ``per_cell`` topics each.

    Topics come in blocks of ``per_cell``, assigned as a Latin square (block = task + format,
    modulo the number of formats), so that every task and every format sees every block once:
    neither label can be predicted from the topic.
    """
    out = []
    for (t, (task, task_text)), (f, (fmt, fmt_text)) in itertools.product(enumerate(CHAT_TASKS.items()),
                                                                          enumerate(CHAT_FORMATS.items())):
        block = (t + f) % len(CHAT_FORMATS)
        for i in range(per_cell):
            topic = TOPICS[(block * per_cell + i) % len(TOPICS)]
            other = TOPICS[(block * per_cell + i + len(TOPICS) // 2) % len(TOPICS)]
            out.append((f"{task_text.format(topic=topic, other=other)} {fmt_text}", {"task": task, "format": fmt}))
    return out


def detected_format(text: str) -> str:
    """The output format a generated text shows (a heuristic: the first marker found wins)."""
    if "{" in text:
        return "json"
    if "|" in text:
        return "table"
    if re.search(r"^\s*([-*•]|\d+[.)])\s", text, re.M):
        return "bullets"
    return "paragraph"


# --------------------------------------------------------------------------- multiple choice, prefix cached


def _cached_forward(model, ids: torch.Tensor, cache=None, attention_mask=None, last_only: bool = False):
    """``(logits, cache)`` of ``model`` on ``ids`` after ``cache``; the cache argument was renamed in transformers 5.24."""
    kwargs = {"attention_mask": attention_mask} if attention_mask is not None else {}
    if last_only:
        kwargs["logits_to_keep"] = 1
    if cache is not None:
        kwargs["cache" if "cache" in _OUTPUT_FIELDS else "past_key_values"] = cache
    out = model(input_ids=ids, use_cache=True, **kwargs)
    return out.logits.float(), (out.cache if "cache" in _OUTPUT_FIELDS else out.past_key_values)


def _output_fields() -> set[str]:
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return set(CausalLMOutputWithPast.__dataclass_fields__)


_OUTPUT_FIELDS = _output_fields()


@torch.no_grad()
def mc_correct(model, tokenizer, items, prefixes: list[str]) -> np.ndarray:
    """1 where the correct choice has the highest summed log-likelihood after its chat-rendered question.

    Scores like ``analysis.evaluation.choice_log_likelihoods`` (question and choice tokenized
    apart), but cheaper for chat prompts, whose long template prefix is the same for every
    question: the tokens all questions share are run once, each question's own tokens once on
    a copy of that cache, and its choices together on the question's cache (about 2x less compute).
    """
    device = next(model.parameters()).device
    contexts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prefixes]
    shared = 0
    while all(len(c) > shared + 1 and c[shared] == contexts[0][shared] for c in contexts):
        shared += 1
    shared_cache = None
    if shared:
        _, shared_cache = _cached_forward(model, torch.tensor([contexts[0][:shared]], device=device), last_only=True)
    hits = []
    for item, context in zip(items, contexts):
        logits, cache = _cached_forward(model, torch.tensor([context[shared:]], device=device), copy.deepcopy(shared_cache),
                                        last_only=True)
        conts = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in item.choices]
        width = max(len(c) for c in conts)
        ids = torch.full((len(conts), width), int(tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros((len(conts), len(context) + width), dtype=torch.long)
        mask[:, : len(context)] = 1
        for row, c in enumerate(conts):
            ids[row, : len(c)] = torch.tensor(c)
            mask[row, len(context) : len(context) + len(c)] = 1
        cache.batch_repeat_interleave(len(conts))
        rest, _ = _cached_forward(model, ids.to(device), cache, mask.to(device))
        log_first = torch.log_softmax(logits[0, -1], dim=-1)
        log_rest = torch.log_softmax(rest, dim=-1)
        scores = [float(log_first[c[0]]) + sum(float(log_rest[row, j - 1, c[j]]) for j in range(1, len(c)))
                  for row, c in enumerate(conts)]
        hits.append(int(np.argmax(scores) == item.answer))
    return np.array(hits)


@dataclass(frozen=True)
class SkipRow:
    n: int
    excluded: tuple[int, ...]
    condition: str
    layers: tuple[tuple[int, ...], ...]
    accuracy: float
    accuracy_std: float


def skip_study(model, tokenizer, items, prefixes, profile: np.ndarray, cases, seeds: int, seed: int):
    """Accuracy with no layer skipped, the n layers of maximal expansion / pruning of ``profile``
    skipped, and n random layers (``seeds`` draws), for each ``(never-skipped layers, n)`` in ``cases``.

    The same conditions as ``analysis.skip_experiment``, on the prefix-cached scorer above;
    identical layer sets are evaluated once.
    """
    depth = len(profile) - 1
    steps = entropy_steps(profile)
    cache: dict[tuple[int, ...], float] = {}

    def accuracy(skipped: tuple[int, ...]) -> float:
        if skipped not in cache:
            with skip_layers(model, skipped):
                cache[skipped] = float(mc_correct(model, tokenizer, items, prefixes).mean())
        return cache[skipped]

    rows = [SkipRow(0, (), "none", ((),), accuracy(()), 0.0)]
    rng = np.random.default_rng(seed)
    for excluded, n in cases:
        candidates = np.array([i for i in range(depth) if i not in excluded])
        for kind, name in ((EXPANSION, "max expansion"), (PRUNING, "max pruning")):
            chosen = tuple(sorted(int(i) for i in candidates[np.argsort(-kind * steps[candidates], kind="stable")[:n]]))
            rows.append(SkipRow(n, excluded, name, (chosen,), accuracy(chosen), 0.0))
        draws = [tuple(sorted(int(i) for i in rng.choice(candidates, n, replace=False))) for _ in range(seeds)]
        values = [accuracy(d) for d in draws]
        rows.append(SkipRow(n, excluded, f"random x{seeds}", tuple(draws), float(np.mean(values)), float(np.std(values))))
    return rows


def binomial_p_above(hits: int, n: int, chance: float) -> float:
    """One-sided exact binomial p-value of ``hits`` or more right out of ``n`` at ``chance``."""
    from scipy.stats import binomtest

    return float(binomtest(hits, n, chance, alternative="greater").pvalue)


# --------------------------------------------------------------------------- figures


def figure_profiles(sets: dict[str, dict], num_layers: int, out: Path) -> None:
    fig = _figure(4.6 * len(sets), 3.6)
    layers = np.arange(num_layers)
    for j, (label, groups) in enumerate(sets.items()):
        ax = fig.add_subplot(1, len(sets), j + 1)
        for name, g in groups.items():
            ax.plot(layers, g.mean, label=f"{name} ({g.count})")
            ax.fill_between(layers, g.mean - g.std, g.mean + g.std, alpha=0.1)
        _label_panel(ax, j, f"mean generated-token profile by {label}", "lens layer (0 = embeddings)",
                     "entropy (nats), mean ± std")
    _save(fig, out)


def figure_steps_and_forming(dyn, prob: np.ndarray, top1: np.ndarray, out: Path) -> None:
    fig = _figure(11, 3.4)
    ax = fig.add_subplot(1, 2, 1)
    steps = dyn.mean_steps
    ax.bar(np.arange(len(steps)), steps, color=["tab:red" if s > 0 else "tab:blue" for s in steps])
    ax.axhline(0, color="black", lw=0.5)
    _label_panel(ax, 0, "mean entropy change per layer: red expands, blue prunes", "layer index i (step lens i -> i+1)",
                 "mean entropy change (nats)", legend=False)
    ax = fig.add_subplot(1, 2, 2)
    layers = np.arange(len(prob))
    ax.plot(layers, prob, label="probability of the chosen token")
    ax.plot(layers, top1, label="fraction where it is the top-1")
    _label_panel(ax, 1, "where the generated token forms", "lens layer (0 = embeddings)", "")
    _save(fig, out)


# --------------------------------------------------------------------------- the study


def run(args, load) -> int:
    """``load(name) -> (model, tokenizer, display name)``; writes the report into ``args.out``."""
    t0 = time.perf_counter()
    out = args.out
    (out / "traces").mkdir(parents=True, exist_ok=True)
    model, tokenizer, name = load(args.real_model)
    t_load = time.perf_counter()
    depth = model.config.num_hidden_layers
    new_tokens = args.new_tokens or 24
    seeds = args.seeds or 2
    per_cell = 2 if args.quick else 8
    k = 5

    # 1. record the chat prompts: greedy, generated rows only (the profiles the paper classifies)
    messages = make_chat_prompts(per_cell)
    prompts = [Prompt(text, labels) for text, labels in messages]
    # Resumable: prompts already in the trace (an interrupted or earlier run with the same settings) are reused.
    trace_path = out / "traces" / f"chat_tasks_{len(prompts)}x{new_tokens}.h5"
    lens = EntropyLens(model, tokenizer, top_k=5, renyi_alphas=RENYI, record_prompt=False, model_name=name)
    recorded, reused = record_prompts(lens, prompts, trace_path, batch_size=32, progress=False, chat=True,
                                      max_new_tokens=new_tokens, do_sample=False)
    t_record = time.perf_counter() - t_load
    print(f"  recorded {recorded} chat prompts in {t_record:.0f} s ({reused} already in {trace_path})")

    with Trace.open(trace_path) as trace:
        seqs = list(trace)
        results = [(label, windows, alpha, classify_trace(trace, label, windows=windows, alpha=alpha, k=k, seed=args.seed))
                   for label in ("task", "format") for windows, alpha in ((4, None), (None, None), (4, 2.0))]
    per_token = [token_profiles(s) for s in seqs]
    tokens = np.concatenate(per_token)
    token_labels = {key: np.concatenate([[s.labels[key]] * len(p) for s, p in zip(seqs, per_token)]) for key in ("task", "format")}
    dyn = layer_dynamics(tokens)
    by_group = {key: group_dynamics(tokens, token_labels[key]) for key in ("task", "format")}
    seq_means = np.stack([p.mean(axis=0) for p in per_token])
    profile_groups = {key: group_profiles(seq_means, [s.labels[key] for s in seqs]) for key in ("task", "format")}
    prob = np.concatenate([s.target_prob for s in seqs]).mean(axis=0)
    top1 = (np.concatenate([s.target_rank for s in seqs]) == 0).mean(axis=0)
    figure_profiles(profile_groups, depth + 1, out / "profiles.png")
    figure_steps_and_forming(dyn, prob, top1, out / "steps.png")
    compliance = {}
    for s in seqs:
        key = (s.labels["format"], detected_format(s.generated_text))
        compliance[key] = compliance.get(key, 0) + 1
    examples = {(s.labels["task"], s.labels["format"]): s.generated_text for s in seqs}

    # 3. multiple choice: accuracy first, then layer skipping ranked by the chat profile
    items = read_multiple_choice(args.mc or MC_GENERAL_FILE)
    if args.mc_limit or args.quick:
        items = items[: args.mc_limit or 12]
    prefixes = [render_chat(tokenizer, it.question) for it in items]
    # Layer 0 is kept out in the later cases: with tied embeddings the lens at the embeddings predicts the
    # input token itself, so the first layer's step is a large "expansion" that is an artefact of the tying.
    cases = (((), 1), ((0,), 1)) if args.quick else (((), 1), ((0,), 1), ((0,), 3))
    skips = skip_study(model, tokenizer, items, prefixes, tokens.mean(axis=0), cases, seeds, args.seed)
    base = skips[0].accuracy
    p_chance = binomial_p_above(round(base * len(items)), len(items), 1 / len(items[0].choices))
    runtime = time.perf_counter() - t0

    write_report(out, args, name, model, prompts, new_tokens, seqs, results, dyn, by_group, prob, top1, compliance,
                 examples, items, skips, p_chance, seeds, (recorded, reused, t_record), runtime)
    print(f"report written to {out / 'report.md'} in {runtime:.0f} s")
    return 0


def _first_layer_at_least(curve: np.ndarray, level: float) -> int:
    above = np.flatnonzero(curve >= level)
    return int(above[0]) if above.size else -1


def write_report(out, args, name, model, prompts, new_tokens, seqs, results, dyn, by_group, prob, top1, compliance,
                 examples, items, skips, p_chance, seeds, recording, runtime) -> None:
    L = []
    w = L.append
    depth = model.config.num_hidden_layers
    flags = ((" --quick" if args.quick else "") + (f" --new-tokens {args.new_tokens}" if args.new_tokens else "")
             + (f" --mc-limit {args.mc_limit}" if args.mc_limit else "") + (f" --seeds {args.seeds}" if args.seeds else ""))
    w(f"# Entropy-Lens claims on a real instruct model: {name}\n")
    w(f"Generated by `examples/reproduce_paper.py --real-model {args.real_model}{flags}` on {time.strftime('%Y-%m-%d')} "
      f"({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}); total {runtime:.0f} s, "
      f"of which recording {recording[2]:.0f} s"
      + (f" ({recording[0]} prompts recorded in this run, {recording[1]} reused from the trace file of an earlier, "
         "interrupted run with the same settings)" if recording[1] else "")
      + ". The small-model report is [../report.md](../report.md).\n")
    w("Each claim comes with the criterion used to call it; the numbers are this run's. A 135 M-parameter model is "
      "far smaller than the paper's 1B-70B models, so a claim that does not hold here says something about this "
      "model, not necessarily about the paper.\n")

    w("## Setup\n")
    params = sum(p.numel() for p in model.parameters())
    w(f"Model: {name}, {model.config.model_type}, {depth} decoder layers, d_model {model.config.hidden_size}, "
      f"vocabulary {model.config.vocab_size}, {'tied' if model.config.tie_word_embeddings else 'untied'} embeddings, "
      f"{params / 1e6:.1f} M parameters, float32 on CPU.\n")
    counts = {key: {} for key in ("task", "format")}
    for p in prompts:
        for key in counts:
            counts[key][p.labels[key]] = counts[key].get(p.labels[key], 0) + 1
    w(f"Prompts: {len(prompts)} user messages, every task type x output format pair with "
      f"{len(prompts) // (len(CHAT_TASKS) * len(CHAT_FORMATS))} topics each (tasks: "
      f"{', '.join(f'{k} {v}' for k, v in counts['task'].items())}; formats: "
      f"{', '.join(f'{k} {v}' for k, v in counts['format'].items())}). A message is a task sentence and a format "
      "sentence, e.g. `" + make_chat_prompts(1)[5][0] + "`, rendered by the model's chat template (its default "
      "system message, then the user turn, then the assistant header); the model generates the answer on its own, "
      "no cue starts it.\n")
    w("Task sentences: " + "; ".join(f"{k}: `{v}`" for k, v in CHAT_TASKS.items()) + ". Format sentences: "
      + "; ".join(f"{k}: `{v}`" for k, v in CHAT_FORMATS.items()) + ".\n")
    w(f"Generation: greedy, {new_tokens} new tokens at most (EOS ends a sequence earlier), as the paper's code "
      "generates its format data set (`sample=False`; its task-type data is sampled at temperature 1 and only a few "
      "tokens long). Profiles are over generated tokens only; Rényi orders recorded: "
      f"{', '.join(map(str, RENYI))}.\n")
    lengths = [s.n_generated for s in seqs]
    w(f"Generated tokens per answer: median {int(np.median(lengths))}, min {min(lengths)}, max {max(lengths)}. "
      "Did the model follow the format? Detected format (first marker found: `{` JSON, `|` table, a line starting "
      "with `-`, `*` or `1.` bullets, else paragraph) against the requested one:\n")
    fmts = list(CHAT_FORMATS)
    w(_table(["requested \\ detected", *fmts],
             [[f, *(str(compliance.get((f, d), 0)) for d in fmts)] for f in fmts]) + "\n")
    followed = sum(compliance.get((f, f), 0) for f in fmts)
    w(f"The requested format is detected in {followed} of {len(seqs)} answers.\n")
    w("Example answers (one per format, task `explain`):\n")
    for f in fmts:
        text = examples.get(("explain", f), "").replace("\n", "⏎")
        w(f"- {f}: `` {text[:160]} ``")
    w("")

    w("## 1. Task type and output format are predictable from profiles\n")
    w("![mean profiles by task and by format](profiles.png)\n")
    w("k-NN (k=5, Euclidean) on each answer's generated-token profile, stratified 10-fold CV. Features: 4 window "
      "means over the generation concatenated (windowed features as in the paper's code, which uses 8 windows over "
      "256 tokens), the mean profile, or 4 windows of Rényi-2 entropy.\n")
    w("```\n" + format_classification([r for *_, r in results]) + "\n```\n")
    for label in ("task", "format"):
        main = next(r for lab, win, al, r in results if lab == label and win == 4 and al is None)
        ok = main.roc_auc >= 0.7 and main.p_value < 0.05
        some = main.p_value < 0.05 and main.roc_auc > main.baseline_roc_auc
        w(f"- {label}: criterion ROC-AUC >= 0.7 and p < 0.05 (4-window Shannon features). Verdict: {_verdict(ok, some)} "
          f"(ROC-AUC {main.roc_auc:.3f} vs dummy {main.baseline_roc_auc:.3f}, accuracy {main.accuracy:.3f} vs "
          f"{main.baseline_accuracy:.3f}, p {_p(main.p_value)}; chance accuracy {1 / len(main.classes):.2f}).")
    w("")

    w("## 2. Expansion and pruning\n")
    w("![steps and where the token forms](steps.png)\n")
    big_up = [i for i, s in enumerate(dyn.mean_steps) if s >= 0.1]
    big_down = [i for i, s in enumerate(dyn.mean_steps) if s <= -0.1]
    w(f"Over all {dyn.count} generated tokens, layer index i is `layers[i]`, turning lens layer i into i+1. "
      "Mean entropy change per layer (nats):\n")
    w("```\n" + " ".join(f"{i}:{s:+.2f}" for i, s in enumerate(dyn.mean_steps)) + "\n```\n")
    w(f"Layer of maximal expansion of the mean profile: {_layer(dyn.expansion_layer)}; of maximal pruning: "
      f"{_layer(dyn.pruning_layer)}. Most tokens have their own maximal expansion at layer "
      f"{int(dyn.expansion_counts.argmax())} ({dyn.expansion_counts.max() / dyn.count:.0%} of tokens) and their "
      f"maximal pruning at layer {int(dyn.pruning_counts.argmax())} ({dyn.pruning_counts.max() / dyn.count:.0%}).\n")
    rows = []
    for key, groups in by_group.items():
        for g, d in groups.items():
            rows.append([key, g, str(d.count), _layer(d.expansion_layer), _layer(d.pruning_layer),
                         f"{d.mean_steps[: depth // 3].sum():+.2f}", f"{d.mean_steps[depth // 3 : 2 * depth // 3].sum():+.2f}",
                         f"{d.mean_steps[2 * depth // 3 :].sum():+.2f}"])
    w("Per group (layers of maximal expansion / pruning of the group's mean profile; net entropy change over each "
      "third of the decoder layers):\n")
    w(_table(["label", "group", "tokens", "max expansion", "max pruning", "first third", "middle third", "last third"],
             rows) + "\n")
    half, most = _first_layer_at_least(prob, 0.5), _first_layer_at_least(top1, 0.5)
    w(f"Where the generated token forms: its mean logit-lens probability first reaches 0.5 at lens layer "
      f"{_layer(half)}, and it is the lens's top-1 for at least half of the tokens from lens layer {_layer(most)} "
      f"of {depth} (values per layer in the right panel above).\n")
    ok = bool(big_up) and bool(big_down)
    w(f"Criterion: the mean profile has both expansion and pruning steps of at least 0.1 nats. Verdict: {_verdict(ok)} "
      f"(expanding layers {', '.join(map(str, big_up)) or 'none'}; pruning layers "
      f"{', '.join(map(str, big_down)) or 'none'}).\n")

    w("## 3. Skipping expansion layers hurts more than skipping pruning layers\n")
    n_choices = len(items[0].choices)
    w(f"Multiple-choice questions: `{(args.mc or MC_GENERAL_FILE).name}` ({len(items)} general-knowledge questions, "
      f"{n_choices} choices each, written for this project; the answer positions were shuffled with a fixed seed). "
      "Each question is rendered by the chat template as a user message; each choice is scored by its summed "
      "log-likelihood as the start of the assistant's answer.\n")
    w(f"Accuracy with no layer skipped: **{skips[0].accuracy:.3f}** (chance {1 / n_choices:.2f}; one-sided binomial "
      f"p {_p(p_chance)}). Criterion for using the set: accuracy above chance with p < 0.05: "
      f"{'met' if p_chance < 0.05 else 'NOT met, so the skipping results below say little'}.\n")
    w(f"Layers are ranked by the mean generated-token profile of section 2 (the model's profile in this chat setting); "
      f"random control: {seeds} draws. With *layer 0 kept*, layer 0 is never skipped, neither ranked nor drawn.\n")
    w(_table(["n", "never skipped", "condition", "layers", "accuracy"],
             [[str(r.n or "-"), ", ".join(map(str, r.excluded)) or "-", r.condition,
               "; ".join(", ".join(map(str, ls)) or "-" for ls in r.layers),
               f"{r.accuracy:.3f}" + (f" ± {r.accuracy_std:.3f}" if len(r.layers) > 1 else "")] for r in skips]) + "\n")
    cases = []
    for (n, excluded), group in itertools.groupby(skips[1:], key=lambda r: (r.n, r.excluded)):
        g = {r.condition.split(" x")[0]: r for r in group}
        cases.append((n, excluded, g["max expansion"].accuracy, g["max pruning"].accuracy, g["random"].accuracy))
    wins = [e < p for _, _, e, p, _ in cases]
    w(f"Criterion: accuracy after skipping the maximal-expansion layers is lower than after skipping the "
      f"maximal-pruning layers. Holds in {sum(wins)} of {len(wins)} (n, never-skipped) cases. "
      f"Verdict: {_verdict(all(wins), sum(wins) > len(wins) / 2)}.\n")
    for n, excluded, e, p, r in cases:
        kept = "layer 0 kept" if excluded else "all layers"
        w(f"- n={n}, {kept}: expansion {e:.3f}, pruning {p:.3f}, random {r:.3f}, none {skips[0].accuracy:.3f}.")
    w("")
    (out / "report.md").write_text("\n".join(L), encoding="utf-8")
