"""The analysis subcommands, run through the real ``entropylens`` entry point on recorded traces."""

import json

import pytest

from entropylens_hf.cli import main


def test_classify_prints_the_table_for_a_stored_label(llama_trace, capsys):
    assert main(["classify", str(llama_trace), "--label", "format", "--windows", "2", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["label", "classes"]
    assert out.splitlines()[2].startswith("format")
    assert "x (8), y (8), z (8)" in out and "2 window means" in out


def test_classify_with_a_renyi_order(llama_trace, capsys):
    assert main(["classify", str(llama_trace), "--label", "task", "--alpha", "inf"]) == 0
    assert "Rényi α=inf" in capsys.readouterr().out


def test_classify_an_unknown_label_is_one_line_naming_the_labels_that_exist(llama_trace, capsys):
    assert main(["classify", str(llama_trace), "--label", "answer"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no sequence has the label 'answer'" in err and "labels in this trace: format, task" in err


def test_classify_an_unrecorded_renyi_order_is_a_user_error(llama_trace, capsys):
    assert main(["classify", str(llama_trace), "--label", "task", "--alpha", "3"]) == 2
    assert "Rényi order 3.0 was not recorded" in capsys.readouterr().err


def test_fingerprint_writes_a_figure(make_trace, tmp_path, capsys):
    a, b = make_trace("cli-a.h5", n=6), make_trace("cli-b.h5", family="gpt2", n=6)
    out = tmp_path / "fp.png"
    assert main(["fingerprint", str(a), str(b), "--out", str(out), "--method", "pca"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "12 profiles of 2 model(s)" in capsys.readouterr().out


def test_fingerprint_into_a_missing_folder_is_a_user_error(llama_trace, tmp_path, capsys):
    assert main(["fingerprint", str(llama_trace), "--out", str(tmp_path / "no" / "fp.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_skip_eval_on_multiple_choice_and_on_text(tiny_model_dir, tmp_path, capsys):
    mc = tmp_path / "mc.jsonl"
    mc.write_text("\n".join(json.dumps({"question": q, "choices": c, "answer": a}) for q, c, a in [
        ("the quick brown", ["fox", "sys"], 0), ("import os and", ["sys", "dog"], 0), ("def main():", ["return 0", "fox"], 0),
    ]))
    assert main(["skip-eval", str(tiny_model_dir), "--mc", str(mc), "--seeds", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "multiple choice, 3 questions" in out and "accuracy (length-normalised)" in out
    assert "max expansion (1)" in out and "random (1) x2" in out
    text = tmp_path / "heldout.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n\nimport os and sys\n")
    assert main(["skip-eval", str(tiny_model_dir), "--text", str(text), "--seeds", "2", "--device", "cpu"]) == 0
    assert "next-token prediction, 2 texts" in capsys.readouterr().out


def test_skip_eval_with_too_many_layers_or_a_trace_of_another_depth_is_a_user_error(tiny_model_dir, make_trace, tmp_path,
                                                                                     capsys):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox")
    assert main(["skip-eval", str(tiny_model_dir), "--text", str(text), "--n-layers", "3", "--device", "cpu"]) == 2
    assert "between 1 and the 2 decoder layers" in capsys.readouterr().err
    deeper = make_trace("deeper.h5", family="gpt2", layers=3, n=2)
    assert main(["skip-eval", str(tiny_model_dir), "--text", str(text), "--trace", str(deeper), "--device", "cpu"]) == 2
    assert "this model's profiles have 3 lens layers" in capsys.readouterr().err


def test_skip_eval_ranks_layers_by_a_given_trace(tiny_model_dir, llama_trace, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox")
    assert main(["skip-eval", str(tiny_model_dir), "--text", str(text), "--trace", str(llama_trace), "--seeds", "1",
                 "--device", "cpu"]) == 0
    assert f"mean generated-token profile of {llama_trace}" in capsys.readouterr().out


def test_skip_eval_defaults_to_next_token_accuracy_on_the_bundled_held_out_passages(tiny_model_dir, capsys):
    from entropylens_hf.analysis.commands import BUNDLED_MC
    from entropylens_hf.analysis.evaluation import read_multiple_choice

    assert len(read_multiple_choice(BUNDLED_MC)) >= 200
    assert main(["skip-eval", str(tiny_model_dir), "--seeds", "1", "--limit", "12", "--device", "cpu"]) == 0
    assert "next-token prediction, 12 texts" in capsys.readouterr().out
