"""Accuracy of the lens product formulations against float32, on real generated text.

Generates greedily from the demo prompts (in the chat template when the model has one),
runs one forward over the finished sequences to capture every layer's residual, and
computes the lens statistics of every row (prompt and generated positions, every layer)
with each product formulation through ``LogitLens.token_statistics``, the recorder's own
code path (the last layer's row gives the final distribution, whose top-1 is the offset
product's candidate):

  float32                : the reference
  bfloat16 / float16     : the backend's own low-precision product (on CPU: low-precision output)
  bfloat16+offset        : bfloat16 with a per-row offset column, so the output is rounded near zero
  bfloat16 -> float32 out: bfloat16 inputs, float32 accumulation and output, what the CUDA
                           path uses (cuBLAS ``out_dtype``); emulated on CPU by multiplying
                           the bfloat16-rounded inputs in float32

and prints mean / max absolute entropy error (nats), top-1 agreement and target-rank
agreement against float32 (all rows, and rows whose target float32 ranks in its top 10),
with the time each took and the formulation ``lens_dtype="auto"`` picks here.

    python benchmarks/accuracy.py [--model default|smollm2|PATH] [--prompts 16] [--tokens 96]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from unittest import mock

import torch

import entropylens_hf.lens.products as products_module
from common import machine, prompt_texts, real_model
from entropylens_hf.capture import ResidualCapture
from entropylens_hf.lens import LogitLens
from entropylens_hf.lens.products import auto_product, cpu_flags


def _float32_output_emulated(rows: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    return torch.mm(rows.float(), weight.float().t(), out=out)


def lens_rows(model, tokenizer, prompts: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor, LogitLens, int]:
    """Residuals ``[positions, L, d]`` of every layer at every position with a target, and the targets."""
    inputs = tokenizer(prompt_texts(tokenizer, prompts), return_tensors="pt", padding=True).to(model.device)
    with torch.no_grad():
        seqs = model.generate(**inputs, max_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    generated = seqs[:, inputs.input_ids.shape[1]:]
    stopped = torch.cumsum((generated == tokenizer.eos_token_id).int(), 1) - (generated == tokenizer.eos_token_id).int()
    mask = torch.cat([inputs.attention_mask, (stopped == 0).long()], 1)
    lens = LogitLens.from_model(model)
    with ResidualCapture(lens.layers) as cap, torch.no_grad():
        model(seqs, attention_mask=mask)
    valid = (mask[:, :-1] & mask[:, 1:]).bool()
    b, p = valid.nonzero(as_tuple=True)
    residuals = torch.stack([r[b, p] for r in cap.residuals], 1)  # [positions, L, d]
    return residuals, seqs[b, p + 1], lens, int(valid.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="default (bundled), smollm2, or a model folder")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--products", default="all", help="comma-separated subset of: bfloat16,float16,emulated")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tokenizer = real_model(args.model, device=args.device)
    rows, targets, lens, positions = lens_rows(model, tokenizer, args.prompts, args.tokens)
    layers = rows.shape[1]
    print(f"{args.model}: {positions} positions x {layers} layers = {positions * layers} lens rows; {machine()}")
    print(f"cpu flags: {' '.join(sorted(f for f in cpu_flags() if 'bf16' in f or f in ('avx2', 'avx512f')))}; "
          f"auto picks: {auto_product(lens.device).name}")
    variants = [("float32", "float32", None), ("bfloat16", "bfloat16", None), ("float16", "float16", None),
                ("bfloat16+offset", "bfloat16+offset", None), ("bfloat16-split+offset", "bfloat16-split+offset", None)]
    if lens.device.type == "cpu":
        variants.append(("bfloat16 -> float32 out (emulated)", "bfloat16", _float32_output_emulated))
    if args.products != "all":
        wanted = {"float32", *args.products.split(",")}
        variants = [v for v in variants if v[0].split()[0] in wanted or ("emulated" in wanted and "emulated" in v[0])]
    near = None
    print(f"{'product':36s} {'mean |dH|':>10s} {'max |dH|':>9s} {'top-1 agree':>12s} {'rank agree':>11s} "
          f"{'(top-10)':>9s} {'time':>8s}", flush=True)
    for name, product_name, function in variants:
        patch = (mock.patch.object(products_module, "plain_product_function", lambda device, d, p=function: p)
                 if function else None)
        start = time.perf_counter()
        with patch or contextlib.nullcontext():
            s = lens.token_statistics(rows, top_k=1, targets=targets, dtype=product_name, kl=False)
        seconds = time.perf_counter() - start
        if near is None:
            ref, near = s, s.target_rank < 10  # float32 first: the reference
        err = (s.entropy - ref.entropy).abs()
        top1 = (s.topk_ids[:, 0] == ref.topk_ids[:, 0]).float().mean().item()
        same_rank = s.target_rank == ref.target_rank
        rank, rank_near = same_rank.float().mean().item(), same_rank[near].float().mean().item()
        print(f"{name:36s} {err.mean().item():10.5f} {err.max().item():9.4f} {100 * top1:11.2f}% {100 * rank:10.2f}%"
              f" {100 * rank_near:8.2f}% {seconds:7.1f}s", flush=True)


if __name__ == "__main__":
    main()
