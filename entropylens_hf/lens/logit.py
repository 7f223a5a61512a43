"""The logit lens of any causal LM: decoder layers, final norm, unembedding, logit transform.

Everything is resolved from what the model itself exposes (``get_decoder()``,
``get_output_embeddings()``, the decoder's last norm module, config fields such as
``final_logit_softcapping``), not from a list of architectures, and each piece can be
passed explicitly for a model where that fails. The contract, tested per family:
``lens.project(output of the last decoder layer) == model(...).logits``.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .metrics import LensStatistics, softmax, streaming_lens_statistics
from .products import Product, float32_output, float32_product, low_precision_output, named_product
from .products import plain_product_function
from .sublayers import lens_rows

__all__ = ["LogitLens", "resolve_decoder_layers"]

# Names the final norm goes by in transformers, for models whose decoder has several norms.
_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f", "final_norm", "ln_out")


@dataclass(frozen=True)
class LogitTransform:
    """An elementwise map from head logits to the model's final logits (float32)."""

    name: str
    value: float

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.name == "softcap":
            return torch.tanh(z / self.value) * self.value
        if self.name == "scale":
            return z * self.value
        if self.name == "divide":
            return z / self.value
        raise ValueError(self.name)


def _text_config(model: nn.Module):
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _resolve_logit_transforms(model: nn.Module) -> tuple[LogitTransform, ...]:
    """Config fields by which transformers changes logits after the head, in the order applied."""
    cfg = _text_config(model)
    transforms = []
    scale = getattr(cfg, "logit_scale", None)  # Cohere multiplies
    if isinstance(scale, (int, float)) and scale != 1:
        transforms.append(LogitTransform("scale", float(scale)))
    scaling = getattr(cfg, "logits_scaling", None)  # Granite divides
    if isinstance(scaling, (int, float)) and scaling != 1:
        transforms.append(LogitTransform("divide", float(scaling)))
    cap = getattr(cfg, "final_logit_softcapping", None)  # Gemma 2/3 soft-cap
    if isinstance(cap, (int, float)) and cap > 0:
        transforms.append(LogitTransform("softcap", float(cap)))
    return tuple(transforms)


def _decoder_of(model: nn.Module) -> nn.Module:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None:
        decoder = getattr(model, "base_model", None)
    if decoder is None or decoder is model:
        raise UnsupportedModelError(
            f"{type(model).__name__}: no decoder found (model.get_decoder() returned nothing); "
            "pass layers=..., final_norm=... and unembedding=... to LogitLens.from_model"
        )
    return decoder


