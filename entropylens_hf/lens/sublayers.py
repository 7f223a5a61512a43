"""The residual between a decoder layer's attention step and its MLP step (the "mid point").

A sequential residual block computes ``m = h + A(h)`` then ``y = m + M(m)``, where ``A`` is
the attention branch (norm, attention, and any post-norm or multiplier on its output) and
``M`` the MLP branch. ``m`` is the residual stream after attention and before the MLP; the
sub-layer lens reads it. Which module first receives ``m`` differs by family: GPT-2's
``ln_2``, Llama's ``post_attention_layernorm``, Gemma 2/3's ``pre_feedforward_layernorm``
(their ``post_attention_layernorm`` normalises the attention *output*, before the add),
OLMo 2's ``mlp`` itself (its norms only normalise the branch outputs), Bloom's
``post_attention_layernorm`` (its attention adds the residual itself).

Names and module order cannot tell these apart, so the mid point is found from the data flow
of one short probe forward pass: in every decoder layer it is the first tensor handed to a
module such that ``m - h`` is the output of a module called before it (the attention branch)
and ``y - m`` the output of a module called after it (the MLP branch), up to rounding (each
times the config's ``residual_multiplier``, for Granite, which scales both branches). A forward pre-hook on
that module then captures ``m`` during generation. Blocks whose attention and MLP both read
the layer input (GPT-J, GPT-NeoX with ``use_parallel_residual``, Falcon's parallel
attention, Phi, Cohere, CodeGen) have no such tensor: ``y = h + A(h) + M(h)`` never passes
through ``h + A(h)``, and they are refused with an :class:`UnsupportedModelError` saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedModelError

__all__ = ["MidPoint", "first_tensor", "lens_rows", "resolve_mid_points"]


def lens_rows(decoder_layers: int, sublayers: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names and kinds of the lens rows: ``embeddings, layer 1, ...`` (kinds ``emb, layer, ...``),
    or with sub-layers ``embeddings, 1.attn, 1.mlp, 2.attn, ...`` (kinds ``emb, attn, mlp, ...``)."""
    if not sublayers:
        return ("embeddings",) + tuple(f"layer {i}" for i in range(1, decoder_layers + 1)), ("emb",) + ("layer",) * decoder_layers
    names = tuple(f"{i}.{part}" for i in range(1, decoder_layers + 1) for part in ("attn", "mlp"))
    return ("embeddings",) + names, ("emb",) + ("attn", "mlp") * decoder_layers


@dataclass(frozen=True)
class MidPoint:
    """Where layer ``layer``'s mid residual is read: the input of ``module`` (``path`` inside the layer)."""

    layer: int
    path: str
    module: nn.Module


