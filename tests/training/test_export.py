"""Sharing a model: pyro-vae export writes one file; load_model rebuilds the VAE from it without data."""

import pytest
import torch

from pyro_vae import CheckpointError, ConfigError, load_model, train
from pyro_vae.cli import main

from ..conftest import small_config


@pytest.fixture(scope="module")
def run(tmp_path_factory, request):
    from pyro_vae import load_data

    folder = tmp_path_factory.mktemp("export") / "run"
    train(small_config(), folder, data=load_data("synthetic"), progress=False, log=lambda s: None)
    return folder


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_export_then_load_gives_the_same_model(run, tmp_path, capsys, name):
    if name.endswith(".safetensors"):
        pytest.importorskip("safetensors")
    path = tmp_path / "shared" / name  # the folder is created
    assert main(["export", str(run), str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    (cfg_a, a), (cfg_b, b) = load_model(run), load_model(path)
    assert cfg_a == cfg_b and a.data_shape == b.data_shape
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    torch.manual_seed(0)
    x = a.sample(4)
    torch.manual_seed(0)
    assert torch.equal(x, b.sample(4))
    assert main(["sample", str(path), "--out", str(tmp_path / "s.png")]) == 0  # sample straight from the file


def test_files_that_are_not_exported_models(run, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    for f, message in (
        ("junk.pt", "truncated, corrupt, or not a pyro-vae model file"),
        ("other.pt", "not a pyro-vae model file \\(export one with pyro-vae export"),
    ):
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path / f)
    with pytest.raises(ConfigError, match="is a folder: give a file name"):
        from pyro_vae.training.export import export_model

        export_model(run, tmp_path)
    assert main(["sample", str(tmp_path / "junk.pt")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