def resolve_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of decoder layers: the one whose length is ``num_hidden_layers``."""
    decoder = _decoder_of(model)
    expected = getattr(_text_config(model), "num_hidden_layers", None)
    candidates = [
        (name, module)
        for name, module in decoder.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0
    ]
    matching = [c for c in candidates if expected is None or len(c[1]) == expected]
    if not matching:
        raise UnsupportedModelError(
            f"{type(model).__name__}: no list of {expected} decoder layers found in {type(decoder).__name__}; "
            "pass layers=<the nn.ModuleList of decoder layers> to LogitLens.from_model"
        )
    # The shallowest match is the decoder stack (deeper ones would be e.g. experts).
    return min(matching, key=lambda c: (c[0].count("."), -len(c[1])))[1]


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(module).__name__.lower()


def _resolve_final_norm(model: nn.Module, layers: nn.ModuleList) -> nn.Module:
    decoder = _decoder_of(model)
    children = [(n, m) for n, m in decoder.named_children() if m is not layers and m is not None]
    norms = [(n, m) for n, m in children if _is_norm(m)]
    named = [(n, m) for n, m in norms if n in _FINAL_NORM_NAMES]
    if named:
        return named[-1][1]
    if len(norms) == 1:
        return norms[0][1]
    found = ", ".join(f"{n} ({type(m).__name__})" for n, m in norms) or "none"
    raise UnsupportedModelError(
        f"{type(model).__name__}: cannot tell which module is the final norm of {type(decoder).__name__} "
        f"(norm-like children: {found}); pass final_norm=<module>, e.g. final_norm=model.{_path_hint(model, decoder)}.norm, "
        "or final_norm=torch.nn.Identity() if the model has none"
    )


def _path_hint(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name or "model"
    return "model"


#: Rows per block when the vocabulary is split (see LogitLens.block_shape); chunks stay at
#: least _MIN_CHUNK wide so a tight budget does not turn the pass into many tiny chunks.
_BLOCK_ROWS = 512
_MIN_CHUNK = 2048
#: A block with fewer rows widens its chunks to at most this many logits (2 MiB), not to the
#: whole budget: wide chunks save per-chunk kernels on a decoding step's few rows, but a chunk
#: that outgrows the caches slows both the product writing it and the passes reading it.
#: Measured on a 2-core AMD EPYC (Gemma 3 270M, product and statistics of one block): 144 rows
#: at 8,192 columns 1.2x faster than at 29,127, 288 rows at 8,192 1.2x faster than at 14,563;
#: 19 rows alike from 4,096 to 32,768 here, 1.4x faster at 32,768 than 8,192 on a 2-core Xeon.
_WIDE_CHUNK_LOGITS = 1 << 19


class LogitLens(nn.Module):
    """Maps a residual-stream vector to the logits the model would output if it stopped there.

    Built with :meth:`from_model`. ``project(h)`` gives full float32 logits (for analyses);
    ``statistics(h, ...)`` gives entropy, top-k and target prob/rank without materialising
    more than one vocabulary chunk (for the recorder).
    """

    def __init__(
        self,
        layers: nn.ModuleList,
        final_norm: nn.Module,
        unembedding: nn.Module,
        transforms: Sequence[LogitTransform] = (),
        post_norm: nn.Module | None = None,
    ):
        super().__init__()
        self.layers = layers
        self.final_norm = final_norm
        self.post_norm = post_norm if post_norm is not None else nn.Identity()
        self.unembedding = unembedding
        self.transforms = tuple(transforms)
        self.translator: nn.Module | None = None  # a TunedLens, set by EntropyLens(lens=...)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        layers: nn.ModuleList | None = None,
        final_norm: nn.Module | None = None,
        unembedding: nn.Module | None = None,
    ) -> "LogitLens":
        """Resolve the lens of a transformers causal LM; explicit arguments override resolution."""
        layers = layers if layers is not None else resolve_decoder_layers(model)
        if unembedding is None:
            unembedding = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            if unembedding is None:
                raise UnsupportedModelError(
                    f"{type(model).__name__}: model.get_output_embeddings() returned None; "
                    "pass unembedding=<the module mapping hidden states to logits>"
                )
        if final_norm is None:
            final_norm = _resolve_final_norm(model, layers)
        # OPT models with a projection after the final norm (e.g. opt-350m).
        post_norm = getattr(_decoder_of(model), "project_out", None) if hasattr(model, "get_decoder") else None
        return cls(layers, final_norm, unembedding, _resolve_logit_transforms(model), post_norm)

    # -- sizes and names
    @property
    def num_layers(self) -> int:
        """Lens layers: the embedding output plus one per decoder layer."""
        return len(self.layers) + 1

    @property
    def layer_names(self) -> tuple[str, ...]:
        return lens_rows(len(self.layers), sublayers=False)[0]

    @property
    def vocab_size(self) -> int:
        weight = getattr(self.unembedding, "weight", None)
        if weight is not None:
            return int(weight.shape[0])
        return int(self.unembedding.out_features)

    @property
    def device(self) -> torch.device:
        return next(self.unembedding.parameters()).device

    # -- projection
    def normalize(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm (and any projection after it), on the norm's device and in its dtype."""
        param = next(self.final_norm.parameters(), None)
        if param is not None:
            hidden = hidden.to(device=param.device, dtype=param.dtype)
        return self.post_norm(self.final_norm(hidden))

    def normalize_layers(self, residuals: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """Residuals ``[n, R, d]`` of lens rows ``rows`` (``R`` indices) -> the rows the unembedding reads.

        The one place where a lens row's residual becomes normalised: the logit lens applies
        the final norm to every row alike; a lens with per-layer translators (the tuned lens)
        applies row ``rows[j]``'s translator to ``residuals[:, j]`` before the norm.
        """
        return self.normalize(self.translate(residuals, list(rows)))

    def _transform(self, z: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            z = t(z)
        return z

    @torch.no_grad()
    def translate(self, residuals: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Residuals ``[..., R, d]`` of lens rows ``rows`` (default ``0..R-1``) as this lens reads them before its final norm.

        Why a separate step: a tuned lens maps each row through its own translator, so the
        row index must be known before rows are flattened; the logit lens leaves them as they are.
        """
        return residuals if self.translator is None else self.translator(residuals, rows)

    @torch.no_grad()
    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full float32 logits ``[..., V]`` for residuals ``[..., d]`` (already translated, if at all)."""
        return self.logits(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """:meth:`project` with gradients to ``hidden`` (for training a tuned lens)."""
        normed = self.normalize(hidden).to(self.device)
        return self._transform(self.unembedding(normed).float())

    @torch.no_grad()
    def statistics(
        self,
        hidden: torch.Tensor,
        *,
        top_k: int,
        targets: torch.Tensor | None = None,
        alphas: Sequence[float] = (),
        max_logits: int = 1 << 22,
        workspace: torch.Tensor | None = None,
        dtype: "torch.dtype | str | Product | None" = None,
    ) -> LensStatistics:
        """Lens statistics of residual rows ``[R, d]`` (``targets`` ``[R]``, -1 for none).

        At most ``max_logits`` float32 logits exist at once (16 MiB by default): rows go
        through in blocks of :meth:`block_shape`, each over the vocabulary in chunks.
        ``workspace`` (from :meth:`new_workspace`) holds a chunk's logits and scratch so that
        repeated calls allocate nothing large; without it each chunk allocates its own.
        ``dtype`` is the unembedding product: a dtype, a :class:`~.products.Product` or its name
        (default: the weight's own dtype); the statistics are computed in float32 whatever it is.
        """
        block_rows, chunk = self.block_shape(max_logits)
        parts = [
            self._block_statistics(
                self.normalize(hidden[start : start + block_rows]),
                None if targets is None else targets[start : start + block_rows],
                top_k=top_k,
                alphas=alphas,
                chunk_size=chunk,
                workspace=workspace,
                dtype=dtype,
                budget=block_rows * chunk,
            )
            for start in range(0, hidden.shape[0], block_rows)
        ]
        return _concat_statistics(parts)

    def block_shape(self, max_logits: int) -> tuple[int, int]:
        """``(rows, vocabulary chunk)`` of one block of at most ``max_logits`` logits.

        Why not whole-vocabulary rows: the unembedding is read from memory once per block,
        so a product of few rows is bound by that read. Measured on a 2-core CPU at
        GPT-2-small size, 512 rows x 8,192 columns cost 0.28 ms per row against 0.46 ms
        for 83 whole 50,257-wide rows, with the same 16 MiB of logits.
        """
        vocab = self.vocab_size
        chunk = min(vocab, max_logits, max(_MIN_CHUNK, max_logits // _BLOCK_ROWS))
        return max(1, max_logits // chunk), max(1, chunk)

    def new_workspace(self, max_logits: int) -> torch.Tensor:
        """A float32 buffer for :meth:`statistics`: one chunk of logits plus one scratch chunk.

        Why: allocating and freeing tens of MiB per chunk makes glibc raise its mmap threshold,
        after which the growing KV cache is served from a fragmenting heap (measured: resident
        memory of recorded generation at batch 32 grew by a further 30-100 MiB). A buffer kept
        for a whole recording is allocated once, and the product writes into it directly.
        """
        rows, chunk = self.block_shape(max_logits)
        return _take_workspace(2 * rows * chunk, self.device)

    @staticmethod
    def release_workspace(workspace: torch.Tensor) -> None:
        """Hand a buffer from :meth:`new_workspace` back for the next recording to reuse.

        Why on CPU: a fresh 32 MiB buffer is paid for in page faults as it is first written,
        30-50 ms on a 2-core VM, which a notebook pays again at every ``record()``. One free
        buffer per size and resolving thread is kept, two at most: the recorder's own and its
        background worker's (CUDA's caching allocator already reuses memory).
        """
        if workspace.device.type == "cpu":
            with _WORKSPACE_LOCK:
                free = _FREE_WORKSPACES.setdefault(workspace.numel(), [])
                if all(w is not workspace for w in free):
                    free[:] = [workspace, *free][:_FREE_PER_SIZE]

    def lens_weight(self, product: "torch.dtype | str | Product") -> torch.Tensor:
        """The unembedding weight as product ``product`` reads it (a dtype: the plain product), converted once and cached.

        The cache lives with the weight tensor, not with this lens: every ``EntropyLens`` of the
        same model (one per ``record()`` in a notebook) shares one conversion, which on a
        262k-vocabulary model costs about a second. It follows the weight: an in-place update
        converts it again.
        """
        product = named_product(product)
        weight = self.unembedding.weight
        if weight.dtype == product.dtype and not product.augmented:
            return weight
        return _converted_weight(weight, product)

    def _block_statistics(
        self,
        normed: torch.Tensor,
        targets: torch.Tensor | None,
        *,
        top_k: int,
        alphas: Sequence[float],
        chunk_size: int,
        workspace: torch.Tensor | None = None,
        dtype: "torch.dtype | str | Product | None" = None,
        reference: torch.Tensor | None = None,
        reference_entropy: torch.Tensor | None = None,
        candidates: torch.Tensor | None = None,
        budget: int | None = None,
    ) -> LensStatistics:
        """Statistics of normalised rows ``[R, d]``, the vocabulary in chunks of ``chunk_size``.

        ``candidates`` ``[R, c]`` (token ids, -1 for none) are tokens likely to score high in
        each row: an offset product subtracts the largest of their logits before rounding.
        ``budget`` (the block's ``rows x chunk`` logits) widens the chunks of a block with fewer
        rows, up to ``_WIDE_CHUNK_LOGITS`` logits. Why: each chunk costs the statistics pass some
        twenty kernels whatever its width; a decoding step of one token has only one row per
        layer, and at 19 x 262,144 logits (Gemma 3 270M) 32,768-wide chunks made the pass about
        1.4x faster than 8,192-wide ones on a 2-core Xeon (benchmarks/statistics_pass.py shapes).
        """
        rows = normed.to(self.device)
        n = rows.shape[0]
        if budget and n:
            chunk_size = min(self.vocab_size, max(chunk_size, min(budget, _WIDE_CHUNK_LOGITS) // n))
        if workspace is not None and workspace.numel() < 2 * n * chunk_size:
            raise ValueError(f"workspace of {workspace.numel()} floats is too small for {n} rows x {chunk_size}")
        scratch = None if workspace is None else workspace[n * chunk_size : 2 * n * chunk_size]
        if isinstance(self.unembedding, nn.Linear):
            chunk_logits, target_logits = self._linear_chunks(rows, targets, dtype, workspace, candidates)
        else:
            chunk_logits, target_logits = self._module_chunks(rows, targets)
        return streaming_lens_statistics(
            chunk_logits,
            self.vocab_size,
            top_k=top_k,
            target_ids=targets,
            target_logits=target_logits,
            alphas=alphas,
            chunk_size=chunk_size,
            scratch=scratch,
            reference=reference,
            reference_entropy=reference_entropy,
        )

    def _product(self, dtype: "torch.dtype | str | Product | None") -> Product:
        return named_product(dtype if dtype is not None else self.unembedding.weight.dtype)

    def _linear_chunks(self, rows, targets, dtype, workspace, candidates) -> tuple[Callable, torch.Tensor | None]:
        """Chunk logits of a linear head by ``dtype``'s product, and each target's logit as it computes them."""
        product = self._product(dtype)
        bias = self.unembedding.bias
        weight = self.lens_weight(product)
        rows = rows.to(product.dtype)
        n = rows.shape[0]
        if product.offset:
            ids = candidates if targets is None else _with_targets(candidates, targets.to(rows.device))
            multiply = _OffsetChunks(product, rows, weight, ids)
        else:
            read = product.row_columns(rows, None)[0]
            multiply = lambda start, stop, z: product.multiply(read, weight[start:stop], z, None)  # noqa: E731

        def chunk_logits(start: int, stop: int) -> torch.Tensor:
            z = None if workspace is None else workspace[: n * (stop - start)].view(n, stop - start)
            z = multiply(start, stop, z)
            if bias is not None:
                z.add_(bias[start:stop].float())
            return self._transform(z)

        if targets is None:
            return chunk_logits, None
        # Each target's logit as the product computes it: from the same rounded inputs and, for
        # a plain product that rounds its output, rounded like it, so target prob and rank agree
        # with the chunks (an offset product's output is rounded near zero: float32 is kept).
        safe = targets.to(weight.device).clamp(min=0)
        target_logits = product.round_like(product.exact_logits(rows, weight[safe].unsqueeze(1))[:, 0], rows.device)
        if bias is not None:
            target_logits = target_logits + bias[safe].float()
        return chunk_logits, self._transform(target_logits)

    def _module_chunks(self, rows, targets) -> tuple[Callable, torch.Tensor | None]:
        """A head that is not a plain linear map (quantised, custom): the block materialised once."""
        full = self._transform(self.unembedding(rows).float())

        def chunk_logits(start: int, stop: int) -> torch.Tensor:
            return full[:, start:stop]  # each chunk is read once; overwriting it is fine

        if targets is None:
            return chunk_logits, None
        return chunk_logits, full.gather(-1, targets.to(full.device).clamp(min=0).unsqueeze(-1)).squeeze(-1)

    def _full_logits(self, normed: torch.Tensor, dtype: "torch.dtype | str | Product | None") -> torch.Tensor:
        """Whole-vocabulary float32 logits ``[R, V]`` of normalised rows, by the same kind of product as the chunks.

        An offset product's rows have no candidates yet: a plain product of the same dtype
        finds each row's top token first, whose float32 logit is then the offset (two products,
        for one row per token).
        """
        rows = normed.to(self.device)
        if not isinstance(self.unembedding, nn.Linear):
            return self._transform(self.unembedding(rows).float())
        bias = self.unembedding.bias
        product = self._product(dtype)
        rows, weight = rows.to(product.dtype), self.lens_weight(product)
        read, shift = product.row_columns(rows, None)
        z = product.multiply(read, weight, None, shift)
        if product.offset:
            shift = _offset_reference(product, rows, weight, z.argmax(-1, keepdim=True))
            shifted, shift = product.row_columns(rows, shift)
            z = product.multiply(shifted, weight, z, shift)
        if bias is not None:
            z.add_(bias.float())
        return self._transform(z)

    @torch.no_grad()
    def token_statistics(
        self,
        residuals: torch.Tensor,
        *,
        top_k: int,
        targets: torch.Tensor | None = None,
        head_logits: torch.Tensor | None = None,
        alphas: Sequence[float] = (),
        max_logits: int = 1 << 22,
        workspace: torch.Tensor | None = None,
        dtype: "torch.dtype | str | Product | None" = None,
        kl: bool = True,
    ) -> LensStatistics:
        """Statistics of every lens row of ``n`` tokens, flat ``[n * L]`` (token-major).

        ``residuals`` ``[n, R, d]`` holds lens rows ``0..R-1`` of each token. The last lens row
        is the final distribution: the model's own logits ``head_logits`` ``[n, V]`` (before
        its logit transform) when given (then ``L = R + 1``), else ``residuals[:, -1]``
        (``L = R``). Each token's final row is resolved first; with ``kl`` its distribution
        ``p_final`` is then held while the other rows go through the vocabulary, which yields
        ``kl`` = KL(p_final || p_row) in nats in the same pass (0 for the final row itself).
        Tokens go through in groups whose rows fill one block (:meth:`block_shape`), and
        whose final distributions hold at most ``max_logits`` floats.
        """
        n, width, _ = residuals.shape
        inner = width if head_logits is not None else width - 1
        block_rows, chunk = self.block_shape(max_logits)
        group = max(1, min(block_rows // max(inner, 1), max_logits // self.vocab_size))
        parts = []
        for start in range(0, n, group):
            res = residuals[start : start + group]
            t = None if targets is None else targets[start : start + res.shape[0]].to(self.device)
            head = None if head_logits is None else head_logits[start : start + res.shape[0]]
            final, q = self._final_rows(res, t, head, top_k=top_k, alphas=alphas, dtype=dtype, kl=kl)
            inner_parts = self._inner_rows(
                res[:, :inner], t, final, q, top_k=top_k, alphas=alphas, block_rows=block_rows, chunk=chunk,
                workspace=workspace, dtype=dtype,
            )
            parts.append(_interleave_final(inner_parts, final, res.shape[0], inner))
        return _concat_statistics(parts)

    def _final_rows(self, res, targets, head, *, top_k, alphas, dtype, kl) -> tuple[LensStatistics, torch.Tensor | None]:
        """Statistics of each token's final row (the model's logits ``head`` or the last residual), and its distribution."""
        width = res.shape[1]
        if head is not None:
            final_z = self._transform(head.to(self.device, torch.float32, copy=True))
        else:
            final_z = self._full_logits(self.normalize_layers(res[:, -1:], [width - 1])[:, 0], dtype)
        q = softmax(final_z) if kl else None
        final = _full_statistics(final_z, targets, top_k=top_k, alphas=alphas)  # overwrites final_z
        return replace(final, kl=torch.zeros_like(final.entropy) if kl else final.kl), q

    def _inner_rows(self, res, targets, final, q, *, top_k, alphas, block_rows, chunk, workspace, dtype) -> list:
        """Statistics of lens rows ``res`` ``[g, inner, d]`` in blocks, with KL against ``q`` and the final top-1 as offset candidate."""
        g, inner = res.shape[:2]
        if not inner:
            return []
        normed = self.normalize_layers(res, range(inner)).reshape(g * inner, -1)
        rows_t = None if targets is None else targets.repeat_interleave(inner)
        candidates = final.topk_ids[:, :1].repeat_interleave(inner, 0)
        # A block holds whole tokens (or, for one very deep token, slices of its rows).
        step = g * inner if g * inner <= block_rows else block_rows
        return [
            self._block_statistics(
                normed[a : a + step],
                None if rows_t is None else rows_t[a : a + step],
                top_k=top_k,
                alphas=alphas,
                chunk_size=chunk,
                workspace=workspace,
                dtype=dtype,
                reference=q,
                reference_entropy=None if q is None else final.entropy,
                candidates=candidates[a : a + step],
                budget=block_rows * chunk,
            )
            for a in range(0, g * inner, step)
        ]


def _full_statistics(z: torch.Tensor, targets: torch.Tensor | None, *, top_k: int, alphas: Sequence[float]) -> LensStatistics:
    """Statistics of whole-vocabulary float32 logits ``[R, V]`` in one chunk; overwrites ``z``."""
    target_logits = None if targets is None else z.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return streaming_lens_statistics(
        lambda a, b: z[:, a:b],
        z.shape[-1],
        top_k=top_k,
        target_ids=targets,
        target_logits=target_logits,
        alphas=alphas,
        chunk_size=z.shape[-1],
    )


def _interleave_final(inner: list[LensStatistics], final: LensStatistics, tokens: int, width: int) -> LensStatistics:
    """Rows ``[tokens * width]`` and final rows ``[tokens]`` as ``[tokens * (width + 1)]``, each token's final last."""
    if not inner:
        return final
    rows = _concat_statistics(inner)

    def join(name: str) -> torch.Tensor:
        a, b = getattr(rows, name), getattr(final, name)
        a = a.reshape(tokens, width, *a.shape[1:])
        return torch.cat([a, b.unsqueeze(1)], dim=1).reshape(tokens * (width + 1), *a.shape[2:])

    return LensStatistics(**{name: join(name) for name in LensStatistics.__dataclass_fields__})


def _concat_statistics(parts: list[LensStatistics]) -> LensStatistics:
    if len(parts) == 1:
        return parts[0]
    return LensStatistics(**{name: torch.cat([getattr(p, name) for p in parts]) for name in LensStatistics.__dataclass_fields__})


class _OffsetChunks:
    """An offset product over the vocabulary chunk by chunk, each chunk's offset near its rows' largest logit.

    Why per chunk: the offset must be near a row's largest logit for the rounding to be small
    where the distribution's mass is, and that is known only as the chunks go by. The first
    chunk's offset is the largest float32 logit among the candidates and the top token of a
    plain product of that chunk (one extra product of one chunk per block); each later chunk's
    is the largest logit of the chunks before it.
    """

    def __init__(self, product: Product, rows: torch.Tensor, weight: torch.Tensor, candidates: torch.Tensor | None):
        self.product, self.rows, self.weight, self.candidates = product, rows, weight, candidates
        self.shift: torch.Tensor | None = None

    def __call__(self, start: int, stop: int, out: torch.Tensor | None) -> torch.Tensor:
        product, rows, weight = self.product, self.rows, self.weight[start:stop]
        if self.shift is None or start == 0:
            unshifted = product.row_columns(rows, None)[0]  # offset 0: the same kernel, no second weight copy
            plain = product.multiply(unshifted, weight, out, None).argmax(-1, keepdim=True) + start
            ids = plain if self.candidates is None else torch.cat([self.candidates.to(plain.device), plain], -1)
            self.shift = _offset_reference(product, rows, self.weight, ids)
        shifted, shift = product.row_columns(rows, self.shift)
        z = product.multiply(shifted, weight, out, shift)
        self.shift = torch.maximum(self.shift, z.amax(-1))
        return z


_WEIGHT_CACHE: dict[int, tuple[weakref.ref, dict]] = {}
_FREE_WORKSPACES: dict[int, list[torch.Tensor]] = {}  # CPU buffers by size, free for the next recording
_FREE_PER_SIZE = 2  # a recording's thread and its background worker (recording/background.py)
_WORKSPACE_LOCK = threading.Lock()


def _take_workspace(numel: int, device: torch.device) -> torch.Tensor:
    """A float32 buffer of ``numel``: the one a finished recording released, else a new one."""
    if device.type == "cpu":
        with _WORKSPACE_LOCK:
            free = _FREE_WORKSPACES.get(numel)
            if free:
                return free.pop(0)
    return torch.empty(numel, device=device)


def _converted_weight(weight: torch.Tensor, product: Product) -> torch.Tensor:
    """``product.weight_columns(weight)``, kept while ``weight`` lives and is unchanged."""
    entry = _WEIGHT_CACHE.get(id(weight))
    if entry is None or entry[0]() is not weight:
        entry = (weakref.ref(weight), {})
        _WEIGHT_CACHE[id(weight)] = entry
        weakref.finalize(weight, _WEIGHT_CACHE.pop, id(weight), None)
    conversions = entry[1]
    key = (product.name, weight.data_ptr(), weight._version)
    if key not in conversions:
        conversions.clear()  # keep one conversion per weight: each is as large as the weight
        conversions[key] = product.weight_columns(weight)
    return conversions[key]


def _with_targets(candidates: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    """Candidate ids ``[R, c]`` with each row's target appended."""
    t = targets.unsqueeze(-1)
    return t if candidates is None else torch.cat([candidates.to(t.device), t], -1)


def _offset_reference(product: Product, rows: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    """Per row, the largest float32 logit among candidate ids ``[R, c]`` (-1: none); 0 where a row has none."""
    if ids is None:
        return torch.zeros(rows.shape[0], device=rows.device)
    logits = product.exact_logits(rows, weight[ids.clamp(min=0)])
    logits = logits.masked_fill(ids < 0, -math.inf).amax(-1)
    return torch.where(torch.isfinite(logits), logits, torch.zeros_like(logits))


# The plain products under the names tests and benchmarks have used.
_float32_inputs = float32_product
_float32_output = float32_output
_low_precision_output = low_precision_output
_product_for = plain_product_function