def first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The tensor a module is called on: its first tensor argument, else ``hidden_states=``."""
    for value in args:
        if isinstance(value, torch.Tensor):
            return value
    value = kwargs.get("hidden_states")
    if isinstance(value, torch.Tensor):
        return value
    return next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return [v for v in getattr(value, "__dict__", {}).values() if isinstance(v, torch.Tensor)]


@dataclass
class _LayerProbe:
    """What one layer did in the probe pass, in call order."""

    inputs: list[tuple[int, str, torch.Tensor]]  # (order, module path, tensor it was called on)
    outputs: list[tuple[int, torch.Tensor]]  # (order, a tensor a module returned)
    layer_input: torch.Tensor | None = None
    layer_output: torch.Tensor | None = None
    width: int = -1  # the residual's width, from the layer input


def _probe(model: nn.Module, layers: nn.ModuleList) -> list[_LayerProbe]:
    """Run one forward of four tokens recording every module call inside every decoder layer."""
    probes = [_LayerProbe([], []) for _ in layers]
    counter = [0]
    handles = []

    def tick() -> int:
        counter[0] += 1
        return counter[0]

    for probe, layer in zip(probes, layers):
        def layer_pre(module, args, kwargs, probe=probe):
            hidden = first_tensor(args, kwargs)
            probe.width = int(hidden.shape[-1])
            probe.layer_input = _rows(hidden, probe.width)

        def layer_post(module, args, output, probe=probe):
            probe.layer_output = _rows(_tensors(output)[0], probe.width)

        handles.append(layer.register_forward_pre_hook(layer_pre, with_kwargs=True))
        handles.append(layer.register_forward_hook(layer_post))
        for path, module in layer.named_modules():
            if module is layer:
                continue

            def pre(module, args, kwargs, probe=probe, path=path):
                t = first_tensor(args, kwargs)
                if t is not None:
                    probe.inputs.append((tick(), path, _rows(t, probe.width)))

            def post(module, args, output, probe=probe):
                order = tick()
                probe.outputs.extend((order, _rows(t, probe.width)) for t in _tensors(output))

            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(module.register_forward_hook(post))
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    device = weight.device if weight is not None else next(model.parameters()).device
    vocab = int(weight.shape[0]) if weight is not None else 4
    ids = (torch.arange(4, device=device) % vocab).unsqueeze(0)
    was_training = model.training
    try:
        model.eval()  # dropout would break the equalities the probe checks
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return probes


def _rows(t: torch.Tensor, width: int) -> torch.Tensor:
    """A copy as float32 ``[positions, width]`` (OPT flattens batch and positions inside its layers).

    A copy, because some layers update a module's output in place afterwards (Falcon).
    """
    t = t.detach().to(torch.float32, copy=True)
    return t.reshape(-1, width) if t.dim() >= 2 and t.shape[-1] == width else t


def _explains(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """``b`` is ``a`` up to rounding: within ``tol`` (L2), and closer than half of ``a`` itself."""
    if a.shape != b.shape:
        return False
    error = float(torch.linalg.vector_norm(a - b))
    return error <= tol and error <= 0.5 * float(torch.linalg.vector_norm(a))


def _find_mid(probe: _LayerProbe, eps: float, multiplier: float) -> str | None:
    h, y = probe.layer_input, probe.layer_output
    if h is None or y is None:
        return None
    calls: dict[str, int] = {}
    for _, path, _ in probe.inputs:
        calls[path] = calls.get(path, 0) + 1
    norm = torch.linalg.vector_norm
    for order, path, m in probe.inputs:
        if m.shape != h.shape or calls[path] != 1:
            continue
        # Each residual add rounds every element by at most eps/2 of its size: 4x margin. A step
        # can be far smaller than that bound (bfloat16 residuals with outliers of 2e4), so a match
        # must also explain most of the step itself (_explains).
        tol = 2 * eps * float(norm(h) + norm(m) + norm(y))
        attention, mlp = m - h, y - m
        if not (bool(attention.any()) and bool(mlp.any())):
            continue  # no step at all (e.g. m is the layer input itself)
        before = any(o < order and _explains(attention, multiplier * t, tol) for o, t in probe.outputs)
        if before and any(o > order and _explains(mlp, multiplier * t, tol) for o, t in probe.outputs):
            return path
    return None


def _parallel_reason(probe: _LayerProbe, eps: float) -> str:
    """Why the layer has no mid point, in words, from what the probe saw."""
    h, y = probe.layer_input, probe.layer_output
    if h is not None and y is not None:
        delta = y - h
        tol = 2 * eps * float(torch.linalg.vector_norm(h) + torch.linalg.vector_norm(y))
        outs = [t for _, t in probe.outputs if t.shape == h.shape and float(torch.linalg.vector_norm(t)) > tol]
        if any(_explains(delta, a + b, tol) for i, a in enumerate(outs) for b in outs[i + 1 :]):
            return (
                "its attention and MLP run in parallel off the same input (the layer returns "
                "h + attention(h) + mlp(h)), so the residual stream never holds h + attention(h)"
            )
    return "no tensor inside the layer is its input plus the attention output with only the MLP left to add"


def resolve_mid_points(model: nn.Module, layers: nn.ModuleList) -> list[MidPoint]:
    """The module of every decoder layer whose input is the residual after attention, before the MLP.

    Found from one probe forward pass (four tokens, no cache; see the module docstring).
    Raises :class:`UnsupportedModelError` for blocks without such a residual (parallel
    attention and MLP), naming the layer and the reason.
    """
    weight = next(model.parameters())
    eps = torch.finfo(weight.dtype).eps if weight.is_floating_point() else torch.finfo(torch.float32).eps
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    multiplier = float(getattr(config, "residual_multiplier", None) or 1.0)  # Granite scales both branches
    points = []
    for index, probe in enumerate(_probe(model, layers)):
        path = _find_mid(probe, eps, multiplier)
        if path is None:
            raise UnsupportedModelError(
                f"{type(model).__name__}: no residual between attention and MLP in decoder layer {index} "
                f"({type(layers[index]).__name__}): {_parallel_reason(probe, eps)}; "
                "record it with sublayers=False (whole layers only)"
            )
        points.append(MidPoint(index, path, layers[index].get_submodule(path)))
    return points
