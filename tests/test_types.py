"""The public API is typed (``py.typed``): every public function of ``pyro_vae`` annotates its parameters and
return, and mypy finds the annotations consistent with the code of the modules that define them."""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import pyro_vae

ROOT = Path(__file__).resolve().parents[1]


def public_functions():
    return {name: getattr(pyro_vae, name) for name in pyro_vae.__all__ if inspect.isfunction(getattr(pyro_vae, name))}


def test_every_public_function_is_annotated():
    missing = []
    for name, fn in public_functions().items():
        sig = inspect.signature(fn)
        missing += [f"{name}({p})" for p in sig.parameters.values() if p.annotation is inspect.Parameter.empty]
        if sig.return_annotation is inspect.Signature.empty:
            missing.append(f"{name} -> ?")
    assert not missing, missing
    assert (ROOT / "pyro_vae" / "py.typed").exists()


def test_mypy_accepts_the_public_modules():
    pytest.importorskip("mypy", reason="the type check needs pip install -e '.[dev]'")
    modules = sorted(
        {Path(sys.modules[fn.__module__].__file__).relative_to(ROOT).as_posix() for fn in public_functions().values()}
        | {"pyro_vae/aliases.py"}
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--follow-imports=skip",
            "--ignore-missing-imports",
            "--no-incremental",
            *modules,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
