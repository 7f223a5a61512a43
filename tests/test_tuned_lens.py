"""The tuned lens: training lowers KL to the final layer, files round-trip, recordings go through the translators."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from model_zoo import tiny_model

from entropylens_hf import EntropyLens
from entropylens_hf.cli import main
from entropylens_hf.errors import LensMismatchError
from entropylens_hf.lens_training import TextSource, TrainSettings, evaluate_kl, split_data, train_lens
from entropylens_hf.tuned_lens import ModelFingerprint, TunedLens, file_sha256

ROOT = Path(__file__).resolve().parent.parent
TEXT = " ".join(
    f"the {a} {b} jumps over the lazy dog; import os and sys; def main(): return {i}"
    for i, (a, b) in enumerate([("quick", "fox"), ("slow", "cat"), ("brown", "bear"), ("red", "hen")] * 12)
)


def _randomised(lens: TunedLens, scale: float = 0.05, seed: int = 1) -> TunedLens:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return lens


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


def test_untrained_lens_reads_like_the_logit_lens_and_training_lowers_held_out_kl(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = TextSource("t.txt", TEXT, "0" * 64)
    settings = TrainSettings(steps=12, seq_len=16, batch_size=4, held_out=0.25, checkpoint_every=100)
    held_out = split_data(tokenizer, text, None, settings)[1]
    identity = evaluate_kl(model, TunedLens.for_model(model), held_out)
    np.testing.assert_array_equal(identity["tuned"], identity["logit"])

    tuned = train_lens(model, tokenizer, text, tmp_path / "lens.safetensors", settings=settings,
                       save_dtype="float32", progress=False, log=lambda m: None)
    result = tuned.evaluation
    assert result["tokens"] == held_out.numel()
    assert np.all(np.asarray(result["tuned"]) < np.asarray(result["logit"]))
    again = evaluate_kl(model, TunedLens.load(tmp_path / "lens.safetensors"), held_out)
    np.testing.assert_allclose(again["tuned"], result["tuned"], rtol=1e-5)
    assert not (tmp_path / "lens.safetensors.ckpt").exists()
    assert all(p.requires_grad for p in model.parameters())  # the model is left as it was


def test_save_load_round_trip_keeps_outputs_header_and_hash(tiny, tmp_path):
    lens = _randomised(TunedLens.for_model(tiny, model_name="tiny"))
    lens.training_settings, lens.evaluation = {"steps": 3}, {"tokens": 5, "logit": [1.0, 0.5], "tuned": [0.5, 0.2]}
    sha = lens.save(tmp_path / "a.safetensors")
    loaded = TunedLens.load(tmp_path / "a.safetensors")
    residuals = torch.randn(5, 3, 32)
    torch.testing.assert_close(loaded(residuals), lens(residuals), rtol=0, atol=0)
    # rows named explicitly (as a recorder passing a subset of rows does); the last row is left as it is
    torch.testing.assert_close(lens(residuals[:, [2, 1]], [2, 1]), lens(residuals)[:, [2, 1]], rtol=0, atol=0)
    torch.testing.assert_close(lens(residuals)[:, 2], residuals[:, 2], rtol=0, atol=0)
    with pytest.raises(LensMismatchError):
        lens(torch.randn(2, 4, 32))
    assert sha == loaded.sha256 == file_sha256(tmp_path / "a.safetensors")
    assert loaded.header() == lens.header() and loaded.layer_kinds == ("emb", "layer", "layer")
    assert loaded.trace_lens() == {"kind": "tuned", "name": "a.safetensors", "sha256": sha}
    # float16 storage: outputs within float16 rounding of the weights, and another hash
    half = TunedLens.load(tmp_path / "h.safetensors") if lens.save(tmp_path / "h.safetensors", dtype="float16") else None
    torch.testing.assert_close(half(residuals), lens(residuals), rtol=0, atol=2e-3)
    assert half.sha256 != sha and (tmp_path / "h.safetensors").stat().st_size < (tmp_path / "a.safetensors").stat().st_size


def _float64_reference(model, lens: TunedLens, tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entropy, target probability and KL to the final row per position and lens row, by hand in float64:
    translate, norm, unembed."""
    with torch.no_grad():
        out = model(tokens[None, :-1], output_hidden_states=True)
        norm = copy.deepcopy(model.model.norm).double()
        weight = model.lm_head.weight.double()
        rows = []
        for i, h in enumerate(out.hidden_states[:-1]):  # the last is already normed; it is the model's own logits
            h = h[0].double()
            a, b = lens.translators[i].weight.double(), lens.translators[i].bias.double()
            rows.append(norm(h + h @ a.T + b) @ weight.T)
        rows.append(out.logits[0].double())
        logits = torch.stack(rows, dim=1)  # [positions, rows, V]
        log_p = torch.log_softmax(logits, -1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        target = log_p.exp().gather(-1, tokens[1:, None, None].expand(-1, logits.shape[1], 1))[..., 0]
        final = log_p[:, -1:]
        kl = (final.exp() * (final - log_p)).sum(-1)
    return entropy.numpy(), target.numpy(), kl.numpy()


@pytest.fixture(scope="module")
def tuned_recording(tiny):
    tuned = _randomised(TunedLens.for_model(tiny), scale=0.1)
    lens = EntropyLens(tiny, None, top_k=3, lens=tuned)
    prompt = torch.tensor([[1, 5, 9, 14, 3]])
    _, records = lens.generate(input_ids=prompt, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    return tuned, records[0]


def test_recording_through_a_tuned_lens_equals_a_float64_computation_by_hand(tiny, tuned_recording):
    tuned, record = tuned_recording
    entropy, target, kl = _float64_reference(tiny, tuned, torch.as_tensor(record.token_ids))
    np.testing.assert_allclose(record.entropy, entropy, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(record.target_prob, target, atol=2e-5, rtol=1e-3)
    np.testing.assert_allclose(record.kl_final, kl, atol=2e-4, rtol=1e-3)
    # the translators changed the readout of every row but the last
    plain = _float64_reference(tiny, TunedLens.for_model(tiny), torch.as_tensor(record.token_ids))[0]
    assert np.all(np.abs(entropy[:, :-1] - plain[:, :-1]).max(0) > 1e-3)


def test_last_row_of_a_tuned_lens_trace_is_the_models_own_distribution(tiny, tuned_recording):
    _, record = tuned_recording
    with torch.no_grad():
        logits = tiny(torch.as_tensor(record.token_ids)[None, :-1]).logits[0].double()
    log_p = torch.log_softmax(logits, -1)
    np.testing.assert_allclose(record.entropy[:, -1], (-(log_p.exp() * log_p).sum(-1)).numpy(), atol=1e-4)
    assert np.all(record.target_rank[record.is_generated, -1] == 0)  # greedy


def test_a_lens_for_another_model_is_refused_in_one_line(tiny, tmp_path):
    TunedLens(ModelFingerprint("llama", 64, 3, 128)).save(tmp_path / "bigger.safetensors")
    with pytest.raises(LensMismatchError) as err:
        EntropyLens(tiny, None, lens=TunedLens.load(tmp_path / "bigger.safetensors"))
    message = str(err.value)
    assert "\n" not in message and "bigger.safetensors was trained for a llama model with 3 layers, hidden size 64" in message
    assert "this is a llama model with 2 layers, hidden size 32" in message and "entropylens train-lens" in message


def test_a_whole_layer_lens_refuses_a_sub_layer_recording(tiny):
    with pytest.raises(LensMismatchError, match=r"translates whole layers \(3 rows\), but this recording reads sub-layer"):
        EntropyLens(tiny, None, sublayers=True, lens=TunedLens.for_model(tiny))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train-lens", "default", "--text", "{tmp}/missing.txt", "--out", "{tmp}/l.safetensors"], "no such file"),
        (["train-lens", "default", "--text", "{tmp}/empty.txt", "--out", "{tmp}/l.safetensors"], "the file is empty"),
        (["train-lens", "default", "--text", "{tmp}/t.txt", "--out", "{tmp}/l.pt"], "a .safetensors file"),
        (["train-lens", "default", "--text", "{tmp}/t.txt", "--out", "{tmp}/l.safetensors", "--steps", "0"], "--steps 0"),
        (["train-lens", "default", "--text", "{tmp}/t.txt", "--out", "{tmp}/l.safetensors", "--held-out", "1"], "fraction"),
        (["train-lens", "default", "--text", "{tmp}/t.txt", "--out", "{tmp}/done.safetensors"], "exists already"),
        (["train-lens", "{tmp}/no-model", "--text", "{tmp}/t.txt", "--out", "{tmp}/l.safetensors"], "cannot load"),
        (["record", "default", "--prompts", "{tmp}/t.txt", "--out", "{tmp}/t.h5", "--lens", "{tmp}/t.txt"],
         "not a safetensors file"),
        (["record", "default", "--prompts", "{tmp}/t.txt", "--out", "{tmp}/t.h5", "--lens", "tunde"],
         "neither logit, tuned nor"),
        (["record", "{tmp}", "--prompts", "{tmp}/t.txt", "--out", "{tmp}/t.h5", "--lens", "tuned"],
         "no tuned_lens.safetensors in"),
    ],
)
def test_train_lens_and_record_lens_errors_are_one_line_with_exit_code_2(tmp_path, capsys, argv, message):
    (tmp_path / "t.txt").write_text("hello world\n")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "done.safetensors").write_bytes(b"x")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "l.safetensors").exists() and not (tmp_path / "t.h5").exists()


