"""Distribution statistics of logits: pure tensor functions, entropies in nats.

Two flavours of the same maths:

* plain functions (:func:`entropy`, :func:`renyi_entropy`, :func:`target_rank`) on a
  full ``[..., V]`` logits tensor, for analyses and as the reference in tests;
* :func:`streaming_lens_statistics`, which computes all of them in one pass over the
  vocabulary in chunks, so the recorder never holds ``rows x V`` logits beyond one
  chunk. It uses the online-softmax recurrence (running max, rescaled sums).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

__all__ = [
    "entropy",
    "EntropyScratch",
    "softmax",
    "renyi_entropy",
    "target_rank",
    "LensStatistics",
    "exact_topk",
    "streaming_lens_statistics",
]


#: Centred logits are raised to this floor before ``exp``. Why: torch's vectorised CPU ``exp``
#: leaves its fast path for arguments below about -87.3 (where float32 results turn subnormal
#: or zero): 15-40x slower per element on an AVX2 EPYC, and logit-lens rows of early layers
#: put most of the vocabulary there (Gemma 3 270M: 98% of a prompt block's logits lie more than
#: 87 below their row's maximum; ``exp`` of one such 288 x 8,192 chunk took 30 ms, 1.8 ms floored).
#: exp(-87) is 1.6e-38: a whole 262,144-token vocabulary at the floor adds 4e-33 to a sum that
#: is at least 1 (the row's maximum contributes exp(0)), below float32 resolution.
_EXP_FLOOR = -87.0

#: Exponentials are taken in base 2: ``exp(z - m) = exp2((z - m) * log2(e))``. Why: torch's
#: vectorised CPU ``exp2`` costs about half of ``exp`` (2-core AMD EPYC, AVX2: 1.2 against 2.3 ms
#: per 288 x 8,192 chunk), more than the extra scaling pass. ``z - m`` is taken first, exactly for
#: the logits near the maximum, where folding the scaling into it (``m * log2(e)`` rounded) would
#: shift a row's exponents by up to half a float32 step of the maximum. The floor is the same.
_LOG2_E = 1.0 / math.log(2.0)
_LN_2 = math.log(2.0)
_EXP2_FLOOR = _EXP_FLOOR * _LOG2_E


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype == torch.float64 else logits.float()


def entropy(logits: torch.Tensor, scratch: "EntropyScratch | None" = None) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` over the last axis, in float32 (or float64 if given).

    Tokens more than 87 nats below their row's maximum count as probability 0 (each is below
    1.6e-38, beneath float32 resolution next to the maximum's 1). Why not ``log_softmax``: its
    ``exp`` takes the slow path for them (see ``_EXP_FLOOR``); the recorder calls this on every
    step's scores, 262,144 wide on Gemma 3, with a :class:`EntropyScratch` kept across steps.
    """
    e, scaled, total = _exponentials(logits, scratch)
    return total.log() - e.mul_(scaled).sum(-1) * _LN_2 / total


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """``softmax(logits)`` over the last axis in float32 (or float64), tokens 87 nats below the maximum at exactly 0.

    Why not ``torch.softmax``: the slow ``exp`` path, as in :func:`entropy`.
    """
    e, _, total = _exponentials(logits)
    return e.div_(total.unsqueeze(-1))


