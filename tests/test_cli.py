"""The entropylens command line, end to end on a saved tiny model."""

import json

import h5py
import numpy as np
import pytest

from entropylens_hf import Trace
from entropylens_hf.cli import main


@pytest.fixture
def prompts_jsonl(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "the quick brown", "labels": {"task": "prose"}},
            {"prompt": "import os", "labels": {"task": "code"}},
            {"prompt": "def main():", "labels": {"task": "code"}}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _record(model_dir, prompts, out, *extra):
    return main(["record", str(model_dir), "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "4",
                 "--batch-size", "2", "--device", "cpu", "--quiet", *extra])


def test_record_writes_every_prompt_with_its_labels_and_resumes(tiny_model_dir, prompts_jsonl, tmp_path, capsys):
    out = tmp_path / "t.h5"
    assert _record(tiny_model_dir, prompts_jsonl, out, "--label", "run=1", "--renyi", "2,inf") == 0
    with Trace.open(out) as trace:
        assert len(trace) == 3
        assert trace.labels == [{"run": "1", "task": "prose"}, {"run": "1", "task": "code"}, {"run": "1", "task": "code"}]
        assert [t.strip() for t in trace.prompt_texts] == ["the quick brown", "import os", "def main():"]
        assert trace.metadata.renyi_alphas == (2.0, float("inf"))
        assert all(s.n_generated == 4 for s in trace)
    assert "recorded 3 prompt(s)" in capsys.readouterr().out
    # Re-running skips what is there; a longer prompt list records only the new prompt.
    with prompts_jsonl.open("a") as f:
        f.write(json.dumps({"prompt": "the lazy dog", "labels": {"task": "prose"}}) + "\n")
    assert _record(tiny_model_dir, prompts_jsonl, out, "--label", "run=1", "--renyi", "2,inf") == 0
    printed = capsys.readouterr().out
    assert "recorded 1 prompt(s)" in printed and "skipped 3 already in the file" in printed
    with Trace.open(out) as trace:
        assert len(trace) == 4 and trace.prompt_texts[-1].strip() == "the lazy dog"


def test_record_live_writes_what_a_normal_recording_writes_and_a_bad_interval_is_refused_before_loading(
        tiny_model_dir, prompts_jsonl, tmp_path, capsys, monkeypatch):
    from entropylens_hf.trace.writer import TraceWriter

    normal, live = tmp_path / "normal.h5", tmp_path / "live.h5"
    assert _record(tiny_model_dir, prompts_jsonl, normal) == 0
    calls, begin_live = [], TraceWriter.begin_live
    monkeypatch.setattr(TraceWriter, "begin_live", lambda self, *a, **k: calls.append(1) or begin_live(self, *a, **k))
    assert _record(tiny_model_dir, prompts_jsonl, live, "--live", "--live-interval", "0") == 0
    assert len(calls) == 2  # one live call per batch of 2 prompts
    with Trace.open(normal) as a, Trace.open(live, partial=True) as b:
        assert len(b) == 3 and all(s.complete for s in b) and b.keys == a.keys
        for x, y in zip(a, b):
            assert x.token_ids.tolist() == y.token_ids.tolist()
            np.testing.assert_allclose(y.entropy, x.entropy, rtol=1e-4, atol=1e-5)
    import entropylens_hf.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    assert main(["record", str(tiny_model_dir), "--prompts", str(prompts_jsonl), "--out", str(tmp_path / "x.h5"),
                 "--live", "--live-interval", "-1"]) == 2
    assert "--live-interval -1.0: must be >= 0 seconds" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_plain_text_prompt_file_and_sampling_with_seed_reproduce(tiny_model_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("the quick brown\n\nimport os\n")
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for out in (a, b):
        assert _record(tiny_model_dir, prompts, out, "--sample", "--seed", "5", "--temperature", "1.3") == 0
    with Trace.open(a) as ta, Trace.open(b) as tb:
        assert len(ta) == 2
        assert [s.token_ids.tolist() for s in ta] == [s.token_ids.tolist() for s in tb]
        assert ta.runs()[0]["do_sample"] is True


def test_info_and_export(tiny_model_dir, prompts_jsonl, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    out = tmp_path / "t.h5"
    _record(tiny_model_dir, prompts_jsonl, out)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 lens layers: embeddings + 2 decoder layers" in text and "label      task: code 2, prose 1" in text
    assert "bytes per token-layer" in text and "layer 2" in text
    assert main(["export", str(out), "--to", "csv"]) == 0
    frame = pd.read_csv(out.with_suffix(".csv"))
    with Trace.open(out) as trace:
        assert len(frame) == trace.num_rows
        assert frame.entropy_2.to_numpy() == pytest.approx([x for s in trace for x in s.entropy[:, 2]], rel=1e-6)
    assert main(["export", str(out), "--to", "parquet", "--layout", "long", "--out", str(tmp_path / "x.parquet")]) == 0
    assert len(pd.read_parquet(tmp_path / "x.parquet")) == 3 * len(frame)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "{tmp}/missing.h5"], "no such trace file"),
        (["info", "{tmp}/foreign.h5"], "not an entropylens trace"),
        (["record", "{tmp}/no-model", "--prompts", "{tmp}/p.txt", "--out", "{tmp}/t.h5"], "cannot load the model"),
        (["record", "default", "--prompts", "{tmp}/missing.txt", "--out", "{tmp}/t.h5"], "no such prompts file"),
        (["record", "default", "--prompts", "{tmp}/empty.jsonl", "--out", "{tmp}/t.h5"], "line 2: empty prompt"),
        (["record", "default", "--prompts", "{tmp}/p.txt", "--out", "{tmp}/nope/t.h5"], "does not exist"),
        (["record", "default", "--prompts", "{tmp}/p.txt", "--out", "{tmp}/t.h5", "--renyi", "x"], "comma-separated"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys, argv, message):
    (tmp_path / "p.txt").write_text("hello\n")
    (tmp_path / "empty.jsonl").write_text('{"prompt": "ok"}\n{"prompt": "  "}\n')
    h5py.File(tmp_path / "foreign.h5", "w").close()
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_view_without_the_viewer_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    import entropylens_hf.cli.common as common

    monkeypatch.setattr(common, "viewer_main", lambda: None)
    assert main(["view", str(tmp_path / "t.h5")]) == 2
    assert "pip install entropylens-viewer" in capsys.readouterr().err


