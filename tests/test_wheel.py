"""What a PyPI user installs is what we test: the wheel built from this checkout holds every subpackage, the
``py.typed`` marker and the licence, and trains from outside the checkout (nothing read from the source tree)."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_and_trains_away_from_the_checkout(tmp_path):
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("pyro_vae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "pyro_vae").rglob("__init__.py")}
    assert all(f"{p}/__init__.py" in names for p in packages), sorted(packages - {n.rsplit("/", 1)[0] for n in names})
    assert "pyro_vae/py.typed" in names and any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    script = (
        "import sys, pyro_vae, pyro_vae.cli\n"
        f"assert pyro_vae.__file__.startswith({str(site)!r}), pyro_vae.__file__\n"
        "sys.exit(pyro_vae.cli.main(['train', '--quiet', '--out', 'run', '--set', 'data.dataset=synthetic',"
        " '--set', 'train.epochs=1', '--set', 'model.latent_dim=2']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoint.pt").exists()
