"""The package's shape as a checked contract: layers that import only downward, and no import cycles.

Every import in ``pyro_vae`` (module level or inside a function: both run) is read from the source.
A module belongs to the layer of its subpackage (``pyro_vae/nn/priors.py``: ``nn``) or, at the top,
of its own name (``errors``: the ground). A layer may import from itself and the layers before it
in ``LAYERS``; ``FORBIDDEN`` adds pairs that must stay apart although the order would allow them.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_vae"

#: lowest first; a layer imports only from itself and the layers before it
LAYERS = [
    {"errors", "checks", "files", "registry", "work", "devices", "aliases"},  # the ground
    {"nn"},  # components: priors, likelihoods, posteriors, networks, distributions
    {"data"},  # datasets in memory and read from disk
    {"models"},  # the families: vae, cvae/m2, gmvae, hierarchical, linear-Gaussian
    {"infer"},  # estimators, objectives, compiled steps, diagnostics, schedules, optimisers
    {"evaluation"},  # metrics and figures of a model
    {"config"},  # defaults, validation, TOML and --set, plugins, config -> objects
    {"training"},  # the loop, the run folder, checkpoints, callbacks, torchrun, export
    {"studies"},  # compare and sweep: many runs
    {"cli", "__main__", "__init__"},  # the command line and the public API
]
#: (importer, imported) layers that stay apart: inference is model-agnostic, as Pyro's is
FORBIDDEN = {("infer", "models"), ("infer", "data")}


def module_name(path, root):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([root.name, *parts])


def layer_of(module):
    """The layer name of a dotted module of the package: its subpackage, or its own name at the top."""
    parts = module.split(".")[1:]
    return parts[0] if parts else "__init__"


def imports_of(path, root):
    """[(line, imported module)] of one file: absolute names of the package's modules it imports."""
    name = module_name(path, root)
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == root.name]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != root.name:
                continue
            for a in node.names:  # `from pkg import sub` imports the submodule sub where there is one
                sub = f"{target}.{a.name}"
                is_module = (root.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    root.parent / Path(*sub.split(".")) / "__init__.py"
                ).exists()
                found.append((node.lineno, sub if is_module else target))
    return found


def check(root):
    """The contract's breaches under the package folder ``root``: a list of lines, empty if it holds."""
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    problems, graph = [], {}
    for path in sorted(root.rglob("*.py")):
        src = module_name(path, root)
        mine = layer_of(src)
        if mine not in rank:
            problems.append(
                f"{path.relative_to(root.parent)}: {mine!r} is in no layer of tests/test_layers.py: put it in one"
            )
            continue
        for line, target in imports_of(path, root):
            theirs = layer_of(target)
            graph.setdefault(src, set()).add(target)
            where = f"{path.relative_to(root.parent)}:{line} imports {target}"
            if theirs in rank and rank[theirs] > rank[mine]:
                problems.append(
                    f"{where}: an upward import ({mine} may import only from "
                    f"{', '.join(sorted(n for n in rank if rank[n] <= rank[mine]))})"
                )
            if (mine, theirs) in FORBIDDEN:
                problems.append(f"{where}: {mine} must not import {theirs}")
    problems += [f"an import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph):
    """Each import cycle once, as a list of modules that returns to its first (a depth-first search).
    A package's ``__init__`` that imports its own members is not a cycle with them: a member imports
    its siblings, never the package's ``__init__`` (absent from the graph's targets unless named)."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_package_keeps_its_layers_and_has_no_import_cycles():
    problems = check(PACKAGE)
    assert not problems, "\n".join(problems)


@pytest.fixture
def copy_of_package(tmp_path):
    root = tmp_path / "pyro_vae"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _append(path, line):
    path.write_text(path.read_text() + "\n" + line + "\n")


def test_an_upward_import_fails_the_contract_with_the_import_named(copy_of_package):
    _append(copy_of_package / "nn" / "priors.py", "from ..training.folder import RunFolder  # added")
    problems = check(copy_of_package)
    assert len(problems) == 1
    assert "pyro_vae/nn/priors.py:" in problems[0] and "imports pyro_vae.training.folder" in problems[0]
    assert "an upward import" in problems[0]


def test_a_function_level_import_and_a_forbidden_pair_are_caught(copy_of_package):
    _append(copy_of_package / "models" / "vae.py", "def late():\n    from ..config import build  # added")
    _append(copy_of_package / "infer" / "estimators.py", "from ..models.vae import VAE  # added")
    problems = check(copy_of_package)
    assert any("models/vae.py" in p and "pyro_vae.config.build" in p for p in problems)
    assert any("infer/estimators.py" in p and "infer must not import models" in p for p in problems)


def test_a_cycle_inside_one_layer_fails_the_contract(copy_of_package):
    _append(copy_of_package / "checks.py", "from .work import per_point  # added")  # work imports errors only...
    _append(copy_of_package / "errors.py", "from . import checks  # added")  # ...and checks imports errors
    problems = check(copy_of_package)
    assert any(
        p.startswith("an import cycle:") and "pyro_vae.errors" in p and "pyro_vae.checks" in p for p in problems
    ), problems


def test_a_new_folder_must_be_given_a_layer(copy_of_package):
    (copy_of_package / "samplers").mkdir()
    (copy_of_package / "samplers" / "__init__.py").write_text("")
    assert any("'samplers' is in no layer" in p for p in check(copy_of_package))


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module of the package, imported first (``python -c "import pyro_vae.training.folder"``), loads: no
    order of first imports meets a partly loaded module (the lazy ``pyro_vae.__getattr__`` once imported the whole
    API from inside ``from .. import checks`` and broke every ``config`` and ``training`` module imported first).
    One interpreter keeps torch loaded and forgets the package between modules, as a fresh one would not have it."""
    modules = sorted(module_name(p, PACKAGE) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")
    script = (
        "import sys, importlib, traceback\n"
        "import torch, pyro\n"
        "failed = []\n"
        f"for name in {modules!r}:\n"
        "    for key in [k for k in sys.modules if k == 'pyro_vae' or k.startswith('pyro_vae.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc().strip().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert len(modules) > 40
