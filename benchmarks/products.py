"""The lens product [512 x d] @ [d x 8192] in each formulation this backend offers: time and error.

Times are medians of interleaved repeats (ratios to float32 are what to read on a shared
machine); the error is the max absolute logit error against a float64 product, on rows scaled so
that logits reach about 100, as a trained model's final-normed residuals do.

    python benchmarks/products.py [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Callable

import torch

from common import machine, timed
from entropylens_hf.lens.products import auto_product, named_product


def packaged(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The package's product ``name``; an offset one gets each row's largest logit (from a plain bfloat16 product)."""
    product = named_product(name)
    cache: dict = {}

    def run(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if id(w) not in cache:
            cache[id(w)] = product.weight_columns(w)  # converted once, as the lens caches it
        weight, rows = cache[id(w)], a.to(product.dtype)
        reference = None
        if product.offset:  # known before the product in the lens (running maximum): not timed here
            if ("ref", id(a)) not in cache:
                cache[("ref", id(a))] = torch.nn.functional.linear(rows, w.to(product.dtype)).float().amax(-1)
            reference = cache[("ref", id(a))]
        read, shift = product.row_columns(rows, reference)
        return product.multiply(read, weight, None, shift)

    return run


def formulations(device: str) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    bf, half = torch.bfloat16, torch.float16

    def split(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """hi/lo bfloat16 parts of both inputs, three bfloat16 products summed in float32."""
        a_hi, w_hi = a.to(bf), w.to(bf)
        a_lo, w_lo = (a - a_hi.float()).to(bf), (w - w_hi.float()).to(bf)
        return (torch.mm(a_hi, w_hi.t()).float() + torch.mm(a_hi, w_lo.t()).float() + torch.mm(a_lo, w_hi.t()).float())

    def autocast_linear(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device, dtype=bf):
            return torch.nn.functional.linear(a, w).float()

    found = {
        "float32": lambda a, w: torch.mm(a, w.t()),
        "bfloat16 (bf16 output)": lambda a, w: torch.mm(a.to(bf), w.to(bf).t()).float(),
        "float16 (fp16 output)": lambda a, w: torch.mm(a.to(half), w.to(half).t()).float(),
        "bfloat16 autocast linear": autocast_linear,
        "bfloat16 hi/lo split (3 products)": split,
        "bfloat16 F.linear (stored layout)": packaged("bfloat16"),
        "bfloat16+offset": packaged("bfloat16+offset"),
        "bfloat16-split+offset": packaged("bfloat16-split+offset"),
    }
    try:
        probe = torch.ones(2, 2, device=device, dtype=bf)
        torch.mm(probe, probe, out_dtype=torch.float32)
        found["bfloat16 -> float32 out_dtype"] = lambda a, w: torch.mm(a.to(bf), w.to(bf).t(), out_dtype=torch.float32)
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        print(f"torch.mm(..., out_dtype=torch.float32) on {device}: not available ({str(exc).splitlines()[0][:90]})")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine())
    print(f"lens_dtype='auto' picks: {auto_product(args.device).name}")
    torch.manual_seed(0)
    for d in (576, 768):
        a = torch.randn(512, d, device=args.device) * 2
        w = torch.randn(8192, d, device=args.device) * (10 / d**0.5)
        exact = (a.double() @ w.double().t())
        methods = formulations(args.device)
        times: dict[str, list[float]] = {name: [] for name in methods}
        for name, fn in methods.items():
            fn(a, w)  # warm-up
        for _ in range(args.repeats):
            for name, fn in methods.items():
                times[name].append(timed(fn, a, w))
        base = statistics.median(times["float32"])
        print(f"\n[512 x {d}] @ [{d} x 8192], max |logit| {exact.abs().max().item():.0f}")
        for name, fn in methods.items():
            err = (fn(a, w).double() - exact).abs().max().item()
            med = statistics.median(times[name])
            print(f"  {name:36s} {1e3 * med:8.1f} ms  {med / base:5.2f}x float32   max |error| {err:.4f}")


if __name__ == "__main__":
    main()
