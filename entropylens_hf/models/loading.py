"""Load a causal LM and its tokenizer by name, path, or ``default`` (the bundled model).

One place that turns transformers' loading failures into errors that say what to do, shared
by every CLI command that takes a MODEL argument. MODEL is ``default``, a fetched named model
(``smollm2``, ``gemma3-270m``, ... see :mod:`.registry`), a GGUF file or a folder holding one, a local
folder, or a hub id.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from ..errors import EntropyLensError

__all__ = ["context_length", "gguf_file", "load_model", "resolve_device", "resolve_dtype"]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when present, then MPS, then CPU."""
    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EntropyLensError(f"--device {device}: no CUDA device is visible to torch; use --device cpu")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: bfloat16 on CUDA when supported, float32 elsewhere."""
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise EntropyLensError(f"--dtype {dtype}: choose one of auto, {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


def load_model(name: str, *, device: str = "auto", dtype: str = "auto", device_map: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode; ``name`` is ``default``, a fetched named model
    (``smollm2``), a ``.gguf`` file or a folder holding one, a local folder, or a hub id.

    With ``device_map`` (e.g. ``auto``, needs ``accelerate``) the model is spread over the
    available devices and ``device`` is ignored. GGUF weights are dequantised on every load
    (tens of seconds for 100 M parameters); named models are cached already converted.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .registry import REGISTRY, fetched_model_path

    if name == "default":
        from .bundled import default_model_path

        name = str(default_model_path())
    elif name in REGISTRY:
        name = str(fetched_model_path(name))
    gguf = gguf_file(name)
    target = resolve_device(device) if device_map is None else "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = resolve_dtype(dtype, target)
    source, extra = (str(gguf.parent), {"gguf_file": gguf.name}) if gguf is not None else (name, {})
    offline = _check_source(name) if gguf is None else False
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline, **extra)
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": offline, **extra}
        if device_map is not None:
            kwargs["device_map"] = device_map
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise EntropyLensError(f"{name}: not a causal language model (AutoModelForCausalLM cannot load it)") from None
        if gguf is not None:
            raise EntropyLensError(f"{gguf}: transformers cannot load this {_gguf_architecture(gguf)!r} GGUF model "
                                   f"({str(exc).splitlines()[0]})") from None
        raise EntropyLensError(f"{name}: cannot load the model ({str(exc).splitlines()[0]})") from None
    except (OSError, ImportError) as exc:
        if offline:
            raise EntropyLensError(
                f"{name}: not a local folder, not in the local Hugging Face cache, and the hub cannot be reached "
                "from this machine (no network); download it where there is network, or give a local folder"
            ) from None
        raise EntropyLensError(
            f"{name}: cannot load the model ({str(exc).splitlines()[0]}); give a local folder with config.json, "
            "weights and tokenizer files, a hub id reachable from this machine, or 'default' for the bundled model"
        ) from None
    if device_map is None:
        model = model.to(target)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def context_length(model: Any) -> int | None:
    """The positions the model can attend to (``max_position_embeddings`` or its other names), if its config says."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return next((getattr(config, name) for name in ("max_position_embeddings", "n_positions", "max_sequence_length")
                 if isinstance(getattr(config, name, None), int)), None)


def gguf_file(name: str) -> Path | None:
    """The GGUF file that ``name`` designates (a ``.gguf`` file, or a folder with no config.json holding
    exactly one), checked to be a GGUF whose architecture transformers supports; ``None`` otherwise."""
    path = Path(name)
    if path.is_dir() and not (path / "config.json").is_file():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise EntropyLensError(f"{path}: holds {len(found)} GGUF files ({', '.join(f.name for f in found)}); "
                                   "give the path of the one to load")
        path = found[0] if found else path
    if path.suffix.lower() != ".gguf" or not path.is_file():
        return None
    architecture = _gguf_architecture(path)
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise EntropyLensError(f"{path}: a GGUF of architecture {architecture!r}, which transformers cannot load "
                               f"(it reads {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})")
    return path


def _gguf_architecture(path: Path) -> str:
    """``general.architecture`` from the file's header; one-line errors for a missing extra or a foreign file."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise EntropyLensError(f"{path}: reading GGUF files needs the gguf package: "
                               "pip install 'entropylens-hf[gguf]'") from None
    try:
        field = GGUFReader(path).fields["general.architecture"]
        return field.contents()
    except KeyError:
        raise EntropyLensError(f"{path}: a GGUF file without general.architecture; cannot tell which model it holds") from None
    except (ValueError, OSError) as exc:
        raise EntropyLensError(f"{path}: not a readable GGUF file ({str(exc).splitlines()[0]})") from None


def _check_source(name: str) -> bool:
    """Say early what ``name`` cannot be; returns True when a hub id must be loaded offline.

    A folder needs a ``config.json`` (transformers' own error for one without it names the
    tokenizer backend instead). A hub id without a reachable hub would otherwise retry for
    about a minute before failing, so the hub is probed once (3 s) and, when it does not
    answer, the model is loaded from the local cache only.
    """
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise EntropyLensError(
                f"{name}: cannot load the model (a folder without config.json, so not a Hugging Face model "
                "folder); give the folder that save_pretrained() wrote (config.json, weights, tokenizer files)"
            )
        return False
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
        raise EntropyLensError(
            f"{name}: cannot load the model (no such folder); give a local folder with config.json, weights and "
            "tokenizer files, a hub id such as org/name, or 'default' for the bundled model"
        )
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return True
    return not _hub_reachable()


def _hub_reachable(timeout: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True
