"""Forward hooks that capture the residual stream before and after every decoder layer.

A pre-hook on the first decoder layer sees the embedding output exactly as the stack
receives it (position embeddings added, Gemma's sqrt(d) scaling applied), and a forward
hook on each layer sees its output. Only the latest forward pass is kept, so the cost is
a reference per layer; nothing is copied and the forward pass is never re-run.
Given the model's output embedding (``head``), a hook also keeps the logits the model
computed itself (``head_output``), which the recorder reuses for the last lens layer.
Given each layer's mid point (:mod:`.sublayers`), a pre-hook on it also keeps the residual
after the layer's attention step, between the layer's input and output.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .sublayers import first_tensor

__all__ = ["ResidualCapture"]


def _hidden_of(value: Any) -> torch.Tensor:
    # transformers 5 decoder layers return a tensor; 4.x returned a tuple (hidden, ...).
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    for name in ("hidden_states", "last_hidden_state"):
        hidden = getattr(value, name, None)
        if isinstance(hidden, torch.Tensor):
            return hidden
    raise TypeError(f"cannot find the hidden states in a decoder layer output of type {type(value).__name__}")


class ResidualCapture:
    """Context manager holding, after each forward, ``residuals[l]`` ``[batch, positions, d]``.

    ``l = 0`` is the input of the first decoder layer, ``l = i`` the output of layer ``i``.
    With ``mids`` (one module per layer, whose input is the residual after that layer's
    attention), rows alternate: ``2i - 1`` is layer ``i``'s mid residual, ``2i`` its output.
    ``head_output`` is the output of ``head`` in the same forward (``None`` if it did not run).
    Hooks are removed on exit, also when the body raises.
    """

    def __init__(self, layers: nn.ModuleList, head: nn.Module | None = None, mids: Sequence[nn.Module] | None = None):
        if mids is not None and len(mids) != len(layers):
            raise ValueError(f"{len(mids)} mid points for {len(layers)} layers")
        self.layers = layers
        self.head = head
        self.mids = mids
        self._stride = 1 if mids is None else 2
        self.residuals: list[torch.Tensor | None] = [None] * self.num_rows
        self.head_output: torch.Tensor | None = None
        self.forward_count = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def num_rows(self) -> int:
        """Residuals per forward: the embeddings plus one (or two, with mids) per layer."""
        return self._stride * len(self.layers) + 1

    def __enter__(self) -> "ResidualCapture":
        def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs.get("hidden_states")
            if hidden is None:
                raise TypeError(f"{type(module).__name__}: cannot find hidden_states in the layer's inputs")
            self.residuals = [None] * self.num_rows
            self.residuals[0] = hidden.detach()
            self.head_output = None
            self.forward_count += 1

        def make_hook(index: int):
            def hook(module: nn.Module, args: tuple, output: Any) -> None:
                self.residuals[index] = _hidden_of(output).detach()

            return hook

        self._handles.append(self.layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
        for i, layer in enumerate(self.layers, start=1):
            self._handles.append(layer.register_forward_hook(make_hook(self._stride * i)))
        for i, mid in enumerate(self.mids or (), start=1):

            def mid_hook(module: nn.Module, args: tuple, kwargs: dict, index: int = 2 * i - 1) -> None:
                hidden = first_tensor(args, kwargs)
                # Shaped as the layer input (OPT flattens batch and positions inside its layers).
                self.residuals[index] = hidden.detach().reshape(self.residuals[0].shape[:-1] + hidden.shape[-1:])

            self._handles.append(mid.register_forward_pre_hook(mid_hook, with_kwargs=True))
        if self.head is not None:

            def head_hook(module: nn.Module, args: tuple, output: Any) -> None:
                self.head_output = output.detach() if isinstance(output, torch.Tensor) else None

            self._handles.append(self.head.register_forward_hook(head_hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def complete(self) -> bool:
        """True when the last forward reached every layer."""
        return all(r is not None for r in self.residuals)