def test_demo_records_the_bundled_prompts_and_says_how_to_view_headless(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "demo.h5"
    assert main(["demo", "--out", str(out), "--max-new-tokens", "8"]) == 0
    printed = capsys.readouterr().out
    with Trace.open(out) as trace:
        kinds = {labels["kind"] for labels in trace.labels}
        assert len(trace) >= 8 and {"predictable", "open-ended"} <= kinds
        assert all(s.n_generated == 8 for s in trace)
    assert "mean profile per kind" in printed and f"entropylens-view {out}" in printed and "(no display)" in printed


def test_record_with_last_prompt_rows_and_bfloat16_lens_stores_both_in_the_run(tiny_model_dir, prompts_jsonl, tmp_path):
    out = tmp_path / "t.h5"
    assert _record(tiny_model_dir, prompts_jsonl, out, "--prompt-rows", "last:1", "--lens-dtype", "bfloat16") == 0
    with Trace.open(out) as trace:
        assert all(s.first_target == s.prompt_length - 1 or s.prompt_length == 1 for s in trace)
        run = trace.runs()[0]
        assert run["lens_dtype"] == "bfloat16" and run["record_prompt"] == "last:1"


@pytest.mark.parametrize("extra, message", [
    (["--prompt-rows", "last:0"], "--prompt-rows 'last:0': expected all, none or last:N"),
    (["--prompt-rows", "first:3"], "expected all, none or last:N"),
    (["--no-prompt-rows", "--prompt-rows", "last:3"], "--no-prompt-rows contradicts --prompt-rows last:3"),
])
def test_bad_prompt_rows_fail_before_the_model_loads(prompts_jsonl, tmp_path, capsys, extra, message):
    out = tmp_path / "t.h5"
    # A model folder that does not exist: loading it would fail with another message.
    assert _record(tmp_path / "no-such-model", prompts_jsonl, out, *extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_record_sublayers_writes_attention_and_mlp_rows_with_kl(tiny_model_dir, prompts_jsonl, tmp_path, capsys):
    out = tmp_path / "t.h5"
    assert _record(tiny_model_dir, prompts_jsonl, out, "--sublayers") == 0
    with Trace.open(out) as trace:
        m = trace.metadata
        assert m.sublayers and m.layer_kinds == ("emb", "attn", "mlp", "attn", "mlp")
        assert m.layer_names == ("embeddings", "1.attn", "1.mlp", "2.attn", "2.mlp")
        seq = trace[0]
        assert seq.kl_final.shape == seq.entropy.shape == (seq.n_rows, 5)
        assert (seq.kl_final[:, -1] == 0).all() and (seq.kl_final[:, :-1] > 0).all()
    assert main(["sublayers", str(out), "--label", "task"]) == 0
    assert "by attn" in capsys.readouterr().out


def test_record_sublayers_of_a_parallel_block_model_is_one_line_and_no_file(tiny_model_dir, prompts_jsonl, tmp_path,
                                                                             capsys):
    import torch
    from model_zoo import FAMILIES
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = FAMILIES["gptj"]()
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    folder = tmp_path / "gptj"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "t.h5"
    assert _record(folder, prompts_jsonl, out, "--sublayers") == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not the loading bars
    assert len(lines) == 1 and lines[0].startswith("entropylens record: error: GPTJForCausalLM")
    err = lines[0]
    assert "in parallel off the same input" in err and not out.exists()
