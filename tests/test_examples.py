"""The README's example scripts run as written."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs_and_prints_profiles(tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py"), "--out", str(tmp_path / "q.h5")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("entropy per layer (nats):") == 2 and (tmp_path / "q.h5").exists()


def test_tuned_lens_figure_plots_the_bundled_lens_evaluation(tmp_path):
    pytest.importorskip("matplotlib")
    out = subprocess.run([sys.executable, str(EXAMPLES / "tuned_lens_kl.py"), "--out", str(tmp_path / "kl.png")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "kl.png").read_bytes()[:4] == b"\x89PNG" and out.stdout.count("logit ") == 6


@pytest.mark.timeout(1800)
def test_reproduce_paper_quick_writes_every_section_with_figures_and_verdicts(tmp_path):
    """The report script runs end to end on the shipped example models (the --quick setting, for CI)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    # --quick, and smaller still: the run time is mostly the layer-skipping study, which --mc-limit and --seeds bound
    out = subprocess.run([sys.executable, str(EXAMPLES / "reproduce_paper.py"), "--quick", "--mc-limit", "20", "--seeds", "1",
                          "--new-tokens", "8", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    for section in range(1, 7):
        assert f"## {section}. " in report
    for figure in ("profiles.png", "depth_rescaled.png", "steps.png", "fingerprint.png"):
        assert f"]({figure})" in report and (tmp_path / figure).read_bytes()[:4] == b"\x89PNG"
    models = sorted(p.parent.name for p in (EXAMPLES / "models").glob("*/config.json"))
    assert len(models) >= 4 and all(f"| {name} |" in report for name in models)
    assert report.count("Verdict: **") >= 6


@pytest.mark.timeout(900)
def test_reproduce_paper_real_model_quick_writes_every_section_through_the_chat_template(tmp_path):
    """--real-model runs end to end on an instruct-style model: here the bundled model given a chat template."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from entropylens_hf import default_model

    model, tokenizer = default_model()
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    folder = tmp_path / "chat-model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = subprocess.run([sys.executable, str(EXAMPLES / "reproduce_paper.py"), "--real-model", str(folder), "--quick",
                          "--new-tokens", "6", "--seeds", "1", "--out", str(tmp_path / "report")],
                         capture_output=True, text=True, timeout=800)
    assert out.returncode == 0, out.stderr[-3000:]
    report = (tmp_path / "report" / "report.md").read_text()
    for section in range(1, 4):
        assert f"## {section}. " in report
    assert "<|user|>" not in report.split("## 1.")[0]  # the setup shows user messages, not rendered templates
    for figure in ("profiles.png", "steps.png"):
        assert f"]({figure})" in report and (tmp_path / "report" / figure).read_bytes()[:4] == b"\x89PNG"
    assert report.count("Verdict: **") >= 4


def test_sublayers_kl_example_draws_the_figure_on_the_bundled_model(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import importlib.util

    # In-process: the script's main, without paying for a second interpreter's torch import.
    spec = importlib.util.spec_from_file_location("sublayers_kl_example", EXAMPLES / "sublayers_kl.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--real-model", "none", "--tokens", "3", "--per-task", "1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "sublayers_kl.png").read_bytes()[:4] == b"\x89PNG"
    summary = (tmp_path / "summary.txt").read_text()
    assert "== bundled model" in summary and "most frequent pruning sites" in summary
    assert "mean KL to final per lens layer (nats):" in summary and summary in capsys.readouterr().out
