import os
import signal
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch

from pyro_vae import build_vae, load_config, load_data

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def default_signals():
    """Python's own SIGINT and SIGTERM handlers for every test, whatever the suite was started with (a script's
    background job starts with SIGINT ignored, and the processes a test starts would inherit that); the
    handlers found are put back after the test."""
    found = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in found.items():
        signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def registries_restored():
    """The kinds a test registers (its plugins, overrides) are removed after it, so no test sees another's."""
    from pyro_vae.registry import _BY_KEY

    saved = {key: (registry, dict(registry._entries), set(registry._hidden)) for key, registry in _BY_KEY.items()}
    yield
    for key, (registry, entries, hidden) in saved.items():
        registry._entries.clear()
        registry._entries.update(entries)
        registry._hidden.clear()
        registry._hidden.update(hidden)
        _BY_KEY[key] = registry


@pytest.fixture(autouse=True)
def fresh_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    pyro.clear_param_store()


def small_config(*overrides):
    """A small config on the synthetic 1x8x8 dataset."""
    return load_config(
        overrides=[
            "data.dataset=synthetic",
            "data.batch_size=50",
            "model.latent_dim=4",
            "model.encoder.hidden=[64]",
            "model.decoder.hidden=[64]",
            "train.epochs=1",
            "eval.iwae_samples=20",
            *overrides,
        ]
    )


@pytest.fixture
def synthetic():
    return load_data("synthetic", binarize="dynamic")


@pytest.fixture
def small_vae(synthetic):
    return build_vae(small_config(), synthetic.data_shape)


#: the checkout
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """The documentation built once per session (Sphinx -W, the gallery running every example)."""
    pytest.importorskip("sphinx", reason="the docs need pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("html")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out
