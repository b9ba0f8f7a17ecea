"""The package's shape holds: layers import downwards only, no library module runs the `charnn`
command, no function grows past ~80 lines and no room past ~20% of the code."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "charnn"

# Lower layers never import higher ones (STYLE.md): cli -> (web, study) -> (inspect, train) ->
# subject -> (sample, evaluate, checkpoint) -> (data, stepper, cudagraph) -> (model, corpus, ...) -> transformer
# -> (vocab, config, files): the model module picks the family, the transformer is one of them. The web
# pages render what inspect computes, and the study's grid trains models, so they sit above inspect and
# train; the web pages never import training code. The Python API (api) sits under the command line,
# which calls it; the package's __init__ only re-exports the API, loading it when first asked for.
RANK = {"__init__": 9, "errors": -1, "log": -1, "files": 0, "config": 0, "vocab": 0, "brackets": 0, "documents": 0, "plots": 0,
        "curves": 0, "optim": 0,
        "transformer": 1, "devices": 1,
        "corpus": 2, "model": 2, "samplestats": 2, "distributed": 2,
        "data": 3, "stepper": 3, "cudagraph": 3,
        "sample": 4, "evaluate": 4, "checkpoint": 4,
        "subject": 5,
        "trainer": 6, "inspect": 6, "teach": 6,
        "study": 7, "web": 7,
        "attribution": 8, "api": 8,
        "cli": 9, "__main__": 10}


def _room(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):  # function-level imports count too
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("charnn"):
            parts = node.module.split(".")
            if len(parts) > 1:
                out.add(parts[1])
            else:  # from charnn import x
                out.update(a.name for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("charnn."))
    return out


def test_every_module_has_a_layer_and_imports_only_below_it():
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        room = _room(path)
        assert room in RANK, f"{path.relative_to(PKG)}: give its room a layer in RANK"
        for target in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if target != room and RANK[target] >= RANK[room]:
                wrong.append(f"{path.relative_to(PKG)} imports charnn.{target}")
    assert wrong == []


def test_the_web_pages_never_import_training_code():
    for path in (PKG / "web").rglob("*.py"):
        assert not {"trainer", "distributed", "study"} & _imports(ast.parse(path.read_text(encoding="utf-8"))), path


def test_no_library_module_runs_the_command_line():
    for path in PKG.rglob("*.py"):
        if _room(path) in ("cli", "__main__"):
            continue
        text = path.read_text(encoding="utf-8")
        assert "subprocess" not in text and '"-m", "charnn"' not in text, path


def test_functions_and_rooms_stay_readable():
    total, rooms, long = 0, {}, []
    for path in PKG.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        total += n
        rooms[_room(path)] = rooms.get(_room(path), 0) + n
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 85:
                long.append(f"{path.relative_to(PKG)}:{node.name}")
    assert long == []
    assert max(rooms.values()) <= 0.2 * total, rooms


def test_the_package_passes_its_linter():
    """ruff with the project's configuration (pyproject.toml): pyflakes, pycodestyle, bugbear, sorted
    imports; and the code as `ruff format` writes it."""
    import shutil
    import subprocess
    import sys

    ruff = Path(sys.executable).parent / "ruff"
    ruff = str(ruff) if ruff.exists() else shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    r = subprocess.run([ruff, "check", "src"], cwd=PKG.parents[1], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
    r = subprocess.run([ruff, "format", "--check", "src"], cwd=PKG.parents[1], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + "\n(run `ruff format src`)"


@pytest.mark.slow
def test_the_package_passes_its_type_checker():
    """mypy with the project's configuration (pyproject.toml [tool.mypy]) finds nothing in src/."""
    import shutil
    import subprocess
    import sys

    mypy = Path(sys.executable).parent / "mypy"
    mypy = str(mypy) if mypy.exists() else shutil.which("mypy")
    if mypy is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]' installs it)")
    r = subprocess.run([mypy], cwd=PKG.parents[1], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


def test_tests_share_helpers_through_one_module_and_leave_the_environment_as_they_found_it():
    """No test file imports another (shared helpers live in tests/helpers.py, fixtures in
    conftest.py), and none writes os.environ directly: monkeypatch or helpers.cache_at undo it."""
    import re

    tests = Path(__file__).parent
    for path in sorted(tests.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("test_"), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("test_") for a in node.names), path.name
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"os\.environ\[[^\]]+\]\s*=|os\.environ\.(pop|update|setdefault)\(", text), path.name


def test_every_mutant_still_finds_the_source_it_breaks():
    """scripts/mutants.py replaces exact source text: a refactor that moves it must move the mutant
    too, or `make mutants` silently tests nothing."""
    import importlib.util
    import sys

    path = PKG.parents[1] / "scripts" / "mutants.py"
    spec = importlib.util.spec_from_file_location("charnn_mutants", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    stale = [m.name for m in module.MUTANTS if (PKG / m.file).read_text(encoding="utf-8").count(m.old) != 1]
    assert stale == []
