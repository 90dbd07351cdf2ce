"""The package's shape: what each module may import (the table in docs/architecture.md is the rule), no
import cycles, prediction free of training code, and functions short enough to read."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

PACKAGE = REPO / "mnist_kit"
DOC = REPO / "docs" / "architecture.md"
# what training is: the modules that importing prediction or serving must not load
TRAINING = {"mnist_kit.training", "mnist_kit.evaluation.scoring", "mnist_kit.models.networks",
            "mnist_kit.models.losses", "mnist_kit.models.optim", "mnist_kit.models.onednn",
            "mnist_kit.experiments.checkpoint", "mnist_kit.backend.runtime", "mnist_kit.backend.distributed",
            "mnist_kit.logbook.writer", "mnist_kit.logbook.graph"}
MAX_FUNCTION_LINES = 50
MAX_MODULE_LINES = 400
# The modules allowed to be longer, each with its length when last measured (growing past it fails) and why
LONG_MODULES: dict[str, tuple[int, str]] = {}  # none since the config and the CLI became packages (issue 41)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def package_of(module: str) -> str:
    """``mnist_kit.training.engine`` -> ``train``; a top-level module (``mnist_kit.cli``) is its own unit."""
    parts = module.split(".")
    return "mnist_kit" if len(parts) == 1 else parts[1]


def _is_training(module: str) -> bool:
    return any(module == t or module.startswith(t + ".") for t in TRAINING)


def _typing_blocks(tree: ast.AST) -> list[ast.If]:
    """The ``if TYPE_CHECKING:`` blocks: imports for annotations only, never run."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.If) and isinstance(n.test, ast.Name)
            and n.test.id == "TYPE_CHECKING"]


