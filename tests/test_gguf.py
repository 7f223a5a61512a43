"""GGUF files as a MODEL: a .gguf path or a folder holding one, and one-line errors for what cannot load."""

import shutil
import sys

import pytest
import torch
from gguf_writer import write_llama_gguf
from transformers import AutoModelForCausalLM, AutoTokenizer

from entropylens_hf import EntropyLensError, Trace
from entropylens_hf.cli import main
from entropylens_hf.loading import load_model


def _gguf(folder):
    return next(folder.glob("*.gguf"))


def test_a_gguf_file_loads_with_the_same_weights_and_tokenizer_as_its_source(tiny_model_dir, tiny_gguf_dir):
    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    source_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model, tokenizer = load_model(str(_gguf(tiny_gguf_dir)), device="cpu", dtype="float32")
    text = "the quick brown fox import os"
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    assert ids.tolist() == source_tokenizer(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source(ids).logits, rtol=0, atol=1e-6)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None and tokenizer.chat_template


def test_a_folder_holding_one_gguf_records_from_the_command_line(tiny_gguf_dir, tmp_path):
    (tmp_path / "p.txt").write_text("the quick brown\nimport os\n")
    out = tmp_path / "t.h5"
    argv = ["record", str(tiny_gguf_dir), "--prompts", str(tmp_path / "p.txt"), "--out", str(out),
            "--max-new-tokens", "3", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    with Trace.open(out) as trace:
        assert len(trace) == 2 and trace.metadata.decoder_layers == 2
        assert [s.prompt_text for s in trace] == ["the quick brown", "import os"]


def test_a_folder_with_two_gguf_files_asks_which_one(tiny_gguf_dir, tmp_path):
    for name in ("a.gguf", "b.gguf"):
        shutil.copy(_gguf(tiny_gguf_dir), tmp_path / name)
    with pytest.raises(EntropyLensError, match=r"holds 2 GGUF files \(a.gguf, b.gguf\); give the path"):
        load_model(str(tmp_path), device="cpu")


def test_a_file_that_is_not_gguf_is_named_in_one_line(tmp_path, capsys):
    bad = tmp_path / "model.gguf"
    bad.write_text("not a model\n")
    (tmp_path / "p.txt").write_text("hello\n")
    assert main(["record", str(bad), "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "t.h5")]) == 2
    err = capsys.readouterr().err
    assert "model.gguf: not a readable GGUF file (GGUF magic invalid)" in err and err.count("\n") == 1
    assert not (tmp_path / "t.h5").exists()


def test_a_gguf_of_an_architecture_transformers_cannot_read_names_it(tiny_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    path = write_llama_gguf(model, tokenizer, tmp_path / "odd.gguf", architecture="rwkv6")
    with pytest.raises(EntropyLensError, match=r"odd.gguf: a GGUF of architecture 'rwkv6', which transformers cannot load"):
        load_model(str(path), device="cpu")


def test_without_the_gguf_package_the_error_says_which_extra_to_install(tiny_gguf_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now raises ImportError
    with pytest.raises(EntropyLensError, match=r"needs the gguf package: pip install 'entropylens-hf\[gguf\]'"):
        load_model(str(_gguf(tiny_gguf_dir)), device="cpu")
