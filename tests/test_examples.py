"""The examples, the example configs and README.md's Python run as a user runs them, with a tiny budget: a
renamed function or key breaks this test, not a user. An example or config added without an entry here
fails ``test_every_example_is_run``."""

import re
import tomllib
from pathlib import Path

import pytest
import torch

import pyro_vae
from pyro_vae import build_elbo, build_vae, load_config

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

#: each example's arguments for a run of seconds (examples/quick.toml, which the docs' gallery runs too)
QUICK = {
    f"{name}.py": table["args"] for name, table in tomllib.loads((ROOT / "examples" / "quick.toml").read_text()).items()
}
#: what each example's output must say
EXAMPLES = {
    "beta_vae.py": r"beta",
    "compare_estimators.py": r"dreg .*\n.*stl",
    "custom_components.py": r"learned prior scale: \d",
    "mnist_vae.py": r"test ELBO -\d+.*wrote",
    "semi_supervised.py": r"test accuracy of q\(y\|x\)",
    "stochastic_layers.py": r"two layers",
    "swap_prior_likelihood.py": r"flow prior .* -\d+\.\d\d",
}
#: each example config's data shape (its dataset's)
CONFIGS = {"mnist_iwae.toml": (1, 28, 28), "cifar10.toml": (3, 32, 32), "shapes.toml": (1, 32, 32)}


@pytest.fixture(scope="module")
def gallery(site):
    return site


def test_every_example_is_run():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXAMPLES) == sorted(QUICK)
    assert sorted(p.name for p in (ROOT / "examples" / "configs").glob("*.toml")) == sorted(CONFIGS)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_an_example_runs(name, gallery):
    """Each example ran in the documentation's gallery (its quick arguments, in the docs build of
    tests/test_docs.py: one run serves both); what it printed says what it must."""
    page = (ROOT / "docs" / "gallery" / name.replace(".py", ".md")).read_text()
    out = page[page.index("## Output") :]
    assert re.search(EXAMPLES[name], out, re.S), out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_an_example_config_builds_and_steps(name):
    """The config loads and validates, builds its model for its dataset's shape, and takes one step."""
    cfg = load_config(ROOT / "examples" / "configs" / name)
    shape = CONFIGS[name]
    vae = build_vae(cfg, shape)
    x = torch.rand(4, *shape)
    if cfg["data"]["binarize"] != "none":
        x = x.bernoulli()
    else:
        x = (x * 255).round() / 255  # 8-bit levels, as images are read
    elbo = build_elbo(cfg)
    loss = elbo.differentiable_loss(vae.model, vae.guide, x, num_data=100)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None or torch.isfinite(p.grad).all() for p in vae.parameters())


def readme_python():
    """The ```python blocks of README.md, then of the guide's pages, in order, each once; a block with ``...`` is a
    sketch of a class, not a program."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]
    blocks = [b for page in pages for b in re.findall(r"```python\n(.*?)```", page.read_text(), re.S) if "..." not in b]
    return list(dict.fromkeys(blocks))


def test_readme_python_runs(tmp_path, monkeypatch, capsys):
    """The README's program with MNIST cut to 512 training and 200 test images; then its model file line."""
    blocks = readme_python()
    assert len(blocks) == 2 and "build_vae" in blocks[0] and "load_model" in blocks[1]
    if not (SHARED_DATA / "MNIST").is_dir():
        pytest.skip(f"MNIST is not at {SHARED_DATA}")
    load = pyro_vae.load_data

    def small_mnist(*args, **kwargs):
        data = load(*args, **kwargs)
        return pyro_vae.Data(data.train[:512], data.test[:200], binarize=data.binarize)

    monkeypatch.setattr(pyro_vae, "load_data", small_mnist)
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the checkout (../shared/data)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    cfg = load_config(
        overrides=[
            "data.dataset=synthetic",
            "model.latent_dim=2",
            "model.encoder.hidden=[8]",
            "model.decoder.hidden=[8]",
            "train.epochs=1",
        ]
    )
    pyro_vae.train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    pyro_vae.export_model(tmp_path / "run", tmp_path / "model.safetensors")
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[1], "README.md", "exec"), namespace)
    assert namespace["cfg"]["model"]["latent_dim"] == 2 and namespace["vae"].latent_dim == 2
