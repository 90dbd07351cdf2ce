"""The package's shape: what each module may import (the table in docs/architecture.md is the rule), no
import cycles, prediction free of training code, and functions short enough to read."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "mnist_kit"
DOC = REPO / "docs" / "architecture.md"
TRAINING = {"mnist_kit.engine", "mnist_kit.evaluate", "mnist_kit.trainlog", "mnist_kit.models", "mnist_kit.optim",
            "mnist_kit.checkpoint", "mnist_kit.runtime", "mnist_kit.distributed", "mnist_kit.logbook",
            "mnist_kit.graph"}
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, top_level_only: bool = False) -> set[str]:
    """The mnist_kit modules that module ``name`` imports (``from mnist_kit import x`` counts as importing
    the module ``mnist_kit.x`` if there is one, else the package)."""
    tree = ast.parse(MODULES[name].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mnist_kit")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist_kit"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found - {name}


def _rules() -> dict[str, set[str] | None]:
    """module -> the modules it may import (None: any), from the table in docs/architecture.md."""
    text = DOC.read_text()
    table = text.split("<!-- import-rules -->")[1].split("<!-- /import-rules -->")[0]
    rules = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        allowed = cells[2]
        names = re.findall(r"`([^`]+)`", cells[0])
        ok = None if allowed.startswith("anything") else {f"mnist_kit.{m}" if m != "mnist_kit" else m
                                                            for m in re.findall(r"`([^`]+)`", allowed)}
        for n in names:
            rules[n if n == "mnist_kit" else f"mnist_kit.{n}"] = ok
    return rules


def _allowed(module: str, rules) -> set[str] | None:
    if module in rules:
        return rules[module]
    for pattern, ok in rules.items():  # `data.*`: every module of the data package
        if pattern.endswith(".*") and module.startswith(pattern[:-1]):
            return ok
    raise KeyError(module)


def _expand(allowed: set[str]) -> set[str]:
    out = set()
    for a in allowed:
        out |= {m for m in MODULES if m.startswith(a[:-1])} if a.endswith(".*") else {a}
    return out


def test_every_module_is_in_the_table_and_imports_only_what_it_may():
    rules = _rules()
    problems = []
    for module in MODULES:
        try:
            allowed = _allowed(module, rules)
        except KeyError:
            problems.append(f"{module} is not in the import table of docs/architecture.md")
            continue
        if allowed is None:
            continue
        allowed = _expand(allowed) | ({m for m in MODULES if m.startswith(module.rsplit(".", 1)[0] + ".")}
                                      if module.startswith("mnist_kit.data.") else set())
        extra = sorted(_imports(module) - allowed)
        if extra:
            problems.append(f"{module} imports {', '.join(extra)}")
    assert not problems, "\n".join(problems)


def test_the_table_is_enforced_for_real():
    """The check above fails on a forbidden import (it would pass vacuously if the table were not read)."""
    rules = _rules()
    assert len(rules) >= 25
    assert "mnist_kit.deploy" not in " ".join(sorted(_allowed("mnist_kit.engine", rules)))
    assert _allowed("mnist_kit.cli", rules) is None


def test_nothing_imports_the_cli():
    users = [m for m in MODULES if "mnist_kit.cli" in _imports(m) and m != "mnist_kit.__main__"]
    assert users == []


@pytest.mark.parametrize("module", ["mnist_kit.models", "mnist_kit.optim", *[m for m in MODULES
                                                                            if m.startswith("mnist_kit.data")]])
def test_models_data_and_optim_know_nothing_of_training(module):
    assert not _imports(module) & (TRAINING - {"mnist_kit.runtime"}), _imports(module)


def test_engine_imports_nothing_from_deploy_and_deploy_nothing_from_the_engine():
    assert not [m for m in _imports("mnist_kit.engine") if m.startswith("mnist_kit.deploy")]
    for module in (m for m in MODULES if m.startswith("mnist_kit.deploy")):
        assert "mnist_kit.engine" not in _imports(module), module
    assert "mnist_kit.evaluate" in _imports("mnist_kit.deploy.export")


def _closure(start: str) -> set[str]:
    """Every mnist_kit module that importing ``start`` runs (module-level imports and parent packages)."""
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m in seen or m not in MODULES:
            continue
        seen.add(m)
        parents = [m.rsplit(".", i)[0] for i in range(1, m.count(".") + 1)]
        todo += [*_imports(m, top_level_only=True), *parents]
    return seen


def test_predict_imports_no_training_code():
    for start in ("mnist_kit.deploy.predict", "mnist_kit.deploy.serve", "mnist_kit.deploy.inference",
                  "mnist_kit.deploy.preprocess"):
        assert not _closure(start) & TRAINING, sorted(_closure(start) & TRAINING)
    # and for real, in a fresh interpreter: paddle too is left for the moment a model is loaded
    code = ("import sys, mnist_kit.deploy.predict, mnist_kit.deploy.serve; "
            "print(sorted(m for m in sys.modules if m.startswith(('mnist_kit', 'paddle'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not any(m in loaded for m in [f"'{t}'" for t in TRAINING] + ["'paddle'"]), loaded


def _cycles() -> list[list[str]]:
    graph = {m: sorted(_imports(m) & set(MODULES)) for m in MODULES}
    found, state, path = [], {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in graph[m]:
            if state.get(n) == "open":
                found.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m)
    return found


def test_no_import_cycles():
    """Counting imports inside functions too: a lazy import is still a dependency."""
    assert _cycles() == []


def test_the_cycle_check_finds_a_cycle(monkeypatch):
    """Made to see one, the check reports it (a check that cannot fail proves nothing)."""
    real = _imports

    def with_cycle(name, top_level_only=False):
        extra = {"mnist_kit.engine"} if name == "mnist_kit.checkpoint" else set()
        return real(name, top_level_only) | extra

    monkeypatch.setitem(globals(), "_imports", with_cycle)
    assert any("mnist_kit.checkpoint" in c and "mnist_kit.engine" in c for c in _cycles())


def test_functions_are_short_enough_to_read():
    """No function over MAX_FUNCTION_LINES lines, unless a ``# long:`` comment in it says why."""
    long = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                body = lines[node.lineno - 1:node.end_lineno]
                if n > MAX_FUNCTION_LINES and not any("# long:" in line for line in body):
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, long


def _declared_minimum() -> str:
    text = (REPO / "pyproject.toml").read_text()
    return re.search(r'requires-python\s*=\s*">=\s*(\d+\.\d+)"', text).group(1)


def test_no_language_or_library_feature_newer_than_the_declared_python():
    """vermin knows which Python version introduced each syntax form and standard-library name."""
    minimum = _declared_minimum()
    vermin = str(Path(sys.executable).parent / "vermin")  # it has no ``python -m`` entry point
    proc = subprocess.run([vermin, f"-t={minimum}-", "--violations", "--no-tips", str(PACKAGE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_annotations_are_never_evaluated():
    """``str | None`` in an annotation is a TypeError at import on Python 3.9 unless annotations stay strings:
    every module with annotations starts with ``from __future__ import annotations`` (vermin's own check for
    this ignores that import)."""
    missing = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        annotated = any(isinstance(n, ast.AnnAssign) or (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                                                          and (n.returns or any(a.annotation for a in n.args.args)))
                        for n in ast.walk(tree))
        future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                     and any(a.name == "annotations" for a in n.names) for n in tree.body)
        if annotated and not future:
            missing.append(name)
    assert not missing, missing
