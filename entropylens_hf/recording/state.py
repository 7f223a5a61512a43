"""The state of one ``generate`` call being recorded, shared by the recorder and live recording."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["CallState", "HostBlock"]


@dataclass
class CallState:
    """What one ``generate`` call has accumulated so far; tensors stay on the lens device."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    eos_ids: frozenset[int]
    row_labels: list[dict[str, str]]
    row_keys: list[str]
    run: int
    row_prompt_texts: list[str] | None = None  # as given (e.g. a rendered chat template); else decoded
    step: int = 0
    use_head: bool = False  # the last lens layer comes from the model's own logits
    rows: torch.Tensor | None = None  # arange(batch): the owner of each queued row
    eos: torch.Tensor | None = None
    alive: torch.Tensor | None = None  # [batch] bool: the row has not produced EOS yet
    prompt_rows: list[int] = field(default_factory=list)  # recorded prompt rows per batch row
    step_alive: list[torch.Tensor] = field(default_factory=list)  # per step: which rows were generating
    step_tokens: list[torch.Tensor] = field(default_factory=list)  # per step: the token chosen
    step_entropy: list[torch.Tensor] = field(default_factory=list)  # per step: entropy of the scores
    blocks: list = field(default_factory=list)  # HostBlock (or a PendingBlock in the worker), in order
    pending: torch.Tensor | None = None  # [batch, L or L - 1, d] residuals awaiting their target
    pending_head: torch.Tensor | None = None  # [batch, V] the model's logits for the same position
    # Rows whose target is known, waiting to be resolved together in one block.
    queue: list[tuple[torch.Tensor, ...]] = field(default_factory=list)  # (owners, residuals, targets, alive, head)
    queued: int = 0
    worker_threads: int = 0  # intra-op threads of a background worker for this call (0: none)
    worker: Any = None  # the BlockWorker resolving this call's blocks while generate runs, if any
    max_steps: int = 0  # the most decoding steps this call can take (max_new_tokens)


class HostBlock:
    """Statistics of one resolved block on their way to the host.

    On CUDA the copies go into pinned memory without waiting for the device; ``arrays()``
    waits for them only when the call finishes. Elsewhere the tensors are read as they are.
    """

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self._event = None
        if next(iter(tensors.values())).device.type == "cuda":
            self._host = {
                k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True).copy_(v, non_blocking=True)
                for k, v in tensors.items()
            }
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = {k: v if v.device.type == "cpu" else v.cpu() for k, v in tensors.items()}

    def arrays(self) -> dict[str, np.ndarray]:
        if self._event is not None:
            self._event.synchronize()
        return {k: v.numpy() for k, v in self._host.items()}