def test_record_refuses_a_lens_for_another_model_without_leaving_a_trace(tiny_model_dir, tmp_path, capsys):
    TunedLens(ModelFingerprint("gpt2", 48, 2, 300)).save(tmp_path / "gpt2.safetensors")
    (tmp_path / "p.txt").write_text("hello\n")
    argv = ["record", str(tiny_model_dir), "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "t.h5"),
            "--lens", str(tmp_path / "gpt2.safetensors"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the weights' loading bar
    assert err.startswith("entropylens record: error: gpt2.safetensors was trained for a gpt2 model")
    assert not (tmp_path / "t.h5").exists()


_INTERRUPTING = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from entropylens_hf.cli import main

    clip, calls = torch.nn.utils.clip_grad_norm_, []

    def clip_then_ctrl_c(*args, **kwargs):  # a real SIGINT arrives during the 4th step, as from Ctrl-C
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return clip(*args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = clip_then_ctrl_c
    sys.exit(main(sys.argv[1:]))
    """
)


def test_train_lens_resumes_after_ctrl_c_and_ends_where_an_uninterrupted_run_ends(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    out = tmp_path / "lens.safetensors"
    argv = ["train-lens", str(tiny_model_dir), "--text", str(tmp_path / "t.txt"), "--out", str(out), "--steps", "6",
            "--seq-len", "16", "--batch-size", "2", "--checkpoint-every", "100", "--save-dtype", "float32", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.run([sys.executable, "-c", _INTERRUPTING, *argv], capture_output=True, text=True, env=env)
    assert first.returncode == 130, first.stderr
    assert "lens.safetensors.ckpt keeps the last finished step" in first.stderr and not out.exists()
    assert torch.load(tmp_path / "lens.safetensors.ckpt", weights_only=True)["step"] == 3

    assert main(argv) == 0  # the same command again, here in-process
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "at step 3 of 6" in printed
    assert "held-out mean KL to the final layer" in printed and out.exists()
    assert not (tmp_path / "lens.safetensors.ckpt").exists()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    settings = TrainSettings(steps=6, seq_len=16, batch_size=2, checkpoint_every=100)
    whole = train_lens(model, tokenizer, TextSource.read(tmp_path / "t.txt"), tmp_path / "whole.safetensors",
                       settings=settings, save_dtype="float32", progress=False)
    resumed = TunedLens.load(out)
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-6, atol=1e-7)


def test_trace_names_its_tuned_lens_and_a_logit_lens_trace_refuses_tuned_rows(tiny, tmp_path, capsys):
    from entropylens_hf.errors import TraceError
    from entropylens_hf.trace import Trace

    tuned = _randomised(TunedLens.for_model(tiny))
    sha = tuned.save(tmp_path / "tl.safetensors")
    prompt = dict(input_ids=torch.tensor([[1, 5, 9]]), max_new_tokens=2, do_sample=False, pad_token_id=0)
    EntropyLens(tiny, None, lens=tuned).generate(**prompt, trace=tmp_path / "tuned.h5")
    with Trace.open(tmp_path / "tuned.h5") as trace:
        assert trace.metadata.lens == {"kind": "tuned", "name": "tl.safetensors", "sha256": sha}
        assert trace.metadata.lens_kind == "tuned"
    assert main(["info", str(tmp_path / "tuned.h5")]) == 0
    assert f"tuned lens tl.safetensors (sha256 {sha[:16]}" in capsys.readouterr().out

    EntropyLens(tiny, None).generate(**prompt, trace=tmp_path / "logit.h5")
    with pytest.raises(TraceError, match=r"lens logit vs tuned \(tl.safetensors\)"):
        EntropyLens(tiny, None, lens=tuned).generate(**prompt, trace=tmp_path / "logit.h5")
    with Trace.open(tmp_path / "logit.h5") as trace:
        assert len(trace) == 1 and trace.metadata.lens_kind == "logit"
    # the CLI says so before loading any model
    (tmp_path / "p.txt").write_text("hello\n")
    argv = ["record", str(tmp_path / "no-such-model"), "--prompts", str(tmp_path / "p.txt"),
            "--out", str(tmp_path / "logit.h5"), "--lens", str(tmp_path / "tl.safetensors")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "recorded through the logit lens, not the tuned (tl.safetensors) lens" in err and err.count("\n") == 1


def test_bundled_model_ships_a_tuned_lens_below_the_logit_lens_at_every_layer(tmp_path):
    from entropylens_hf.cli.record import _lens_file
    from entropylens_hf.lens_training import sequences_of
    from entropylens_hf.models import default_model, default_model_path
    from entropylens_hf.trace import Trace

    path = _lens_file("tuned", "default")
    assert path == default_model_path() / "tuned_lens.safetensors"
    tuned = TunedLens.load(path)
    stored = tuned.evaluation
    assert stored["tokens"] >= 16384 and np.all(np.asarray(stored["tuned"]) < np.asarray(stored["logit"]))
    model, tokenizer = default_model()
    tuned.check_model(model)
    # measured again here, on text the lens never saw (the model card)
    text = (default_model_path() / "README.md").read_text()
    again = evaluate_kl(model, tuned, sequences_of(tokenizer, text, 64)[:4])
    assert np.mean(again["tuned"]) < np.mean(again["logit"])

    (tmp_path / "p.txt").write_text("Return the absolute value of\n")
    argv = ["record", "default", "--lens", "tuned", "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "t.h5"),
            "--max-new-tokens", "2", "--quiet"]
    assert main(argv) == 0
    with Trace.open(tmp_path / "t.h5") as trace:
        assert trace.metadata.lens == tuned.trace_lens() and len(trace) == 1
