"""Formulations of the lens product ``rows @ unembedding.T`` and the choice of the fastest accurate one.

Why several: the product is most of a recording's cost on large vocabularies, and what is fast
differs by hardware. On a CPU with AMX or AVX512-BF16 a bfloat16 product is 6-7x faster than
float32 (``benchmarks/products.py``), but CPU builds of torch round its *output* to bfloat16,
whose spacing near a logit of 100 is 0.5. The ``offset`` formulation appends two input columns
carrying ``-reference`` (a per-row float32 logit split into two bfloat16 parts) against two
columns of ones in the weight, so the product returns ``logits - reference``, near zero for the
tokens that matter, before it is rounded; the reference is added back in float32. Its error is
then the input rounding's, as with a float32-output product, at the cost of one bfloat16 product.

The choice table (``lens_dtype="auto"``), measured in docs/performance.md:

=========================================  ===========================
device                                     product
=========================================  ===========================
weight not float32 (model loaded in bf16)  the weight's dtype
CUDA with a float32-output bf16 matmul     ``bfloat16-split+offset``
CPU with ``amx_bf16`` or ``avx512_bf16``   ``bfloat16-split+offset``
any other CPU (AVX2 only), MPS, ...        ``float32``
=========================================  ===========================

(``bfloat16+offset`` alone misses the bound on Gemma 3: the weight's rounding is 0.0055 nats.)
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

__all__ = [
    "Product",
    "PRODUCT_NAMES",
    "auto_product",
    "cpu_flags",
    "float32_output",
    "float32_product",
    "low_precision_output",
    "named_product",
    "onednn_linear",
    "plain_product_function",
]

#: The CPU flags that make a bfloat16 product fast (oneDNN's AMX and AVX512-BF16 kernels).
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


#: Rows for which a float32 CPU product is computed as ``weight @ rows.T`` in pieces (see
#: :func:`float32_product`), and the logits of one piece (1 MiB: its transpose is read from cache).
TRANSPOSED_ROWS = range(16, 385)
_PIECE_LOGITS = 1 << 18
_PIECES = threading.local()


def float32_product(rows: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """float32 ``rows @ weight.T``, written into ``out`` when given.

    On a CPU without AVX-512, through oneDNN's linear (:func:`onednn_linear`) where this torch
    build has it, else (MKL) in transposed pieces for 16 to 384 rows; elsewhere ``mm``. Why:
    on a 2-core AMD EPYC (AVX2) oneDNN's kernel, reading the weight in its stored layout, ran
    0.63x MKL's time for 18-31 rows and 0.84-0.91x for 144-510 (Gemma 3 and SmolLM2 shapes, in
    vocabulary chunks, side by side). MKL's AVX2 kernels in turn run ``weight @ rows.T`` (the
    vocabulary as the long side) 1.1-1.5x faster than ``rows @ weight.T`` for 16 to a few
    hundred rows; each piece of about a thousand vocabulary rows is multiplied into a
    cache-sized buffer and transposed into ``out`` from there, so the transpose costs little.
    AVX-512 CPUs keep ``mm``: neither alternative was measured there.
    """
    n = rows.shape[0]
    if rows.device.type != "cpu" or "avx512f" in cpu_flags():
        return torch.mm(rows, weight.t(), out=out)
    z = onednn_linear(rows, weight)
    if z is not None:
        return z if out is None else out.copy_(z)  # oneDNN allocates its result: copied (0.1 ms a MiB)
    if out is None or n not in TRANSPOSED_ROWS:
        return torch.mm(rows, weight.t(), out=out)
    piece = _PIECE_LOGITS // n
    buffer = getattr(_PIECES, "buffer", None)
    if buffer is None:  # one per thread, kept: no page faults per chunk
        buffer = _PIECES.buffer = torch.empty(_PIECE_LOGITS)
    for start in range(0, weight.shape[0], piece):
        stop = min(start + piece, weight.shape[0])
        part = buffer[: (stop - start) * n].view(stop - start, n)
        torch.mm(weight[start:stop], rows.t(), out=part)
        out[:, start:stop].copy_(part.t())
    return out


def onednn_linear(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """float32 ``rows @ weight.T`` by oneDNN's linear kernel (CPU), or None where it is not available.

    ``torch.ops.mkldnn._linear_pointwise`` is the kernel torch's own compiler calls for linear
    layers on CPU; it is an internal op, so its presence and its result are checked once
    (:func:`_onednn_linear_op`), and ``torch.backends.mkldnn.enabled = False`` turns it off.
    """
    op = _onednn_linear_op()
    if op is None or not torch.backends.mkldnn.enabled or rows.dtype != torch.float32 or weight.dtype != torch.float32:
        return None
    return op(rows.contiguous(), weight.contiguous(), None, "none", [], "")


@functools.lru_cache(maxsize=1)
def _onednn_linear_op() -> Callable | None:
    """The oneDNN linear op if this torch build has it and it multiplies a probe correctly."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        generator = torch.Generator().manual_seed(0)
        x, w = torch.randn(3, 40, generator=generator), torch.randn(7, 40, generator=generator)
        y = op(x, w, None, "none", [], "")
        if y.shape == (3, 7) and torch.allclose(y, x @ w.t(), rtol=1e-5, atol=1e-5):
            return op
    except (AttributeError, RuntimeError, TypeError, NotImplementedError):
        pass
    return None


