"""The package's imports only run downward (``lunglesionai.core.layers``) and form no cycle.

Every module's imports are read from its AST, those inside functions included, so a late import cannot hide an
upward dependency or a cycle. A tiny package built in a temporary folder shows that a planted upward import and a
planted cycle are caught, with file and line.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lunglesionai
from lunglesionai.core import layers

PACKAGE_DIR = Path(lunglesionai.__file__).resolve().parent


def _modules(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its ``__init__``)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join([package, *parts])] = path
    return found


def _imports(path: Path, module: str, modules: dict[str, Path], package: str) -> list[tuple[str, int]]:
    """(imported module of the package, line) for every import in ``path``, at any depth of the AST."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # "from pkg import submodule" imports the submodule; "from pkg.mod import name" the module
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target.split(".")[0] == package:
                found.append((target, node.lineno))
    return found


def _room(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return layers.ROOT_MODULES["__init__"]
    return layers.ROOT_MODULES.get(parts[0], parts[0])


def upward_imports(package_dir: Path, package: str) -> list[str]:
    """One line ``file:line: module (room) imports target (room)`` per import the layer table forbids."""
    modules = _modules(package_dir, package)
    problems = []
    for module, path in modules.items():
        for target, line in _imports(path, module, modules, package):
            importer, imported = _room(module), _room(target)
            if not layers.allowed(importer, imported):
                problems.append(f"{path}:{line}: {module} ({importer}) imports {target} ({imported})")
    return problems


def import_cycles(package_dir: Path, package: str) -> list[str]:
    """One line per import cycle (a strongly connected set of modules), naming each edge's file and line."""
    modules = _modules(package_dir, package)
    edges = {m: {} for m in modules}
    for module, path in modules.items():
        for target, line in _imports(path, module, modules, package):
            if target != module and not module.startswith(target + "."):  # a package's own __init__ is no cycle
                edges[module].setdefault(target, f"{path}:{line}")
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                members = set(component)
                where = [f"{a} -> {b} ({edges[a][b]})" for a in sorted(members) for b in edges[a] if b in members]
                cycles.append("cycle: " + "; ".join(where))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules)))
    for v in modules:
        if v not in index:
            connect(v)
    return cycles


def test_every_room_of_the_package_is_in_the_layer_table():
    rooms = {p.name for p in PACKAGE_DIR.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE_DIR.glob("*.py")} - set(layers.ROOT_MODULES)
    for room in rooms | modules:
        layers.level_of(room)  # KeyError names a room the table lacks


def test_no_import_runs_upward():
    assert upward_imports(PACKAGE_DIR, "lunglesionai") == []


def test_no_import_cycle():
    assert import_cycles(PACKAGE_DIR, "lunglesionai") == []


def test_table_rules():
    assert layers.allowed("stages", "core") and layers.allowed("app", "training")
    assert not layers.allowed("core", "io") and not layers.allowed("stages", "evaluation")
    assert layers.allowed("datasets", "io") and not layers.allowed("io", "datasets")
    assert not layers.allowed("nets", "synth")  # same level, not listed
    with pytest.raises(KeyError, match="kitchen"):
        layers.level_of("kitchen")


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_a_planted_upward_import_and_cycle_are_found(tmp_path):
    package = tmp_path / "tinypkg"
    _write(package, {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/volume.py": "def f():\n    from tinypkg.app import cli  # hidden in a function\n    return cli\n",
        "core/a.py": "from . import b\n",
        "core/b.py": "def g():\n    from tinypkg.core.a import b\n",
        "app/__init__.py": "",
        "app/cli.py": "from tinypkg.core import volume\nfrom ..core.volume import f\n",
    })
    problems = upward_imports(package, "tinypkg")
    assert problems == [f"{package / 'core' / 'volume.py'}:2: tinypkg.core.volume (core) imports tinypkg.app.cli (app)"]
    cycles = import_cycles(package, "tinypkg")
    assert len(cycles) == 2  # core.a <-> core.b, and the planted upward import closes core.volume <-> app.cli
    ab = next(c for c in cycles if "tinypkg.core.a -> tinypkg.core.b" in c)
    assert f"{package / 'core' / 'b.py'}:2" in ab


def test_the_package_root_and_vocabulary_import_nothing_but_the_standard_library():
    code = ("import sys\nimport lunglesionai\nfrom lunglesionai.core import layers, vocabulary\n"
            "print(sorted(m for m in ('numpy', 'torch', 'SimpleITK', 'monai') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_report_comparison_ignores_only_timings_and_version(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Testing/, where compare_reports.py lives
    from compare_reports import differences

    before = {"timings_s": {"a": 1.0}, "software": {"version": "1", "models": []}, "findings": [{"id": "N1", "x": 1}]}
    after = {"timings_s": {"a": 2.0}, "software": {"version": "2", "models": []}, "findings": [{"id": "N1", "x": 1}]}
    assert differences(before, after) == []
    after["findings"][0]["x"] = 2
    after["software"]["models"] = [{"name": "m"}]
    assert differences(before, after) == ["findings[0].x: 1 -> 2", "software.models: 0 items -> 1 items"]
