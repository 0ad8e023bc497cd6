"""The figures of a run, for any size of test set (a handful of images, not a multiple of the grid's width)."""

import pytest

from pyro_vae import Data, build_vae
from pyro_vae.evaluation.plots import plot_run

from ..conftest import small_config


@pytest.mark.parametrize("latent_dim", [2, 4])
@pytest.mark.parametrize("n_test", [1, 5, 12, 31, 40])
def test_plot_run_draws_every_figure_from_a_small_test_set(tmp_path, synthetic, n_test, latent_dim):
    vae = build_vae(small_config(f"model.latent_dim={latent_dim}"), synthetic.data_shape)
    data = Data(synthetic.train, synthetic.test[:n_test], binarize=synthetic.binarize)
    history = [{"epoch": 1, "train_loss": 50.0, "test_elbo": -49.0, "beta": 1.0, "seconds": 1.0}]
    names = plot_run(vae, data, history, tmp_path)
    expected = {"learning_curves.png", "reconstructions.png", "prior_samples.png", "traversals.png"}
    assert expected <= set(names) and (latent_dim != 2 or "latent_scatter.png" in names)
    assert all((tmp_path / name).stat().st_size > 500 for name in names)
