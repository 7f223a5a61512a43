"""What a ``generate`` call was asked to do, read the way ``generate`` reads it.

An explicit keyword argument wins, then the call's ``generation_config``, then the model's.
The recorder refuses the modes it cannot record, stores the settings of each run, and live
recording sizes each sequence's room from them.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UnsupportedGenerationError

__all__ = ["setting", "refuse_unsupported_modes", "eos_ids", "generation_settings", "max_new_tokens"]


def setting(model: Any, kwargs: dict, name: str, default: Any) -> Any:
    """The effective generation setting: explicit kwarg, then generation_config, then the model's."""
    if name in kwargs:
        return kwargs[name]
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    value = getattr(config, name, None)
    return default if value is None else value


def refuse_unsupported_modes(model: Any, kwargs: dict) -> None:
    """Raise :class:`UnsupportedGenerationError` for decoding modes with no single residual per token."""

    def refuse(what: str) -> None:
        raise UnsupportedGenerationError(
            f"{what} is not supported by the entropy-lens recorder (it keeps or verifies several "
            "candidate continuations per step, so there is no single residual per generated token); "
            "use greedy decoding or sampling"
        )

    if int(setting(model, kwargs, "num_beams", 1) or 1) > 1:
        refuse("beam search (num_beams > 1)")
    if int(setting(model, kwargs, "num_beam_groups", 1) or 1) > 1:
        refuse("group beam search")
    for name in ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit"):
        if setting(model, kwargs, name, None) is not None:
            refuse(f"assisted decoding ({name})")
    if setting(model, kwargs, "penalty_alpha", None) not in (None, 0):
        refuse("contrastive search (penalty_alpha)")
    if setting(model, kwargs, "dola_layers", None) is not None:
        refuse("DoLa decoding (dola_layers)")
    if setting(model, kwargs, "prefill_chunk_size", None) is not None:
        refuse("chunked prefill (prefill_chunk_size)")
    if kwargs.get("custom_generate") is not None:
        refuse("a custom generation loop (custom_generate)")


def eos_ids(model: Any, kwargs: dict) -> frozenset[int]:
    """The token ids that end a sequence in this call (none when ``eos_token_id`` is unset)."""
    eos = setting(model, kwargs, "eos_token_id", None)
    if eos is None:
        return frozenset()
    if isinstance(eos, torch.Tensor):
        eos = eos.tolist()
    return frozenset([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])


def generation_settings(model: Any, kwargs: dict, batch: int) -> dict[str, Any]:
    """JSON-able summary of one generate call, stored per run in the trace."""
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    settings: dict[str, Any] = dict(config.to_diff_dict()) if hasattr(config, "to_diff_dict") else {}
    for name, value in kwargs.items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            settings[name] = value
    settings["batch_size"] = batch
    settings.pop("transformers_version", None)
    return settings


def max_new_tokens(model: Any, kwargs: dict, width: int) -> int:
    """The most tokens this ``generate`` call can add to each sequence (the room a live sequence gets)."""
    new = setting(model, kwargs, "max_new_tokens", None)
    if new is None:
        new = int(setting(model, kwargs, "max_length", 20)) - width
    return max(1, int(new))
