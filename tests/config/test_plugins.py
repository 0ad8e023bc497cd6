"""Plugins: user modules register kinds; the command line imports them (--import, entry points),
runs record them, and every later command on a run imports them again in a fresh process."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyro_vae import PRIORS, ConfigError, Prior, load_config
from pyro_vae.nn.priors import StandardNormal

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_components.py"
SMALL = ["--set", "data.dataset=synthetic", "--set", "train.epochs=1", "--set", "model.latent_dim=2", "--quiet"]
CUSTOM = [
    "--set",
    "model.prior.kind=scaled_normal",
    "--set",
    "model.likelihood.kind=student_t",
    "--set",
    "data.binarize=none",
]


def cli(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pyro_vae.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_a_custom_prior_and_likelihood_through_every_command_in_fresh_processes(tmp_path):
    run = tmp_path / "run"
    r = cli("--import", str(EXAMPLE), "train", *SMALL, *CUSTOM, "--out", str(run), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(EXAMPLE) in (run / "config.toml").read_text()  # recorded by absolute path
    for args in (
        ["evaluate", str(run), "--iwae-samples", "5", "--json"],
        ["sample", str(run), "--out", "s.png"],
        ["plot", str(run)],
        ["train", "--resume", str(run), "--set", "train.epochs=2", "--quiet"],
    ):
        r = cli(*args, cwd=tmp_path)  # no --import: the run knows its plugins
        assert r.returncode == 0, (args, r.stderr)
    assert (tmp_path / "s.png").exists() and (run / "figures" / "learning_curves.png").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_module_plugin_missing_later_is_a_clear_error(tmp_path):
    (tmp_path / "my_parts.py").write_text(
        textwrap.dedent("""
        from pyro_vae import PRIORS
        from pyro_vae.nn.priors import StandardNormal

        @PRIORS.register("my_normal")
        class MyNormal(StandardNormal):
            pass
    """)
    )
    r = cli(
        "train", "--import", "my_parts", *SMALL, "--set", "model.prior.kind=my_normal", "--out", "run", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert cli("evaluate", "run", "--iwae-samples", "0", cwd=tmp_path).returncode == 0  # found beside the user
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = cli("evaluate", str(tmp_path / "run"), cwd=elsewhere)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "cannot import the plugin my_parts (ModuleNotFoundError" in r.stderr and "PYTHONPATH" in r.stderr
    r = cli("--import", "no_such_module", "train", *SMALL, cwd=tmp_path)
    assert r.returncode == 2 and "cannot import the plugin no_such_module" in r.stderr


def test_entry_point_plugins_load_in_every_command(tmp_path):
    site = tmp_path / "site"
    (site / "ep_parts-0.1.dist-info").mkdir(parents=True)
    (site / "ep_parts-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-parts\nVersion: 0.1\n")
    (site / "ep_parts-0.1.dist-info" / "entry_points.txt").write_text("[pyro_vae.plugins]\nparts = ep_parts\n")
    (site / "ep_parts.py").write_text(
        textwrap.dedent("""
        from pyro_vae import PRIORS
        from pyro_vae.nn.priors import StandardNormal

        @PRIORS.register("ep_normal")
        class EpNormal(StandardNormal):
            pass
    """)
    )
    env = {"PYTHONPATH": str(site)}
    r = cli("train", *SMALL, "--set", "model.prior.kind=ep_normal", "--out", "run", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert cli("evaluate", "run", "--iwae-samples", "0", cwd=tmp_path, env=env).returncode == 0


def test_registering_again_replaces_the_same_definition_and_refuses_another():
    class Twice(StandardNormal):
        """A notebook cell run twice defines a new class object of the same module and name."""

    PRIORS.register("twice_normal")(Twice)
    first = PRIORS.get("twice_normal")

    class Twice(StandardNormal):  # noqa: F811  the cell again
        pass

    PRIORS.register("twice_normal")(Twice)
    assert PRIORS.get("twice_normal") is Twice and Twice is not first

    class Other(Prior):
        pass

    with pytest.raises(ConfigError, match="'twice_normal' is already registered to .*Twice.*override=True"):
        PRIORS.register("twice_normal")(Other)
    PRIORS.register("twice_normal", override=True)(Other)
    assert PRIORS.get("twice_normal") is Other


def test_plugins_in_a_config_are_imported_before_its_kinds_are_read(tmp_path):
    (tmp_path / "cfg_parts.py").write_text(
        textwrap.dedent("""
        from pyro_vae import PRIORS
        from pyro_vae.nn.priors import StandardNormal

        @PRIORS.register("cfg_normal")
        class CfgNormal(StandardNormal):
            pass
    """)
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'plugins = ["{tmp_path / "cfg_parts.py"}"]\n[model]\nprior = {{ kind = "cfg_normal" }}\n')
    assert load_config(str(cfg))["model"]["prior"]["kind"] == "cfg_normal"
    for bad, message in (('"x"', "plugins must be a list"), ("[3]", "a plugin is a module name or a .py file")):
        with pytest.raises(ConfigError, match=message):
            load_config(overrides=[f"plugins={bad}"])


def test_every_built_in_kind_keeps_the_documented_contract():
    import inspect

    import pyro_vae as pv

    for registry, base, first in (
        (pv.PRIORS, pv.Prior, "latent_dim"),
        (pv.LIKELIHOODS, pv.Likelihood, "data_shape"),
        (pv.POSTERIORS, pv.Posterior, "in_features"),
        (pv.ENCODERS, pv.Encoder, "data_shape"),
        (pv.DECODERS, pv.Decoder, "latent_dim"),
        (pv.SCHEDULES, pv.Schedule, "steps_per_epoch"),
    ):
        for name in registry:
            cls = registry.get(name)
            assert issubclass(cls, base), (registry.what, name)
            assert next(iter(inspect.signature(cls).parameters)) == first, (registry.what, name)
            assert base.__doc__ and "subclass provides" in base.__doc__
