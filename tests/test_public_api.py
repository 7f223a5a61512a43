"""The names users import keep working after the move to lens/, recording/, models/ and cli/."""

import importlib

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
