"""The architecture rules hold: tools/check_layers.py passes on the package and catches each violation."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "check_layers.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("check_layers", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


check_layers = _load_tool()


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "entropylens_hf"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            (root / parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(text))
    return root


def test_the_package_and_the_viewer_keep_the_layering():
    done = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no cycles, no private cross-imports, no upward imports" in done.stdout


def test_a_cycle_is_found_also_through_an_import_inside_a_function(tmp_path):
    root = _package(tmp_path, {
        "trace/a.py": "from .b import thing\n",
        "trace/b.py": "def thing():\n    from .c import other\n",
        "trace/c.py": "from . import a\n",
    })
    problems = check_layers.check_package(root)
    assert problems == ["cycle: entropylens_hf.trace.a <-> entropylens_hf.trace.b <-> entropylens_hf.trace.c"]


def test_an_import_for_annotations_only_is_not_a_cycle(tmp_path):
    root = _package(tmp_path, {
        "trace/a.py": "from .b import B\n",
        "trace/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\nclass B: ...\n",
    })
    assert check_layers.check_package(root) == []


def test_a_private_name_from_another_module_is_refused_in_both_spellings(tmp_path):
    root = _package(tmp_path, {
        "trace/schema.py": "_SECRET = 1\n__version__ = '1'\n",
        "trace/writer.py": "from .schema import _SECRET, __version__\n",
        "trace/reader.py": "from . import schema\nx = schema._SECRET\ny = schema.__version__\n",
    })
    problems = check_layers.check_package(root)
    assert sorted(problems) == [
        "private: entropylens_hf.trace.reader (line 2) imports entropylens_hf.trace.schema._SECRET; "
        "name the interface or move the code",
        "private: entropylens_hf.trace.writer (line 1) imports entropylens_hf.trace.schema._SECRET; "
        "name the interface or move the code",
    ]


def test_a_lower_layer_importing_a_higher_one_is_refused_and_the_other_way_is_not(tmp_path):
    root = _package(tmp_path, {
        "trace/reader.py": "from ..lens.logit import LogitLens\n",
        "lens/logit.py": "from ..trace.reader import Trace\nfrom ..errors import Oops\nclass LogitLens: ...\n",
        "errors.py": "class Oops(Exception): ...\n",
        "cli/app.py": "from ..lens.logit import LogitLens\nfrom ..trace.reader import Trace\n",
    })
    problems = check_layers.check_package(root)
    assert [p for p in problems if p.startswith("layer:")] == [
        "layer: entropylens_hf.trace.reader (line 1) imports entropylens_hf.lens.logit, a higher layer (lens above trace)"]


def test_only_a_display_hook_may_import_the_display_layer_from_below(tmp_path):
    root = _package(tmp_path, {
        "trace/reader.py": (
            "class Trace:\n"
            "    def _repr_html_(self):\n        from ..display.view import view\n        return view(self)\n"
            "    def show(self):\n        from ..display.view import view\n        return view(self)\n"
            "    def _repr_html_lens(self):\n        from ..lens.logit import LogitLens\n"
        ),
        "display/view.py": "from ..trace.reader import Trace\ndef view(x): ...\n",
        "lens/logit.py": "class LogitLens: ...\n",
    })
    problems = check_layers.check_package(root)
    assert sorted(p for p in problems if p.startswith("layer:")) == [
        "layer: entropylens_hf.trace.reader (line 6) imports entropylens_hf.display.view, a higher layer (display above trace)",
        "layer: entropylens_hf.trace.reader (line 9) imports entropylens_hf.lens.logit, a higher layer (lens above trace)",
    ]
    assert [p for p in problems if p.startswith("cycle:")] == [
        "cycle: entropylens_hf.display.view <-> entropylens_hf.trace.reader"]  # through show(), not the hook


def test_the_alias_modules_of_old_paths_are_not_counted(tmp_path):
    root = _package(tmp_path, {
        "recorder.py": "import sys\nfrom .recording import recorder as _moved\nsys.modules[__name__] = _moved\n",
        "recording/recorder.py": "x = 1\n",
    })
    assert check_layers.check_package(root) == []


@pytest.mark.parametrize("line, allowed", [
    ("from entropylens_hf.trace import Trace", True),
    ("from entropylens_hf import Trace", True),
    ("from entropylens_hf.trace.shards import ShardedTrace", True),
    ("from entropylens_hf.recording.recorder import EntropyLens", False),
    ("from entropylens_hf import EntropyLens", False),
    ("import torch", False),
])
def test_the_viewer_may_use_the_trace_api_only(tmp_path, line, allowed):
    viewer = tmp_path / "entropylens_viewer"
    viewer.mkdir()
    (viewer / "model.py").write_text(line + "\n")
    problems = check_layers.check_viewer(viewer)
    assert (problems == []) is allowed, problems


def test_the_command_line_exits_1_and_lists_each_violation(tmp_path):
    root = _package(tmp_path, {"trace/a.py": "from .b import _x\n", "trace/b.py": "_x = 1\n"})
    done = subprocess.run([sys.executable, str(TOOL), str(root)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["private: entropylens_hf.trace.a (line 1) imports entropylens_hf.trace.b._x; "
                                        "name the interface or move the code"]
