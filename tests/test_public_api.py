"""The names users import keep working after the move to lens/, recording/, models/ and cli/,
and every import the README, docs/ and examples/ show works."""

import importlib
import re
from pathlib import Path

import pytest

import entropylens_hf

MOVED = {
    "recorder": "recording.recorder", "live": "recording.live", "prompts": "recording.prompts",
    "distributed": "recording.distributed", "chat": "recording.chat", "loading": "models.loading",
    "fetch": "models.fetch", "metrics": "lens.metrics", "capture": "lens.capture", "sublayers": "lens.sublayers",
    "tuned_lens": "lens.tuned", "lens_training": "lens.training",
}


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_an_old_module_path_is_the_moved_module_itself(old, new):
    alias = importlib.import_module(f"entropylens_hf.{old}")
    assert alias is importlib.import_module(f"entropylens_hf.{new}")  # monkeypatching the old path still works


def test_every_exported_name_imports_from_the_package_and_the_new_subpackages():
    for name in entropylens_hf.__all__:
        assert getattr(entropylens_hf, name) is not None
    from entropylens_hf.cli import main
    from entropylens_hf.lens import LogitLens, TunedLens, resolve_decoder_layers
    from entropylens_hf.models import default_model, default_model_path, demo_prompts_path
    from entropylens_hf.recording import EntropyLens, TraceRecorder

    assert entropylens_hf.EntropyLens is EntropyLens and entropylens_hf.TraceRecorder is TraceRecorder
    assert entropylens_hf.LogitLens is LogitLens and entropylens_hf.TunedLens is TunedLens
    assert entropylens_hf.default_model is default_model and default_model_path().is_dir()
    assert demo_prompts_path().is_file() and callable(main) and callable(resolve_decoder_layers)


ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").glob("*.py"))]
IMPORT = re.compile(r"^\s*(?:>>>\s*)?(from entropylens_hf[\w.]* import (?:\([^)]*\)|[^\n#]+)|import entropylens_hf[\w.]*)",
                    re.M)


def _documented_imports() -> list[tuple[str, str]]:
    found = {}
    for path in DOCUMENTED:
        for statement in IMPORT.findall(path.read_text(encoding="utf-8")):
            found.setdefault(" ".join(statement.split()), path.name)
    return sorted(found.items())


def test_the_documentation_shows_imports_to_check():
    assert len(_documented_imports()) >= 20


@pytest.mark.parametrize("statement, where", _documented_imports())
def test_every_import_the_documentation_shows_works(statement, where):
    exec(statement, {})  # noqa: S102 - the statement is one of our own documented imports
