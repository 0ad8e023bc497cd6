"""The code passes ruff's lint (pyflakes, pycodestyle, import order) and is as ruff's formatter writes it
(pyproject.toml's [tool.ruff]), as CI runs them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="the lint needs pip install -e '.[dev]'")
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_ruff_format_changes_nothing():
    pytest.importorskip("ruff", reason="the format check needs pip install -e '.[dev]'")
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