class EntropyScratch:
    """Buffers that :func:`entropy` reuses for logits of one shape, e.g. every decoding step's scores.

    Why: a fresh 1 MiB tensor per step (Gemma 3's 262,144 scores) is not always served from
    memory the process already holds; in recorded generations on a 2-core AMD EPYC VM, half the
    steps' entropies took 7-20 ms instead of about 1 ms, the time going to new pages. Three
    buffers kept across steps cost 2.25 MiB there and kept every step at 0.8-1.6 ms.
    """

    def __init__(self) -> None:
        self._buffers: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def buffers(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Two float buffers and one bool buffer shaped like ``z`` (allocated again when ``z`` changes)."""
        held = self._buffers
        if held is None or held[0].shape != z.shape or held[0].dtype != z.dtype or held[0].device != z.device:
            held = self._buffers = (torch.empty_like(z), torch.empty_like(z), torch.empty_like(z, dtype=torch.bool))
        return held


def _exponentials(
    logits: torch.Tensor, scratch: EntropyScratch | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``exp(z - max)`` (0 below ``_EXP_FLOOR``), ``(z - max) * log2(e)`` (raised to the floor) and the sum of the former.

    With ``scratch`` the first two live in its buffers (valid until its next use).
    """
    z = _at_least_float32(logits)
    top = z.amax(-1, keepdim=True)
    if scratch is None:
        scaled, e, absent = torch.empty_like(z), None, None
    else:
        scaled, e, absent = scratch.buffers(z)
    torch.sub(z, top, out=scaled).mul_(_LOG2_E)
    absent = torch.lt(scaled, _EXP2_FLOOR, out=absent)  # -inf included; NaN stays NaN
    e = torch.exp2(scaled.clamp_(min=_EXP2_FLOOR), out=e)
    e.masked_fill_(absent, 0.0)
    return e, scaled, e.sum(-1)


def renyi_entropy(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """Rényi entropy of order ``alpha`` (nats) of ``softmax(logits)`` over the last axis.

    ``alpha=0`` is the log of the support size, ``1`` Shannon, ``2`` collision entropy,
    ``inf`` min-entropy ``-log max p``.
    """
    z = _at_least_float32(logits)
    log_p = torch.log_softmax(z, dim=-1)
    if alpha == 1:
        return entropy(z)
    if math.isinf(alpha):
        return -log_p.max(-1).values
    if alpha == 0:
        return torch.isfinite(z).sum(-1).to(z.dtype).log()
    return torch.logsumexp(alpha * log_p, dim=-1) / (1.0 - alpha)


def target_rank(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``target`` (index per row) among ``logits``: how many tokens score strictly higher."""
    z = _at_least_float32(logits)
    chosen = z.gather(-1, target.unsqueeze(-1))
    return (z > chosen).sum(-1)


#: Rows narrower than ``_PREFILTER_RATIO * k * _PREFILTER_SLICES`` use ``torch.topk`` directly.
_PREFILTER_SLICES = 8
_PREFILTER_RATIO = 4


def exact_topk(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``z.topk(k, dim=-1)`` of a 2-D tensor (sorted values, their column indices), exactly.

    Why not ``torch.topk`` alone: on CPU it costs more than the rest of a vocabulary pass
    for rows tens of thousands wide. A vectorised prefilter is 2-3x cheaper: split each row
    into ``S`` strided slices (columns ``j, j + n, j + 2n, ...``), take each slice's maximum,
    keep the ``k`` slices with the largest maxima and run ``topk`` on their ``k * S``
    entries only. No top-k entry is lost: an entry outside those slices is matched or beaten
    by ``k`` slice maxima, i.e. by ``k`` other entries. Values equal ``torch.topk``'s; among
    exactly tied values the chosen indices may differ, as ``torch.topk`` promises no order.
    """
    rows, width = z.shape
    slices = _PREFILTER_SLICES
    n = width // slices  # columns per slice
    if k == 0 or width < _PREFILTER_RATIO * k * slices:
        return z.topk(k, dim=-1)
    slice_max = z[:, : n * slices].view(rows, slices, n).amax(1)  # [rows, n]: max of column j's slice
    picked = slice_max.topk(k, dim=-1).indices  # [rows, k]
    offsets = torch.arange(0, n * slices, n, device=z.device)
    candidates = (picked.unsqueeze(-1) + offsets).flatten(1)  # [rows, k * slices]
    if n * slices < width:  # the last width % slices columns belong to no slice: always candidates
        tail = torch.arange(n * slices, width, device=z.device).expand(rows, -1)
        candidates = torch.cat([candidates, tail], -1)
    values, order = z.gather(-1, candidates).topk(k, dim=-1)
    return values, candidates.gather(-1, order)


@dataclass(frozen=True)
class LensStatistics:
    """What the recorder keeps of one batch of logit rows ``[R, V]``.

    All float tensors are float32 on the device of the computation.
    ``target_prob`` / ``target_rank`` are NaN / -1 where no target was given.
    ``renyi`` has shape ``[R, len(alphas)]``. ``kl`` is KL(reference || row) in nats, NaN
    where no reference distribution was given.
    """

    entropy: torch.Tensor
    topk_ids: torch.Tensor
    topk_probs: torch.Tensor
    target_prob: torch.Tensor
    target_rank: torch.Tensor
    renyi: torch.Tensor
    kl: torch.Tensor


def streaming_lens_statistics(
    chunk_logits: Callable[[int, int], torch.Tensor],
    vocab_size: int,
    *,
    top_k: int,
    target_ids: torch.Tensor | None = None,
    target_logits: torch.Tensor | None = None,
    alphas: Sequence[float] = (),
    chunk_size: int = 16384,
    scratch: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    reference_entropy: torch.Tensor | None = None,
    fused: bool = True,
) -> LensStatistics:
    """Entropy, Rényi entropies, top-k and target prob/rank of ``R`` rows of logits, chunk by chunk.

    ``chunk_logits(start, stop)`` returns the float32 logits ``[R, stop - start]`` of vocabulary
    entries ``start:stop`` as a tensor this function may overwrite; only one chunk (and one
    scratch tensor of its size) is alive at a time. ``target_ids`` ``[R]`` holds the token whose
    probability and rank to report (``-1``: none) and ``target_logits`` ``[R]`` its logit,
    computed by the caller (a gather is far cheaper than scanning for it). ``scratch``, a flat
    float32 tensor of at least ``R * chunk_size`` elements, is used instead of allocating one.

    ``reference`` ``[G, V]`` (probabilities) with ``reference_entropy`` ``[G]`` (its Shannon
    entropy, nats) adds ``kl``, KL(reference || row), for rows in ``G`` consecutive groups of
    ``R / G``, group ``g`` against ``reference[g]``: ``KL = -H(q) - sum_v q_v z_v + log Z``, so
    only ``sum_v q_v z_v`` is gathered per chunk (one batched product over the raw logits).

    ``fused=False`` runs the former kernel-per-statistic recurrence (:class:`_Running`), kept as
    the baseline of ``benchmarks/statistics_pass.py`` and of the equality tests.
    """
    first = chunk_logits(0, min(chunk_size, vocab_size))
    alphas = tuple(float(a) for a in alphas)
    if fused:
        state = _ChunkSums.start(first, vocab_size, chunk_size, alphas, reference, target_ids, target_logits)
        for start in range(0, vocab_size, chunk_size):
            z = first if start == 0 else chunk_logits(start, min(start + chunk_size, vocab_size))
            buffer = torch.empty_like(z) if scratch is None else scratch[: z.numel()].view(z.shape)
            state.add(z, start, min(top_k, vocab_size), buffer, reference)
            del z, buffer
        return state.finish(alphas, reference_entropy)
    state = _Running.start(first.shape[0], first.device, alphas, reference, target_ids, target_logits)
    k = min(top_k, vocab_size)
    for start in range(0, vocab_size, chunk_size):
        stop = min(start + chunk_size, vocab_size)
        z = first if start == 0 else chunk_logits(start, stop)
        # Statistics that need the raw logits come first; then z is overwritten in place,
        # so a chunk costs the logits plus one scratch tensor of the same shape.
        buffer = torch.empty_like(z) if scratch is None else scratch[: z.numel()].view(z.shape)
        chunk_max = state.add_topk(z, start, k)
        if reference is not None:
            state.add_cross(z, reference, start, stop)
        if target_ids is not None:
            state.add_above(z, start, buffer)
        if state.need_support:
            state.support = state.support + torch.isfinite(z).sum(-1)
        state.add_exponentials(z, chunk_max, buffer)
        del z, buffer
    return state.finish(alphas, reference_entropy)


@dataclass
class _Running:
    """The running sums of :func:`streaming_lens_statistics` over the chunks seen so far, one step per method."""

    n_rows: int
    device: torch.device
    finite_alphas: list
    need_support: bool
    running_max: torch.Tensor
    sum_exp: torch.Tensor  # sum exp(z - max)
    sum_exp_shift: torch.Tensor  # sum exp(z - max) * (z - max)
    sum_pow: torch.Tensor  # sum exp(a (z - max)), one column per finite order
    support: torch.Tensor
    best_vals: torch.Tensor
    best_ids: torch.Tensor
    groups: int = 0
    cross: torch.Tensor | None = None  # sum_v q_v z_v
    target_ids: torch.Tensor | None = None
    target_logits: torch.Tensor | None = None
    higher: torch.Tensor | None = None

    @classmethod
    def start(cls, n_rows, device, alphas, reference, target_ids, target_logits) -> "_Running":
        finite = [a for a in alphas if a not in (0.0, 1.0) and not math.isinf(a)]
        state = cls(
            n_rows=n_rows, device=device, finite_alphas=finite, need_support=0.0 in alphas,
            running_max=torch.full((n_rows,), -math.inf, device=device),
            sum_exp=torch.zeros(n_rows, device=device), sum_exp_shift=torch.zeros(n_rows, device=device),
            sum_pow=torch.zeros(n_rows, len(finite), device=device), support=torch.zeros(n_rows, device=device),
            best_vals=torch.full((n_rows, 0), -math.inf, device=device),
            best_ids=torch.zeros((n_rows, 0), dtype=torch.long, device=device),
        )
        if reference is not None:
            state.groups = reference.shape[0]
            if state.groups == 0 or n_rows % state.groups:
                raise ValueError(f"{n_rows} rows do not split into {state.groups} reference groups")
            state.cross = torch.zeros(n_rows, device=device)
        if target_ids is not None:
            state.target_ids = target_ids.to(device)
            state.target_logits = target_logits.to(device).float()
            state.higher = torch.zeros(n_rows, dtype=torch.long, device=device)
        return state

    def add_topk(self, z: torch.Tensor, start: int, k: int) -> torch.Tensor:
        """Merge the chunk's top-k into the running top-k; returns the chunk's row maxima."""
        vals, idx = exact_topk(z, min(k, z.shape[1]))
        both = torch.cat([self.best_vals, vals], -1)
        self.best_vals, order = both.topk(min(k, both.shape[1]), dim=-1)
        self.best_ids = torch.cat([self.best_ids, idx + start], -1).gather(-1, order)
        return vals[:, 0]  # topk is sorted: no separate pass for the maximum

    def add_cross(self, z: torch.Tensor, reference: torch.Tensor, start: int, stop: int) -> None:
        q = reference[:, start:stop].to(device=self.device, dtype=z.dtype).unsqueeze(-1)
        per_group = self.n_rows // self.groups
        self.cross += torch.bmm(z.reshape(self.groups, per_group, stop - start), q).reshape(self.n_rows)

    def add_above(self, z: torch.Tensor, start: int, buffer: torch.Tensor) -> None:
        """Count tokens scoring above the target, never the target itself.

        Its logit from this product may differ by rounding from the one the caller gathered.
        sign(max(z - t, 0)) is 1 exactly where z > t; a float sum of it is exact below 2**24
        and, on CPU, about twice as fast as comparing and counting bools. NaN arises only
        from -inf - -inf (a masked token is not above a masked target).
        """
        width = z.shape[1]
        above = torch.sub(z, self.target_logits.unsqueeze(-1), out=buffer).clamp_(min=0).sign_()
        local = self.target_ids - start
        in_chunk = (local >= 0) & (local < width)
        self_above = above.gather(-1, local.clamp(0, width - 1).unsqueeze(-1)).squeeze(-1)
        self_above = torch.where(in_chunk, self_above.nan_to_num(0.0), torch.zeros_like(self_above))
        self.higher = self.higher + (above.nansum(-1) - self_above).long()

    def add_exponentials(self, z: torch.Tensor, chunk_max: torch.Tensor, buffer: torch.Tensor) -> None:
        """The online-softmax step: rescale the sums to the new maximum, add the chunk's (overwrites ``z``)."""
        new_max = torch.maximum(self.running_max, chunk_max)
        # Rows whose max is still -inf (all masked so far) must not produce NaNs.
        safe_new_max = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        scale = torch.exp(self.running_max - safe_new_max)
        shift = self.running_max - safe_new_max
        self.sum_exp_shift = torch.where(
            self.sum_exp > 0, scale * (self.sum_exp_shift + self.sum_exp * shift), self.sum_exp_shift
        )
        self.sum_exp = self.sum_exp * scale
        for j, a in enumerate(self.finite_alphas):  # scalars, not a tensor: no host-to-device copy per call
            self.sum_pow[:, j] *= torch.exp(a * shift)
        self.running_max = new_max
        centred = z.sub_(safe_new_max.unsqueeze(-1))
        for j, a in enumerate(self.finite_alphas):
            self.sum_pow[:, j] += torch.mul(centred, a, out=buffer).exp_().sum(-1)
        e = torch.exp(centred, out=buffer)
        self.sum_exp = self.sum_exp + e.sum(-1)
        # exp(-inf) * -inf is NaN for masked entries; their true contribution is 0.
        self.sum_exp_shift = self.sum_exp_shift + e.mul_(centred).nansum(-1)

    def finish(self, alphas: tuple, reference_entropy: torch.Tensor | None) -> LensStatistics:
        log_sum = torch.log(self.sum_exp)
        shannon = log_sum - self.sum_exp_shift / self.sum_exp
        log_z = self.running_max + log_sum
        if self.target_ids is not None:
            valid = self.target_ids >= 0
            target_prob = torch.where(valid, torch.exp(self.target_logits - log_z), torch.full_like(log_z, math.nan))
            rank = torch.where(valid, self.higher, torch.full_like(self.higher, -1))
        else:
            target_prob = torch.full_like(log_z, math.nan)
            rank = torch.full((self.n_rows,), -1, dtype=torch.long, device=self.device)
        if self.cross is not None:
            # Mathematically >= 0; float32 rounding may leave a few 1e-7 below.
            h_ref = reference_entropy.to(self.device).float().repeat_interleave(self.n_rows // self.groups)
            kl = (log_z - self.cross - h_ref).clamp_(min=0)
        else:
            kl = torch.full_like(log_z, math.nan)
        return LensStatistics(
            kl=kl,
            entropy=shannon,
            topk_ids=self.best_ids,
            topk_probs=torch.exp(self.best_vals - log_z.unsqueeze(-1)),
            target_prob=target_prob,
            target_rank=rank,
            renyi=self.renyi(alphas, shannon, log_sum),
        )

    def renyi(self, alphas: tuple, shannon: torch.Tensor, log_sum: torch.Tensor) -> torch.Tensor:
        columns = []
        for a in alphas:
            if a == 1.0:
                columns.append(shannon)
            elif a == 0.0:
                columns.append(torch.log(self.support))
            elif math.isinf(a):
                columns.append(log_sum)  # -log max p = log Z - max
            else:
                j = self.finite_alphas.index(a)
                columns.append((torch.log(self.sum_pow[:, j]) - a * log_sum) / (1.0 - a))
        return torch.stack(columns, -1) if columns else torch.zeros(self.n_rows, 0, device=self.device)


@dataclass
class _ChunkSums:
    """Per-chunk sums of :func:`streaming_lens_statistics`, combined once at the end (the fused path).

    Why not the running recurrence of :class:`_Running`: rescaling the running sums to each
    new maximum and merging top-k per chunk costs some twenty small kernels per chunk, which
    on CPU add up to as much as the passes over the chunk itself. Here each chunk is centred
    on its own maximum and only appends a few ``[R]`` (``[R, k]``) results to lists; one
    vectorised step in :meth:`finish` rescales and merges them all. The passes over a chunk
    are fewer too: the rank counts ``z > t`` written as floats into the scratch and summed
    (two kernels instead of four), and ``sum e * (z - m)`` is one dot product (NaN only where
    a row holds -inf logits; those rows fall back to a NaN-ignoring sum).
    """

    alphas: list  # finite orders other than 0, 1
    need_support: bool
    centres: list = field(default_factory=list)  # [R] per chunk: its max, 0 where the chunk is all masked
    live: list = field(default_factory=list)  # [R] per chunk: whether it holds a finite logit
    sums: list = field(default_factory=list)  # sum exp(z - centre)
    shifts: list = field(default_factory=list)  # sum exp(z - centre) * (z - centre)
    powers: list = field(default_factory=list)  # [R, len(alphas)]: sum exp(a (z - centre))
    support: list = field(default_factory=list)
    top_vals: list = field(default_factory=list)
    top_ids: list = field(default_factory=list)
    cross: list = field(default_factory=list)  # sum_v q_v z_v (with a reference)
    above: list = field(default_factory=list)  # how many z > target logit (with targets)
    own: list = field(default_factory=list)  # 1 where the target's own logit counted as above
    groups: int = 0
    k: int = 0
    target_ids: torch.Tensor | None = None
    target_logits: torch.Tensor | None = None
    target_index: torch.Tensor | None = None  # [R, chunks]: the target's column in each chunk (clamped)
    target_in: torch.Tensor | None = None  # [R, chunks]: whether the target lies in that chunk

    @classmethod
    def start(cls, first, vocab_size, chunk_size, alphas, reference, target_ids, target_logits) -> "_ChunkSums":
        finite = [a for a in alphas if a not in (0.0, 1.0) and not math.isinf(a)]
        state = cls(alphas=finite, need_support=0.0 in alphas)
        n_rows, device = first.shape[0], first.device
        if reference is not None:
            state.groups = reference.shape[0]
            if state.groups == 0 or n_rows % state.groups:
                raise ValueError(f"{n_rows} rows do not split into {state.groups} reference groups")
        if target_ids is not None:
            state.target_ids = target_ids.to(device)
            state.target_logits = target_logits.to(device).float()
            starts = torch.arange(0, vocab_size, chunk_size, device=device)
            widths = (vocab_size - starts).clamp(max=chunk_size)
            local = state.target_ids.unsqueeze(-1) - starts
            state.target_in = (local >= 0) & (local < widths)
            state.target_index = torch.minimum(local.clamp(min=0), widths - 1)
        return state

    def add(self, z: torch.Tensor, start: int, k: int, buffer: torch.Tensor, reference: torch.Tensor | None) -> None:
        """One chunk's statistics; overwrites ``z`` and ``buffer``."""
        self.k = k
        vals, idx = exact_topk(z, min(k, z.shape[1]))
        self.top_vals.append(vals)
        self.top_ids.append(idx + start)
        chunk_max = vals[:, 0] if vals.shape[1] else z.amax(-1)  # topk is sorted: no pass for the maximum
        if reference is not None:
            # [G, 1, C] @ [G, C, R/G]: the reference as the left operand. Why: MKL's batched
            # product with a one-column right operand ([G, R/G, C] @ [G, C, 1]) ran at a
            # fraction of memory speed, 3.1 ms against 0.4 ms for 17 x 30 x 8,224 on 2 cores.
            q = reference[:, start : start + z.shape[1]].to(device=z.device, dtype=z.dtype).unsqueeze(1)
            self.cross.append(torch.bmm(q, z.reshape(self.groups, -1, z.shape[1]).transpose(1, 2)).reshape(-1))
        if self.target_ids is not None:
            # A float 0/1 per token, summed exactly below 2**24; no NaN (NaN > t is False).
            above = torch.gt(z, self.target_logits.unsqueeze(-1), out=buffer)
            self.above.append(above.sum(-1))
            column = self.target_index[:, len(self.above) - 1 : len(self.above)]
            self.own.append(above.gather(-1, column).squeeze(-1))
        if self.need_support:
            self.support.append(torch.isfinite(z).sum(-1))
        centre = chunk_max.nan_to_num(neginf=0.0)  # an all-masked chunk: its sums are discarded in finish
        self.centres.append(centre)
        self.live.append(torch.isfinite(chunk_max))
        self._add_exponentials(z, centre, buffer)

    def _add_exponentials(self, z: torch.Tensor, centre: torch.Tensor, buffer: torch.Tensor) -> None:
        """Sums of ``exp(z - centre)`` (and its products, powers) per row, in base 2 (see ``_LOG2_E``); overwrites ``z``."""
        y = z.sub_(centre.unsqueeze(-1)).mul_(_LOG2_E)
        # Each exponent is raised to the floor first (see _EXP_FLOOR): the powers' after scaling,
        # since a small order a makes exp(a * floor) far from negligible.
        if self.alphas:
            self.powers.append(torch.stack(
                [torch.mul(y, a, out=buffer).clamp_(min=_EXP2_FLOOR).exp2_().sum(-1) for a in self.alphas], -1
            ))
        e = torch.exp2(y.clamp_(min=_EXP2_FLOOR), out=buffer)
        self.sums.append(e.sum(-1))
        # e * (z - m) in place: ``linalg.vecdot`` allocates a chunk-sized temporary per call,
        # which on CPU was served by fresh pages each time (16 ms per 510 x 8,224 chunk, 8x
        # the in-place pass). Masked entries sit at the floor (no NaN from exp(-inf) * -inf);
        # NaN arises only from NaN logits, whose contribution is ignored as before. The check
        # costs a host sync, cheap on CPU; elsewhere the NaN-ignoring sum runs unconditionally.
        product = e.mul_(y)
        dot = product.sum(-1)
        if e.device.type != "cpu" or bool(torch.isnan(dot).any()):
            dot = torch.where(torch.isnan(dot), product.nansum(-1), dot)
        self.shifts.append(dot * _LN_2)

    def finish(self, alphas: tuple, reference_entropy: torch.Tensor | None) -> LensStatistics:
        """Rescale every chunk's sums to the rows' overall maximum and merge the chunk top-k."""
        sums, centres = torch.stack(self.sums, -1), torch.stack(self.centres, -1)  # [R, chunks]
        live = torch.stack(self.live, -1)  # not sums > 0: a masked chunk's floor leaves tiny sums
        top = torch.where(live, centres, torch.full_like(centres, -math.inf)).amax(-1)
        top = top.nan_to_num(neginf=0.0)
        offset = torch.where(live, centres - top.unsqueeze(-1), torch.zeros_like(centres))  # <= 0
        scale = torch.where(live, torch.exp(offset), torch.zeros_like(offset))
        sum_exp = (scale * sums).sum(-1)
        sum_shift = (scale * (torch.stack(self.shifts, -1) + sums * offset)).sum(-1)
        log_sum = torch.log(sum_exp)
        shannon = log_sum - sum_shift / sum_exp
        log_z = top + log_sum
        vals, order = torch.cat(self.top_vals, -1).topk(self.k, dim=-1)  # k <= vocabulary <= all candidates
        ids = torch.cat(self.top_ids, -1).gather(-1, order)
        target_prob, rank = self._target(log_z)
        if self.cross:
            h_ref = reference_entropy.to(log_z.device).float().repeat_interleave(log_z.shape[0] // self.groups)
            kl = (log_z - torch.stack(self.cross, -1).sum(-1) - h_ref).clamp_(min=0)  # >= 0 up to rounding
        else:
            kl = torch.full_like(log_z, math.nan)
        renyi = self._renyi(alphas, shannon, log_sum, live, offset)
        return LensStatistics(entropy=shannon, topk_ids=ids, topk_probs=torch.exp(vals - log_z.unsqueeze(-1)),
                              target_prob=target_prob, target_rank=rank, renyi=renyi, kl=kl)

    def _target(self, log_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.target_ids is None:
            return torch.full_like(log_z, math.nan), torch.full(log_z.shape, -1, dtype=torch.long, device=log_z.device)
        valid = self.target_ids >= 0
        own = (torch.stack(self.own, -1) * self.target_in).sum(-1)
        higher = (torch.stack(self.above, -1).sum(-1) - own).long()
        target_prob = torch.where(valid, torch.exp(self.target_logits - log_z), torch.full_like(log_z, math.nan))
        return target_prob, torch.where(valid, higher, torch.full_like(higher, -1))

    def _renyi(self, alphas, shannon, log_sum, live, offset) -> torch.Tensor:
        columns = []
        for a in alphas:
            if a == 1.0:
                columns.append(shannon)
            elif a == 0.0:
                columns.append(torch.log(torch.stack(self.support, -1).sum(-1).float()))
            elif math.isinf(a):
                columns.append(log_sum)  # -log max p = log Z - max
            else:
                j = self.alphas.index(a)
                power = torch.stack([p[:, j] for p in self.powers], -1)
                power = torch.where(live, power * torch.exp(a * offset), torch.zeros_like(power)).sum(-1)
                columns.append((torch.log(power) - a * log_sum) / (1.0 - a))
        return torch.stack(columns, -1) if columns else torch.zeros(shannon.shape[0], 0, device=shannon.device)
