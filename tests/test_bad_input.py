"""Bad arguments, prompts, outputs and API misuse: one line, exit code 2, before the model loads
where possible, no file left behind (docs/reliability.md)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_zoo import tiny_model
from test_trace import META

from entropylens_hf import EntropyLens, Trace, TraceWriter
from entropylens_hf.cli import main
from entropylens_hf.errors import EntropyLensError, TraceError, UnsupportedGenerationError
from entropylens_hf.prompts import read_prompts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("the quick brown\nimport os\n")
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the command loads a model: these errors must come before."""
    import entropylens_hf.loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was noticed")

    monkeypatch.setattr(entropylens_hf.loading, "load_model", refuse)


def _record(model, prompts, out, *extra):
    return main(["record", str(model), "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "3",
                 "--device", "cpu", "--quiet", *extra])


def _one_line(capsys, command="record"):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "Loading weights" not in line]
    assert len(lines) == 1 and lines[0].startswith(f"entropylens {command}: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch-size", "-1"], "--batch-size -1: must be at least 1"),
        (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["--max-new-tokens", "0"], "--max-new-tokens 0: must be at least 1"),
        (["--max-new-tokens", "-1"], "--max-new-tokens -1: must be at least 1"),
        (["--top-k", "0"], "--top-k 0: must be at least 1"),
        (["--renyi=-1"], "Rényi orders must be >= 0"),
        (["--device", "foo"], "--device foo: not a device"),
        (["--sample", "--temperature", "0"], "--temperature 0.0: must be above 0 when sampling"),
        (["--top-p", "2"], "--top-p 2.0: must be in \\(0, 1\\]"),
    ],
)
def test_bad_record_arguments_fail_before_the_model_loads_and_leave_no_file(
    tmp_path, prompts, capsys, no_model_load, extra, message
):
    out = tmp_path / "t.h5"
    assert _record("default", prompts, out, *extra) == 2
    assert re.search(message, _one_line(capsys))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]


def test_a_top_k_above_the_vocabulary_fails_after_loading_but_before_any_file(tiny_model_dir, tmp_path, prompts, capsys):
    out = tmp_path / "t.h5"
    assert _record(tiny_model_dir, prompts, out, "--top-k", "100000") == 2
    assert "--top-k 100000: top_k must be between 1 and the vocabulary size" in _one_line(capsys)
    assert not out.exists() and not out.with_name("t.h5.lock").exists()


def test_a_prompt_longer_than_the_context_is_refused_before_generating(tiny_model_dir, tmp_path, capsys):
    long = tmp_path / "long.txt"
    long.write_text("short prompt\n" + "the quick brown fox " * 800 + "\n")
    out = tmp_path / "t.h5"
    assert _record(tiny_model_dir, long, out) == 2
    line = _one_line(capsys)
    assert "prompt 2 (" in line and "exceeds the model's context of 2048 positions" in line
    assert not out.exists()
    huge = tmp_path / "huge.txt"
    huge.write_text("x" * 1_000_000 + "\n")  # refused without tokenizing a megabyte
    assert _record(tiny_model_dir, huge, out) == 2
    assert "prompt 1 (1000000 characters)" in _one_line(capsys)


def test_a_prompts_file_that_is_not_utf8_is_named(tmp_path, capsys, no_model_load):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    assert _record("default", bad, tmp_path / "t.h5") == 2
    assert "not UTF-8 text (byte 0xe9 at offset 3); save it as UTF-8" in _one_line(capsys)


def test_jsonl_prompts_with_raw_line_separators_are_read_whole(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "one\u2028two", "labels": {"k": "a\u0085b"}}, {"prompt": "three\r"}]
    path.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    prompts = read_prompts(path)
    assert [p.text for p in prompts] == ["one\u2028two", "three\r"]
    assert prompts[0].labels == {"k": "a\u0085b"}


def test_label_values_are_strings_or_json_scalars_and_the_rest_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a", "labels": {"n": 3, "ok": True, "x": 0.5, "s": "text"}}) + "\n")
    assert read_prompts(path)[0].labels == {"n": "3", "ok": "true", "x": "0.5", "s": "text"}
    for value, kind in ((None, "null"), ({"b": 1}, "dict"), ([1], "list")):
        path.write_text('{"prompt": "fine"}\n' + json.dumps({"prompt": "a", "labels": {"v": value}}) + "\n")
        with pytest.raises(EntropyLensError, match=f"line 2: label 'v' has a {kind} value"):
            read_prompts(path)


def test_the_api_refuses_unstorable_labels_before_creating_the_file(tmp_path):
    model = tiny_model("llama")
    lens = EntropyLens(model, None, top_k=4)
    with pytest.raises(ValueError, match="label 'x' has a null value"):
        with lens.record(tmp_path / "t.h5", labels={"x": None}):
            pass
    assert list(tmp_path.iterdir()) == []
    ids = torch.tensor([[3, 4, 5]])
    with lens.record(tmp_path / "t.h5") as rec:
        rec.next_call(labels={"n": 7, "flag": False})
        model.generate(input_ids=ids, max_new_tokens=2, eos_token_id=None, pad_token_id=0)
    with Trace.open(tmp_path / "t.h5") as trace:
        assert trace.labels == [{"n": "7", "flag": "false"}]