def float32_output(rows: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """Low-precision inputs, float32 accumulation and output (cuBLAS ``out_dtype``)."""
    if out is None:
        return torch.mm(rows, weight.t(), out_dtype=torch.float32)
    return torch.mm(rows, weight.t(), out_dtype=torch.float32, out=out)


def low_precision_output(rows: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """Low-precision inputs and output (what CPU builds offer), widened to float32.

    ``F.linear`` with the weight in its stored ``[vocabulary, width]`` layout: the call through
    which oneDNN's AMX kernels are reached (``mm`` of a transposed weight is slower on some builds).
    """
    z = F.linear(rows, weight)
    return z.float() if out is None else out.copy_(z)


_OUT_DTYPE_SUPPORT: dict[tuple[str, torch.dtype], bool] = {}


def has_float32_output(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch.mm(..., out_dtype=torch.float32)`` works for ``dtype`` inputs on ``device``."""
    key = (device.type, dtype)
    if key not in _OUT_DTYPE_SUPPORT:
        try:  # torch >= 2.8 offers it on CUDA; CPU builds (2.13 included) do not
            probe = torch.ones(2, 2, device=device, dtype=dtype)
            _OUT_DTYPE_SUPPORT[key] = torch.mm(probe, probe, out_dtype=torch.float32).dtype == torch.float32
        except (RuntimeError, TypeError, NotImplementedError):
            _OUT_DTYPE_SUPPORT[key] = False
    return _OUT_DTYPE_SUPPORT[key]


def plain_product_function(device: torch.device, dtype: torch.dtype) -> Callable:
    """The most accurate plain product the backend offers for ``dtype`` inputs with a float32 result."""
    if dtype == torch.float32:
        return float32_product
    return float32_output if has_float32_output(device, dtype) else low_precision_output


@dataclass(frozen=True)
class Product:
    """One formulation of the lens product: input dtype, a per-row offset, the weight in two parts.

    ``name`` is what a run's settings store (``lens_product``). With ``split`` the weight is
    carried as high and low ``dtype`` parts side by side (rows repeated against them), which
    removes the weight's rounding at twice the product's cost; with ``offset`` rows carry
    ``-reference`` in two extra columns against two columns of ones.
    """

    name: str
    dtype: torch.dtype
    offset: bool = False
    split: bool = False

    @property
    def augmented(self) -> bool:
        return self.offset or self.split

    def function(self, device: torch.device) -> Callable:
        return plain_product_function(device, self.dtype)

    def rounds_output(self, device: torch.device) -> bool:
        """Whether the product's float32 result is a low-precision value widened (CPU bf16/fp16)."""
        return self.augmented or self.function(device) is low_precision_output

    def weight_columns(self, weight: torch.Tensor) -> torch.Tensor:
        """The unembedding weight ``[V, d]`` as this product reads it: ``[V, d]``, or with its extra columns."""
        high = weight.detach().to(self.dtype)
        parts = [high]
        if self.split:
            parts.append((weight.detach().float() - high.float()).to(self.dtype))
        if self.offset:
            parts.append(high.new_ones(high.shape[0], 2))
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    def row_columns(self, rows: torch.Tensor, reference: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows ``[n, d]`` (in ``dtype``) as this product reads them, and the offset they carry exactly.

        The offset is ``-reference`` split into high and low parts; it is returned as
        ``high + low`` (within float32 rounding of ``reference``), the value to add back.
        """
        parts = [rows, rows] if self.split else [rows]
        exact = None
        if self.offset:
            reference = torch.zeros(rows.shape[0], device=rows.device) if reference is None else reference
            high = reference.to(self.dtype)
            low = (reference - high.float()).to(self.dtype)
            exact = high.float() + low.float()
            parts += [-high.unsqueeze(-1), -low.unsqueeze(-1)]
        return (parts[0] if len(parts) == 1 else torch.cat(parts, -1)), exact

    def exact_logits(self, rows: torch.Tensor, weight_rows: torch.Tensor) -> torch.Tensor:
        """float32 logits of ``rows`` ``[n, d]`` against ``weight_rows`` ``[n, c, D]`` (from :meth:`weight_columns`).

        Exact in float32 for the inputs the product reads, before its output is rounded.
        """
        width = rows.shape[1]
        w = weight_rows[..., :width].float()
        if self.split:
            w = w + weight_rows[..., width : 2 * width].float()
        return torch.einsum("nd,ncd->nc", rows.float(), w)

    def multiply(
        self, rows: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None, reference: torch.Tensor | None
    ) -> torch.Tensor:
        """float32 logits of ``rows`` against ``weight`` rows, both as :meth:`row_columns` / :meth:`weight_columns` give."""
        if not self.augmented:
            return self.function(rows.device)(rows, weight, out)
        z = F.linear(rows, weight)  # the weight's stored layout: oneDNN's AMX path on CPU
        z = z.float() if out is None else out.copy_(z)  # widen, then add: a mixed-dtype add is 6x slower
        return z if reference is None else z.add_(reference.unsqueeze(-1))

    def round_like(self, logits: torch.Tensor, device: torch.device) -> torch.Tensor:
        """float32 ``logits`` of the rounded inputs, rounded as a plain product rounds its output."""
        if not self.augmented and self.rounds_output(device):
            return logits.to(self.dtype).float()
        return logits


PRODUCTS = {
    "float32": Product("float32", torch.float32),
    "bfloat16": Product("bfloat16", torch.bfloat16),
    "float16": Product("float16", torch.float16),
    "bfloat16+offset": Product("bfloat16+offset", torch.bfloat16, offset=True),
    "bfloat16-split+offset": Product("bfloat16-split+offset", torch.bfloat16, offset=True, split=True),
}
PRODUCT_NAMES = tuple(PRODUCTS)


def named_product(value: "str | torch.dtype | Product") -> Product:
    """A :class:`Product` from its name, its dtype (the plain product) or itself."""
    if isinstance(value, Product):
        return value
    if isinstance(value, torch.dtype):
        name = str(value).removeprefix("torch.")
        return PRODUCTS.get(name) or Product(name, value)  # e.g. a float64 model's own product
    if value not in PRODUCTS:
        raise ValueError(f"lens product must be one of {', '.join(PRODUCT_NAMES)}, got {value!r}")
    return PRODUCTS[value]


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def auto_product(
    device: torch.device | str,
    weight_dtype: torch.dtype = torch.float32,
    *,
    flags: Iterable[str] | None = None,
    cuda_float32_output: bool | None = None,
) -> Product:
    """The fastest product meeting the accuracy bound on ``device`` (the table in this module's docstring).

    ``flags`` (CPU flags) and ``cuda_float32_output`` default to what this machine has; tests inject them.
    """
    device = torch.device(device)
    if weight_dtype != torch.float32:
        return named_product(weight_dtype) if weight_dtype in (torch.bfloat16, torch.float16) else PRODUCTS["float32"]
    if device.type == "cuda":
        if cuda_float32_output is None:
            cuda_float32_output = has_float32_output(device, torch.bfloat16)
        return PRODUCTS["bfloat16-split+offset"] if cuda_float32_output else PRODUCTS["float32"]
    if device.type == "cpu":
        flags = cpu_flags() if flags is None else frozenset(flags)
        if flags & BF16_CPU_FLAGS:
            return PRODUCTS["bfloat16-split+offset"]
    return PRODUCTS["float32"]
