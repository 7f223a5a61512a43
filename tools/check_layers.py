#!/usr/bin/env python3
"""Check the package's architecture: no import cycles, no private cross-imports, no upward imports.

The layout is the design (docs/development.md): each subpackage is a layer and may import
only the layers below it. Read with ``ast``, so nothing is imported or run; imports inside
functions and under ``TYPE_CHECKING`` count like any other, because a lazy import is still a
dependency. Three kinds of violation, one line each:

- ``cycle``: modules that import each other, directly or through others;
- ``private``: a module importing another module's ``_name`` (``from .x import _y``, or
  ``x._y`` on an imported module): the interface is real, so name it or move the code;
- ``layer``: a lower layer importing a higher one (the trace format importing the lens).

Imports under ``if TYPE_CHECKING:`` (annotations only, never executed) are exempt from the cycle
rule, as PEP 484 intends them; the layer and private rules still apply to them.

One named exception to the layer rule: Jupyter finds a rich view as a method of the object
(``_repr_html_``), so a trace object's display hook may import the ``display`` layer inside
that method, and only there. It runs only when a notebook asks for HTML; the cycle it would
make is not counted either.

The viewer (``viewer/entropylens_viewer``) may use only the trace API and never torch.

Usage: ``python tools/check_layers.py [PACKAGE_DIR] [--viewer VIEWER_DIR]``; exit code 0 when
clean, 1 with the violations listed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

# Lowest first. A module may import its own layer and the layers before it. The top-level
# __init__ (lazy public names) and the one-release alias modules stand above every layer.
LAYERS = ("errors", "_version", "trace", "models", "lens", "recording", "analysis", "display", "cli")
BASE = {"errors", "_version"}  # the same layer: anything may import them
VIEWER_MAY_IMPORT = ("entropylens_hf.trace", "entropylens_hf.errors", "entropylens_hf._version")
VIEWER_MAY_IMPORT_NAMES = {"Trace", "TraceError", "TraceMetadata", "SequenceRecord", "__version__"}
VIEWER_FORBIDDEN = ("torch", "transformers")
DISPLAY_HOOKS = {"_repr_html_", "_repr_mimebundle_"}  # Jupyter's rich-display methods
DISPLAY_LAYER = "display"


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: ``source`` needs ``target`` (and, if any, ``name`` from it)."""

    source: str
    target: str
    name: str | None
    line: int
    typing_only: bool = False  # under ``if TYPE_CHECKING:``: not a cycle (never runs), still a layer rule
    display_hook: bool = False  # inside a ``_repr_html_`` method (see the module docstring)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_alias_module(tree: ast.Module) -> bool:
    """An old module path kept for one release: its body replaces itself in ``sys.modules``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Subscript) and ast.unparse(t.value) == "sys.modules"
                                                for t in node.targets):
            return True
    return False


def resolve(source: str, is_package: bool, module: str | None, level: int) -> str:
    if not level:
        return module or ""
    base = source.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(tree: ast.Module, source: str, is_package: bool, modules: set[str]) -> list[Import]:
    """Every dependency in one module, with ``from pkg import sub`` resolved to the submodule."""
    found: list[Import] = []
    bound: dict[str, str] = {}  # local name -> module it refers to
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for inner in ast.walk(node)}
    hooks = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name in DISPLAY_HOOKS
             for inner in ast.walk(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(source, alias.name, None, node.lineno, id(node) in typing_only, id(node) in hooks))
                if alias.asname:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            target = resolve(source, is_package, node.module, node.level)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    found.append(Import(source, sub, None, node.lineno, id(node) in typing_only, id(node) in hooks))
                    bound[alias.asname or alias.name] = sub
                else:
                    found.append(Import(source, target, alias.name, node.lineno, id(node) in typing_only,
                                        id(node) in hooks))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and _private(node.attr)):
            found.append(Import(source, bound[node.value.id], node.attr, node.lineno))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def layer_of(module: str, package: str) -> int | None:
    """Index in LAYERS, or None for the package's top (its __init__, aliases and entry points)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return -1 if parts[1] in BASE else LAYERS.index(parts[1])


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return cycles


def parse_package(root: Path) -> tuple[dict[str, ast.Module], dict[str, bool], set[str]]:
    trees: dict[str, ast.Module] = {}
    packages: dict[str, bool] = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        trees[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        packages[name] = path.name == "__init__.py"
    return trees, packages, set(trees)


def check_package(root: Path) -> list[str]:
    """Violations in the package at ``root`` (a folder with ``__init__.py``), one line each."""
    package = root.name
    trees, packages, modules = parse_package(root)
    problems: list[str] = []
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for source, tree in trees.items():
        if is_alias_module(tree):
            continue
        for imp in imports_of(tree, source, packages[source], modules):
            if imp.target not in modules:
                continue
            where = f"{source} (line {imp.line})"
            hook = imp.display_hook and imp.target.split(".")[1:2] == [DISPLAY_LAYER]
            if imp.target != source and not imp.typing_only and not hook:
                edges[source].add(imp.target)
            if imp.name and _private(imp.name) and imp.target != source:
                problems.append(f"private: {where} imports {imp.target}.{imp.name}; name the interface or move the code")
            low, high = layer_of(source, package), layer_of(imp.target, package)
            if low is not None and high is not None and high > low and not hook:
                problems.append(f"layer: {where} imports {imp.target}, a higher layer "
                                f"({LAYERS[high]} above {LAYERS[low] if low >= 0 else 'errors'})")
    # A package's __init__ re-exports its children; children importing their own package's
    # __init__ would make every package a cycle, so only cycles through real modules count.
    real = {s: {t for t in ts if not (packages[t] and s.startswith(t + "."))} for s, ts in edges.items()}
    for component in find_cycles(real):
        problems.append(f"cycle: {' <-> '.join(component)}")
    return problems


def check_viewer(root: Path) -> list[str]:
    """The viewer reads traces only through the trace API and never imports torch."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                pairs = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                pairs = [(node.module or "", alias.name) for alias in node.names]
            else:
                continue
            for target, name in pairs:
                where = f"{path.relative_to(root.parent)} (line {node.lineno})"
                if target.split(".")[0] in VIEWER_FORBIDDEN:
                    problems.append(f"viewer: {where} imports {target}; the viewer never imports torch or transformers")
                elif target == "entropylens_hf" and name not in VIEWER_MAY_IMPORT_NAMES:
                    problems.append(f"viewer: {where} imports entropylens_hf.{name}; use the trace API only")
                elif (target.startswith("entropylens_hf.")
                      and not any(target == ok or target.startswith(ok + ".") for ok in VIEWER_MAY_IMPORT)):
                    problems.append(f"viewer: {where} imports {target}; use the trace API only")
    return problems


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", type=Path, default=here / "entropylens_hf")
    parser.add_argument("--viewer", type=Path, default=None,
                        help="the viewer's package folder (default: viewer/entropylens_viewer beside the package)")
    args = parser.parse_args(argv)
    viewer = args.viewer or args.package.resolve().parent / "viewer" / "entropylens_viewer"
    problems = check_package(args.package.resolve())
    if viewer.is_dir():
        problems += check_viewer(viewer)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} violation(s) of the layering in docs/development.md", file=sys.stderr)
        return 1
    print(f"{args.package.name}: no cycles, no private cross-imports, no upward imports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