def _imports(name: str, top_level_only: bool = False, typing_only: bool = False) -> set[str]:
    """The mnist_kit modules that module ``name`` imports when it runs (``from mnist_kit.x import y`` counts as
    importing the module ``mnist_kit.x.y`` if there is one, else ``mnist_kit.x``); with ``typing_only``, those
    it imports for annotations only (under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(MODULES[name].read_text())
    typing = {id(n) for block in _typing_blocks(tree) for stmt in block.body for n in ast.walk(stmt)}
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    nodes = [n for n in nodes if (id(n) in typing) == typing_only]
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
    """package -> the packages it may import (None: any), from the table in docs/architecture.md."""
    text = DOC.read_text()
    table = text.split("<!-- import-rules -->")[1].split("<!-- /import-rules -->")[0]
    rules = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        name = re.findall(r"`([^`/]+)/?`", cells[0])[0]
        rules[name] = None if cells[2].startswith("anything") else set(re.findall(r"`([^`/]+)/?`", cells[2]))
    return rules


def _package_imports() -> dict[str, set[str]]:
    """package -> the other packages its modules import."""
    out: dict[str, set[str]] = {}
    for module in MODULES:
        mine = package_of(module)
        out.setdefault(mine, set()).update(package_of(m) for m in _imports(module) if package_of(m) != mine)
    return out


def test_every_package_is_in_the_table_and_imports_only_what_it_may():
    rules = _rules()
    problems = []
    for package, used in sorted(_package_imports().items()):
        if package not in rules:
            problems.append(f"{package} is not in the import table of docs/architecture.md")
        elif rules[package] is not None and used - rules[package]:
            offenders = sorted(f"{m} imports {i}" for m in MODULES if package_of(m) == package
                               for i in _imports(m) if package_of(i) in used - rules[package])
            problems.append(f"{package} may not import {', '.join(sorted(used - rules[package]))}: "
                            + "; ".join(offenders))
    assert not problems, "\n".join(problems)
    assert not set(rules) - set(_package_imports()), "the table names packages that do not exist"


def test_imports_for_annotations_name_only_the_config():
    """A lower layer (data, models, deploy) takes the config's typed sections as arguments and names their
    classes in annotations, imported under ``if TYPE_CHECKING:`` (never run, so no layer is crossed at run
    time); nothing else is imported that way."""
    typing = {m: _imports(m, typing_only=True) for m in MODULES if m != "mnist_kit"}  # the root re-exports the API
    assert {i for found in typing.values() for i in found} == {"mnist_kit.config"}, typing
    assert typing["mnist_kit.models.optim"] == {"mnist_kit.config"}  # the check sees them


def test_the_table_is_enforced_for_real():
    """The check above fails on a forbidden import (it would pass vacuously if the table were not read)."""
    rules = _rules()
    assert len(rules) >= 12
    assert "deploy" not in rules["training"] and "training" not in rules["deploy"]
    assert rules["cli"] is None


def test_every_package_says_what_it_owns_and_may_import():
    for module, path in MODULES.items():
        if path.name == "__init__.py" and module != "mnist_kit":
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert len(doc) > 200 and "May import" in doc, f"{module}: its docstring says too little"


def test_config_takes_from_models_only_plain_python():
    """The config reads the registry's names and the CNN's geometry; importing it must not import paddle."""
    light = {"mnist_kit.models.registry", "mnist_kit.models.blocks"}
    used = {i for m in MODULES if package_of(m) == "config" for i in _imports(m)}
    assert {m for m in used if package_of(m) == "models"} == light
    for module in light:
        tree = ast.parse(MODULES[module].read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert imported <= {"__future__", "importlib"}, (module, imported)


def test_nothing_imports_the_cli():
    users = [m for m in MODULES if "mnist_kit.cli" in _imports(m) and m != "mnist_kit.__main__"]
    assert users == []


@pytest.mark.parametrize("module", [m for m in MODULES if package_of(m) in ("models", "data", "backend", "util")])
def test_models_data_backend_and_util_know_nothing_of_training(module):
    used = {package_of(m) for m in _imports(module)}
    assert not used & {"training", "evaluation", "experiments", "logbook", "deploy"}


def test_training_imports_nothing_from_deploy_and_deploy_nothing_from_training():
    imports = _package_imports()
    assert "deploy" not in imports["training"] and "training" not in imports["deploy"]
    assert "mnist_kit.evaluation.scoring" in _imports("mnist_kit.deploy.export")  # export checks through evaluate


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
    for start in ("mnist_kit.deploy.predict", "mnist_kit.deploy.serve", "mnist_kit.deploy.app",
                  "mnist_kit.deploy.inference", "mnist_kit.deploy.preprocess"):
        assert not [m for m in _closure(start) if _is_training(m)], sorted(_closure(start))
    # and for real, in a fresh interpreter: paddle too is left for the moment a model is loaded
    code = ("import sys, mnist_kit.deploy.predict, mnist_kit.deploy.serve; "
            "print(sorted(m for m in sys.modules if m.startswith(('mnist_kit', 'paddle'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not any(_is_training(m) or m == "paddle" for m in ast.literal_eval(loaded)), loaded


def _cycles(graph=None) -> list[list[str]]:
    graph = graph or {m: sorted(_imports(m) & set(MODULES)) for m in MODULES}
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
    """Counting imports inside functions too: a lazy import is still a dependency. Between packages too: the
    packages are layers."""
    assert _cycles() == []
    assert _cycles({p: sorted(used) for p, used in _package_imports().items()}) == []


def test_the_cycle_check_finds_a_cycle(monkeypatch):
    """Made to see one, the check reports it (a check that cannot fail proves nothing)."""
    real = _imports

    def with_cycle(name, top_level_only=False):
        extra = {"mnist_kit.training.engine"} if name == "mnist_kit.experiments.checkpoint" else set()
        return real(name, top_level_only) | extra

    monkeypatch.setitem(globals(), "_imports", with_cycle)
    assert any("mnist_kit.experiments.checkpoint" in c and "mnist_kit.training.engine" in c for c in _cycles())


def _function_lengths() -> dict[str, int]:
    out = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
    return out


def test_modules_and_functions_are_short_enough_to_read():
    """No module over MAX_MODULE_LINES lines and no function over MAX_FUNCTION_LINES, but the exceptions named
    in LONG_MODULES, each with its size when it was measured: an exception that grows fails too."""
    problems = []
    for name, path in MODULES.items():
        n = len(path.read_text().splitlines())
        if n > LONG_MODULES.get(name, (MAX_MODULE_LINES, ""))[0]:
            problems.append(f"{name}: {n} lines")
    problems += [f"{name}: {n} lines" for name, n in _function_lengths().items() if n > MAX_FUNCTION_LINES]
    assert not problems, problems
    assert all(name in MODULES for name in LONG_MODULES), "an exception names a module that is gone"


def test_the_code_passes_ruff_and_mypy():
    """ruff (pyflakes, pycodestyle, import order; line length 120) on the package, tests and scripts, and mypy
    on the package, with the settings in pyproject.toml."""
    bin_ = Path(sys.executable).parent
    for argv in ([bin_ / "ruff", "check", "--no-cache", "mnist_kit", "tests", "scripts"],
                 [bin_ / "mypy", "--no-incremental", "--cache-dir", "/dev/null"]):
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_no_test_module_imports_another_or_changes_sys_path():
    """What tests share is in tests/helpers.py (and fixtures in conftest.py); scripts are loaded by path."""
    problems = []
    for path in sorted((REPO / "tests").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            problems += [f"{path.name} imports {n}" for n in names if n.startswith(("test_", "conftest"))]
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("insert", "append") and ast.unparse(node.func.value) == "sys.path"):
                problems.append(f"{path.name} changes sys.path")
    assert not problems, problems


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
