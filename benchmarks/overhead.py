"""Cost of recording against the alternatives, measured side by side in one run (CPU or GPU).

For each model and batch size, 64 new tokens, greedy, every layer's entropy and top-10:
  plain     : model.generate
  recorded  : EntropyLens.generate writing a trace (hooks, KV cache on, rows resolved in blocks,
              prompt rows and exact target ranks included), float32 lens product, default
              background="auto" (on CPU, blocks resolved in a worker thread while generate runs)
  rec-sync  : the same with background=False: every block resolved in generate's own thread
  rec-auto  : the same with lens_dtype="auto": the fastest accurate product for this machine
              (lens/products.py; the formulation chosen is printed)
  rec-bf16  : the same with lens_dtype=bfloat16
  rec-gen   : the float32 recording without prompt rows (record_prompt=False): the generated
              rows only, the rows the alternatives below compute
  diy       : generate(output_hidden_states=True, return_dict_in_generate=True), then the logit
              lens of every step's last position: final norm, unembedding, entropy, top-10
  nnsight   : the same lens computed inside an nnsight generate trace (when nnsight is installed)
  rerun     : the paper's reference-code approach, a full forward over the whole sequence with
              output_hidden_states and no cache at every step, logit lens on the last position
Runs are interleaved (every method once, then again) and the median of the repeats is reported
with its ratio to plain. With ``--memory`` it also reports the peak resident memory that plain and
recorded generation add to the loaded GPT-2-small-shape model, each in a fresh child process.
With ``--long-prompt N`` it times one batch-1 generation after an N-token prompt with all, no and
the last 64 prompt rows recorded.

    python benchmarks/overhead.py [--models gpt2,smollm2] [--real-model smollm2,/work/models/gemma3-270m@1+8]
                                  [--repeats 3] [--tokens 64] [--gpt2-batches 1,8,32] [--real-batches 1,8]
                                  [--methods plain,recorded,rec-auto,nnsight]

``--real-model`` takes names or folders, comma-separated; ``NAME@1+8`` gives that model its own batches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from common import gpt2_small, machine, prompt_texts, real_model, timed
from entropylens_hf import EntropyLens
from entropylens_hf.lens import LogitLens
from entropylens_hf.lens.products import auto_product
from entropylens_hf.metrics import entropy

TOP_K = 10


def _generate_kwargs(inputs: dict, tokens: int) -> dict:
    return dict(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, eos_token_id=None,
                pad_token_id=0)


def plain(model, inputs, tokens, **_):
    model.generate(**_generate_kwargs(inputs, tokens))


def recorded(model, inputs, tokens, *, path, lens_dtype=torch.float32, record_prompt=True, background="auto", **_):
    EntropyLens(model, None, top_k=TOP_K, lens_dtype=lens_dtype, record_prompt=record_prompt,
                background=background).generate(
        **_generate_kwargs(inputs, tokens), trace=path)


def _lens_of_last_position(lens: LogitLens, hidden: list[torch.Tensor], last_is_normed: bool) -> None:
    """Entropy and top-10 of every layer at the last position (what the alternatives compute)."""
    if last_is_normed:  # transformers' hidden_states[-1] has the final norm applied already
        normed = torch.cat([lens.normalize(torch.stack([h[:, -1] for h in hidden[:-1]], 1)), hidden[-1][:, -1:]], 1)
    else:
        normed = lens.normalize(torch.stack([h[:, -1] for h in hidden], 1))
    z = lens.unembedding(normed).float()  # [batch, layers, V]
    entropy(z), z.topk(TOP_K, dim=-1)


@torch.no_grad()
def diy(model, inputs, tokens, *, lens, **_):
    out = model.generate(**_generate_kwargs(inputs, tokens), output_hidden_states=True, return_dict_in_generate=True)
    for step in out.hidden_states:
        _lens_of_last_position(lens, list(step), last_is_normed=True)


def _envoy(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def nnsight_lens(model, inputs, tokens, *, lens, nnsight_model, layer_paths, **_):
    with nnsight_model.generate(dict(inputs), **{k: v for k, v in _generate_kwargs({}, tokens).items()}) as tracer:
        for _step in tracer.all():
            layers = [_envoy(nnsight_model, p) for p in layer_paths]
            hidden = [layers[0].input] + [layer.output for layer in layers]
            hidden = [h[0] if isinstance(h, tuple) else h for h in hidden]
            _lens_of_last_position(lens, hidden, last_is_normed=False)


@torch.no_grad()
def rerun(model, inputs, tokens, *, lens, **_):
    seq, mask = inputs["input_ids"], inputs.get("attention_mask")
    for _ in range(tokens):
        out = model(seq, attention_mask=mask, output_hidden_states=True, use_cache=False)
        _lens_of_last_position(lens, list(out.hidden_states), last_is_normed=True)
        seq = torch.cat([seq, out.logits[:, -1].argmax(-1, keepdim=True)], 1)
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)


def _methods(model, args) -> dict[str, Callable]:
    methods: dict[str, Callable] = {"plain": plain, "recorded": recorded}
    methods["rec-auto"] = lambda *a, **k: recorded(*a, **{**k, "lens_dtype": "auto"})
    methods["rec-bf16"] = lambda *a, **k: recorded(*a, **{**k, "lens_dtype": torch.bfloat16})
    methods["rec-gen"] = lambda *a, **k: recorded(*a, **{**k, "record_prompt": False})
    methods["rec-sync"] = lambda *a, **k: recorded(*a, **{**k, "background": False})
    methods["diy"] = diy
    try:
        import nnsight  # noqa: F401

        methods["nnsight"] = nnsight_lens
    except ImportError:
        print("nnsight is not installed: pip install 'entropylens-hf[bench]' to compare against it")
    methods["rerun"] = rerun
    if args.methods:
        wanted = args.methods.split(",")
        methods = {name: fn for name, fn in methods.items() if name in wanted or name == "plain"}
    return methods


def _nnsight_context(model, tokenizer) -> dict:
    try:
        from nnsight import LanguageModel
    except ImportError:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if tokenizer is None:
            from entropylens_hf.models import default_model

            tokenizer = default_model()[1]  # nnsight wants one; the ids are passed as tensors
        wrapped = LanguageModel(model, tokenizer=tokenizer)
    names = {module: name for name, module in model.named_modules()}
    return {"nnsight_model": wrapped, "layer_paths": [names[layer] for layer in LogitLens.from_model(model).layers]}


def compare(title: str, model, tokenizer, batches: list[int], make_inputs, args, tmp: Path) -> None:
    lens = LogitLens.from_model(model)
    context = {"lens": lens, **_nnsight_context(model, tokenizer)}
    methods = _methods(model, args)
    weight = getattr(lens.unembedding, "weight", None)
    chosen = auto_product(lens.device, weight.dtype if weight is not None else torch.float32).name
    print(f"\n{title}, {args.tokens} new tokens, median of {args.repeats} interleaved runs; "
          f"rec-auto's product: {chosen}", flush=True)
    for batch in batches:
        inputs = make_inputs(batch)
        plain(model, inputs, 4)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in methods}
        for r in range(args.repeats):
            for name, fn in methods.items():
                if (name == "rerun" and batch > args.rerun_max_batch) or (name == "rec-bf16" and batch > args.bf16_max_batch):
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    times[name].append(timed(fn, model, inputs, args.tokens, path=tmp / f"{id(model)}_{name}_{batch}_{r}.h5",
                                             **context))
        base = statistics.median(times["plain"])
        cells = [f"{name} {statistics.median(v):6.2f} s ({statistics.median(v) / base:4.2f}x)"
                 for name, v in times.items() if v]
        spread = max(max(v) / min(v) for v in times.values() if v)
        print(f"batch {batch:2d}: " + " | ".join(cells) + f"   [max/min of repeats: {spread:.2f}]", flush=True)


def long_prompt(model, tokenizer, length: int, args, tmp: Path) -> None:
    """Batch 1, ``length``-token prompt, 16 new tokens: plain vs recorded with all / none / last:64 prompt rows."""
    torch.manual_seed(0)
    ids = torch.randint(100, min(model.config.vocab_size, 30000), (1, length))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    variants = {"plain": lambda: plain(model, inputs, 16)}
    for rows in ("all", "none", "last:64"):
        variants[rows] = lambda rows=rows: recorded(model, inputs, 16, path=tmp / f"long_{rows.replace(':', '')}.h5",
                                                    record_prompt=rows)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    base = statistics.median(times["plain"])
    print(f"\n{length}-token prompt, 16 new tokens, batch 1 (prompt rows recorded: all / none / last:64)")
    print(" | ".join(f"{name} {statistics.median(v):6.2f} s ({statistics.median(v) / base:4.2f}x)"
                     for name, v in times.items()))


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(kind: str, batch: int, tokens: int) -> None:
    """Print the peak RSS (MiB) one generation adds to the loaded model (Linux only)."""
    model = gpt2_small()
    inputs = {"input_ids": torch.randint(100, 50000, (batch, 8))}
    plain(model, inputs, 2)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    before = _rss_kib("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "plain":
            plain(model, inputs, tokens)
        else:
            recorded(model, inputs, tokens, path=Path(tmp) / "t.h5")
    print(json.dumps({"extra_mib": (_rss_kib("VmHWM") - before) / 1024}))


def measure_memory(batch: int, tokens: int) -> dict[str, float]:
    result = {}
    for kind in ("plain", "recorded"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", kind, "--gpt2-batches", str(batch),
                              "--tokens", str(tokens)], capture_output=True, text=True, check=True)
        result[kind] = json.loads(out.stdout.strip().splitlines()[-1])["extra_mib"]
    return result


def _batches(text: str) -> list[int]:
    return [int(b) for b in text.split(",") if b]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt2,smollm2", help="comma-separated: gpt2 (random, GPT-2-small shape), "
                        "real (same as smollm2), "
                        "smollm2 (the real model given by --real-model)")
    parser.add_argument("--real-model", default="smollm2", help="names or folders for entropylens_hf.loading.load_model, "
                        "comma-separated; NAME@1+8 sets that model's batches")
    parser.add_argument("--methods", default="", help="comma-separated subset of: recorded,rec-sync,rec-auto,rec-bf16,rec-gen,diy,"
                        "nnsight,rerun (plain always runs; default all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--gpt2-batches", default="1,8,32")
    parser.add_argument("--real-batches", default="1,8")
    parser.add_argument("--rerun-max-batch", type=int, default=8, help="skip the slow re-run approach above this batch")
    parser.add_argument("--bf16-max-batch", type=int, default=1 << 30, help="skip the bfloat16 lens above this batch")
    parser.add_argument("--long-prompt", type=int, default=0, metavar="N", help="also time an N-token prompt (real model)")
    parser.add_argument("--memory", action="store_true", help="also measure peak extra memory (Linux, GPT-2 shape)")
    parser.add_argument("--memory-child", choices=["plain", "recorded"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, int(args.gpt2_batches), args.tokens)
        return
    print(machine())
    models = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if "gpt2" in models:
            model = gpt2_small()
            compare("GPT-2-small shape (12 layers, d 768, V 50,257), random weights", model, None,
                    _batches(args.gpt2_batches), lambda b: {"input_ids": torch.randint(100, 50000, (b, 8))}, args,
                    Path(tmp))
            if args.memory:
                for batch in _batches(args.gpt2_batches):
                    mem = measure_memory(batch, args.tokens)
                    print(f"batch {batch:2d}  peak memory added by generation: plain {mem['plain']:.0f} MiB, "
                          f"recorded {mem['recorded']:.0f} MiB")
        if "smollm2" in models or "real" in models or args.long_prompt:
            for spec in args.real_model.split(","):
                real(spec, models, args, Path(tmp))


def real(spec: str, models: list[str], args, tmp: Path) -> None:
    """One real model (``NAME`` or ``NAME@1+8``) compared at its batches, and the long prompt if asked."""
    name, _, own = spec.partition("@")
    model, tokenizer = real_model(name)
    if "smollm2" in models or "real" in models:
        def make_inputs(batch: int) -> dict:
            return dict(tokenizer(prompt_texts(tokenizer, batch), return_tensors="pt", padding=True))

        batches = _batches(own.replace("+", ",")) if own else _batches(args.real_batches)
        compare(f"{name} ({type(model).__name__}, {model.config.num_hidden_layers} layers, "
                f"V {model.config.vocab_size:,})", model, tokenizer, batches, make_inputs, args, tmp)
    if args.long_prompt:
        long_prompt(model, tokenizer, args.long_prompt, args, tmp)
    del model

if __name__ == "__main__":
    main()