def test_recorder_misuse_says_what_went_wrong(tmp_path):
    model, other = tiny_model("llama"), tiny_model("gpt2")
    lens = EntropyLens(model, None, top_k=4)
    ids = torch.tensor([[3, 4, 5]])
    with lens.record() as rec:
        with pytest.raises(EntropyLensError, match="generate of a model it does not record.*LlamaForCausalLM"):
            other.generate(input_ids=ids, max_new_tokens=2, logits_processor=[rec], pad_token_id=0)
        with pytest.raises(UnsupportedGenerationError, match="not text or a list: tokenize first"):
            model.generate("hello", max_new_tokens=2)
        with pytest.raises(UnsupportedGenerationError, match=r"must be 2-D \[batch, tokens\], got shape \(1, 1, 3\)"):
            model.generate(ids[None], max_new_tokens=2)


def test_a_nested_record_on_the_same_file_names_the_open_block(tmp_path):
    lens = EntropyLens(tiny_model("llama"), None, top_k=4)
    with lens.record(tmp_path / "t.h5"):
        with pytest.raises(TraceError, match="being recorded by this process .* close the other TraceWriter / record"):
            with lens.record(tmp_path / "t.h5"):
                pass
    with lens.record(tmp_path / "t.h5"):  # and the outer block released it
        pass


def test_a_model_folder_without_config_json_says_so(tmp_path, prompts, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    assert _record(folder, prompts, tmp_path / "t.h5") == 2
    assert "a folder without config.json, so not a Hugging Face model folder" in _one_line(capsys)


def test_a_hub_id_without_network_fails_fast_with_one_line(tmp_path, prompts):
    # Without network the hub would otherwise be retried for about a minute with 22 lines of warnings.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": "https://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "entropylens_hf.cli", "record", "no-such-org/no-such-model",
                             "--prompts", str(prompts), "--out", str(tmp_path / "t.h5")],
                            capture_output=True, text=True, env=env, timeout=45)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "the hub cannot be reached from this machine" in result.stderr


def test_unwritable_or_missing_outputs_are_one_line(tmp_path, prompts, capsys, no_model_load):
    trace = tmp_path / "t.h5"
    TraceWriter(trace, META).close()
    assert main(["export", str(trace), "--out", str(tmp_path / "missing" / "x.csv")]) == 2
    assert "does not exist" in _one_line(capsys, "export")
    assert main(["export", str(trace), "--out", str(tmp_path)]) == 2
    assert "is a directory; give a file name" in _one_line(capsys, "export")
    assert _record("default", prompts, tmp_path) == 2
    assert "is a directory; give a file name" in _one_line(capsys)
    assert main(["demo", "--no-view", "--out", str(tmp_path / "missing" / "d.h5")]) == 2
    assert "does not exist" in _one_line(capsys, "demo")


def test_outputs_in_a_read_only_place_are_refused_before_the_model_loads(tmp_path, prompts, capsys, no_model_load):
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True).returncode:
        ro.chmod(0o555)
        if os.access(ro, os.W_OK):
            pytest.skip("neither a read-only mount nor a read-only folder is possible here")
    try:
        assert _record("default", prompts, ro / "t.h5") == 2
        assert "not writable here (read-only folder or file)" in _one_line(capsys)
        trace = tmp_path / "t.h5"
        TraceWriter(trace, META).close()
        assert main(["export", str(trace), "--out", str(ro / "x.csv")]) == 2
        assert "not writable here" in _one_line(capsys, "export")
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
        ro.chmod(0o755)


def test_exporting_an_empty_trace_writes_the_header(tmp_path):
    pytest.importorskip("pandas")
    trace = tmp_path / "t.h5"
    TraceWriter(trace, META).close()
    assert main(["export", str(trace), "--out", str(tmp_path / "x.csv")]) == 0
    assert (tmp_path / "x.csv").read_text().splitlines() == [
        "sequence,position,token_id,token,is_prompt,output_entropy,entropy_0,entropy_1,entropy_2,"
        "kl_final_0,kl_final_1,kl_final_2"
    ]


def test_analysis_commands_check_their_files_before_working(tmp_path, capsys, no_model_load):
    trace = tmp_path / "t.h5"
    TraceWriter(trace, META).close()
    assert main(["fingerprint", str(trace), "--out", str(tmp_path)]) == 2  # matplotlib wrote DIR.png before
    assert "is a directory; give a file name" in _one_line(capsys, "fingerprint")
    assert not tmp_path.with_suffix(".png").exists()
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9\n".encode("latin-1"))
    for option in ("--text", "--mc"):
        assert main(["skip-eval", "default", option, str(latin1)]) == 2
        assert "not UTF-8 text (byte 0xe9 at offset 3)" in _one_line(capsys, "skip-eval")
    assert main(["skip-eval", "default", "--trace", str(tmp_path / "missing.h5")]) == 2
    assert "no such trace file" in _one_line(capsys, "skip-eval")
