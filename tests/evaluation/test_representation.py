"""The study columns of what codes hold (ELBO surgery, MIG, DCI), latent traversals, and the sweep's figure."""

import csv
import json
import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import Laplace

from pyro_vae import Data, build_vae, sweep
from pyro_vae.cli import main
from pyro_vae.evaluation.plots import traversal_codes
from pyro_vae.evaluation.representation import (
    FACTOR_COLUMNS,
    SURGERY_COLUMNS,
    factor_columns,
    representation_columns,
    surgery_columns,
)
from pyro_vae.evaluation.surgery import model_surgery

from ..conftest import small_config


def test_surgery_columns_for_the_models_that_have_them(synthetic):
    cfg = small_config()
    vae = build_vae(cfg, synthetic.data_shape)
    x = synthetic.test[:300]
    cols = surgery_columns(vae, x, points=100)
    assert set(cols) == set(SURGERY_COLUMNS)
    r = model_surgery(vae, x, points=100)  # the same draws: q(z) over all 300, codes of the first 100
    assert cols == {k: r[k] for k in SURGERY_COLUMNS}
    assert cols["marginal_kl"] == pytest.approx(cols["total_correlation"] + cols["dimensionwise_kl"], abs=1e-5)
    assert 0 <= cols["mutual_information"] <= math.log(300) + 1e-6
    assert surgery_columns(vae, x, points=0) == {}
    for other in (
        ["model.kind=hierarchical", "model.layers=[{latent_dim=2}]"],  # two latent sites
        ["model.kind=gmvae"],  # a mixture posterior
        ["model.posterior={kind='flow'}"],
        ["model.prior={kind='mixture'}"],  # a prior that does not factorise
    ):
        assert surgery_columns(build_vae(small_config(*other), synthetic.data_shape), x) == {}, other


class Codes(torch.nn.Module):
    """A stand-in model whose posterior means are given: q(z|x) = N(x, 0.01^2), x the codes themselves."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def q(self, x):
        return dist.Normal(x, 0.01).to_event(1)


def test_factor_columns_on_known_codes():
    g = torch.Generator().manual_seed(0)
    levels = torch.stack([torch.randint(0, 6, (2000,), generator=g), torch.randint(0, 10, (2000,), generator=g)], 1)
    same = factor_columns(Codes(), levels.float(), levels)  # each factor in a code of its own
    assert set(same) == set(FACTOR_COLUMNS)
    assert same["mig"] > 0.95 and same["dci_disentanglement"] > 0.95 and same["dci_informativeness"] > 0.95
    rotation = torch.tensor([[0.6, 0.8], [-0.8, 0.6]])
    mixed = factor_columns(Codes(), (levels.float() / levels.float().std(0)) @ rotation, levels)
    assert mixed["mig"] < same["mig"] - 0.3 and mixed["dci_disentanglement"] < same["dci_disentanglement"] - 0.3
    assert factor_columns(Codes(), levels.float(), levels[:, 0]) == {}  # class labels are not factors
    assert factor_columns(Codes(), levels.float(), None) == {}


def test_representation_columns_on_shapes():
    from pyro_vae import load_data

    data = load_data("shapes", image_size=16, test_size=300)
    cfg = small_config("model.latent_dim=3", "eval.surgery=100")
    vae = build_vae(cfg, data.data_shape)
    cols = representation_columns(vae, data, cfg)
    assert set(cols) == set(SURGERY_COLUMNS) | set(FACTOR_COLUMNS)
    assert all(math.isfinite(v) for v in cols.values())
    assert 0 <= cols["mig"] <= 1 and 0 <= cols["dci_disentanglement"] <= 1


@pytest.mark.parametrize("prior, edge", [("standard_normal", 2.326), ("laplace", math.log(50))])
def test_traversals_move_each_active_dimension_over_its_prior(synthetic, prior, edge):
    """Rows: the active dimensions; each moves z_j from the prior's 1% to its 99% quantile (N(0, 1): +-2.326;
    Laplace(0, 1): +-log 50) with the others at the first point's posterior mean."""
    vae = build_vae(small_config("model.latent_dim=4", f"model.prior={{kind='{prior}'}}"), synthetic.data_shape)
    x = synthetic.test[:200]
    with torch.no_grad():  # means that vary over x (an untrained encoder's hardly do), but dimension 2's
        vae.posterior.linear.weight[:4].mul_(30)
        vae.posterior.linear.weight[2].zero_()
    z, order, active = traversal_codes(vae, x, steps=5)
    assert active == 3 and sorted(order) == [0, 1, 3] and z.shape == (3, 5, 4)
    mean0 = vae.q(x[:1]).mean[0]
    for row, j in enumerate(order):
        assert z[row, 0, j] == pytest.approx(-edge, abs=0.1) and z[row, -1, j] == pytest.approx(edge, abs=0.1)
        others = [k for k in range(4) if k != j]
        torch.testing.assert_close(z[row][:, others], mean0[others].expand(5, 3))
    assert isinstance(vae.prior(1).base_dist, Laplace) == (prior == "laplace")


def test_the_sweep_on_shapes_writes_the_columns_and_the_figure(tmp_path):
    rows = sweep(
        None,
        [
            "data.dataset=shapes",
            "data.image_size=16",
            "data.binarize=none",
            "data.test_size=300",
            "data.batch_size=64",
            "model.latent_dim=3",
            "model.encoder.hidden=[32]",
            "model.decoder.hidden=[32]",
            "train.max_steps=5",
            "eval.surgery=100",
            "train.elbo.kind=jit_meanfield,beta_tc",
            "train.beta=1,4",
        ],
        tmp_path / "sweep",
        progress=False,
        log=lambda *a: None,
    )
    assert len(rows) == 4 and all(set(SURGERY_COLUMNS) | set(FACTOR_COLUMNS) <= set(r) for r in rows)
    with open(tmp_path / "sweep" / "sweep.csv") as f:
        assert set(FACTOR_COLUMNS) <= set(next(csv.DictReader(f)))
    assert (tmp_path / "sweep" / "disentanglement.png").stat().st_size > 10000


def test_evaluate_and_plot_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--set", "data.dataset=synthetic", "--set", "model.latent_dim=3", "--set", "train.epochs=1"]
    assert main(["train", *args, "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--iwae-samples", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(SURGERY_COLUMNS) <= set(result) and "mig" not in result  # synthetic labels are classes
    assert main(["evaluate", str(run), "--iwae-samples", "0", "--surgery", "0", "--json"]) == 0
    assert not set(SURGERY_COLUMNS) & set(json.loads(capsys.readouterr().out))
    assert main(["evaluate", str(run), "--iwae-samples", "0"]) == 0
    assert "I(x; z) (ELBO surgery)" in capsys.readouterr().out
    assert main(["plot", str(run), "--traversals", "--out", str(tmp_path / "figs")]) == 0
    assert [p.name for p in (tmp_path / "figs").iterdir()] == ["traversals.png"]


def test_data_is_untouched(synthetic):
    """The columns read the data, never change them."""
    data = Data(synthetic.train, synthetic.test[:100].clone(), binarize=synthetic.binarize)
    before = data.test.clone()
    cfg = small_config("eval.surgery=50")
    representation_columns(build_vae(cfg, data.data_shape), data, cfg)
    assert torch.equal(data.test, before)
