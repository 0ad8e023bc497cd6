"""Files written by an earlier pyro-vae still load: ``tests/fixtures`` holds a run folder and an exported
model (a torch file and a safetensors file) written by commit b52d966, the last one before the package
took its layered shape, with reference outputs of the model they hold (``reference_v0.pt``)."""

import shutil
from pathlib import Path

import pytest
import torch

from pyro_vae import RunFolder, evaluate, load_model, load_run, train
from pyro_vae.training.folder import read_metrics

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
QUIET = dict(progress=False, log=lambda s: None)


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURES / "reference_v0.pt", weights_only=True)


def outputs(vae, reference):
    with torch.no_grad():
        return vae.likelihood.mean(vae.decode(reference["z"])), vae.q(reference["x"]).base_dist.loc


@pytest.mark.parametrize("source", ["run_v0", "model_v0.pt", "model_v0.safetensors"])
def test_an_old_run_and_old_model_files_give_the_same_model(source, reference):
    cfg, vae = load_model(FIXTURES / source)
    decoded, loc = outputs(vae, reference)
    torch.testing.assert_close(decoded, reference["decoded"], rtol=0, atol=0)
    torch.testing.assert_close(loc, reference["q_loc"], rtol=0, atol=0)
    assert cfg["seed"] == 3 and cfg["model"]["latent_dim"] == 2


def test_an_old_run_folder_evaluates_and_resumes(tmp_path, reference):
    cfg, vae, data = load_run(FIXTURES / "run_v0")
    result = evaluate(vae, data.test[:50], iwae_samples=5)
    assert result["log_px"] >= result["elbo"] - 1.0 and torch.isfinite(torch.tensor(result["elbo"]))
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run_v0", run)
    before = read_metrics(run / "metrics.jsonl")[0]
    assert RunFolder(run).read_status()["state"] == "finished"
    cfg["train"]["epochs"] = 2
    vae, history = train(cfg, run, resume=True, **QUIET)
    assert [r["epoch"] for r in history] == [1, 2] and history[0] == before[0]
    assert read_metrics(run / "metrics.jsonl")[0] == history
    assert RunFolder(run).read_status()["state"] == "finished"
