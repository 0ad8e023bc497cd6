import numpy as np
import pytest
import torch

from pyro_vae import Data, DataError, load_data
from pyro_vae.nn.likelihoods import BernoulliLikelihood

from ..conftest import SHARED_DATA


def test_synthetic_is_small_and_in_unit_interval():
    d = load_data("synthetic", binarize="none")
    assert d.train.shape == (2000, 1, 8, 8) and d.test.shape == (500, 1, 8, 8)
    assert 0 <= d.train.min() and d.train.max() <= 1 and d.train_labels.max() == 3
    assert torch.equal(d.train * 255, (d.train * 255).round())  # 8-bit grey levels, like images
    assert d.train.unique().numel() > 100


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_binarisation(mode):
    d = load_data("synthetic", binarize=mode)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    b1, b2 = next(d.batches(100, g1)), next(d.batches(100, g2))
    assert torch.equal(b1, b2)  # the generator fixes order and draws
    assert set(b1.unique().tolist()) == {0.0, 1.0}
    assert set(d.test.unique().tolist()) == {0.0, 1.0}
    # the test set's binarisation is the same whatever the run's seed
    assert torch.equal(d.test, load_data("synthetic", binarize=mode, seed=7).test)
    again = next(d.batches(100, torch.Generator().manual_seed(0)))
    assert torch.equal(again, b1)
    # dynamic: a fresh draw of every point in each epoch; static: the same pixels every epoch. Each point is
    # found in two epochs by its index (carried as its label)
    indexed = Data(d.train, d.test, torch.arange(d.num_train), d.test_labels, d.binarize)
    epochs = []
    for seed in (1, 2):
        x, i = next(indexed.batches(d.num_train, torch.Generator().manual_seed(seed), labels=True))
        epochs.append(x[i.argsort()])
    differ = (epochs[0] != epochs[1]).sum().item()
    p = load_data("synthetic", binarize="none").train
    expected = (2 * p * (1 - p)).sum().item()  # pixels two independent draws give differently, in expectation
    if mode == "static":
        assert differ == 0 and set(d.train.unique().tolist()) == {0.0, 1.0}
    else:
        assert abs(differ - expected) < 4 * expected**0.5 and expected > 100
    grey = load_data("synthetic", binarize="none").train
    mean_of_draws = torch.stack([next(d.batches(2000, torch.Generator().manual_seed(s))) for s in range(3)]).mean()
    # E[Bernoulli(p)] = p: the mean pixel matches the grey mean within Monte Carlo error
    assert abs(mean_of_draws - grey.mean()) < 4 * (0.25 / (3 * grey.numel())) ** 0.5 + 1e-3 * (mode == "static")


def test_npz_arrays(tmp_path):
    rng = np.random.default_rng(0)
    f = tmp_path / "u8.npz"
    np.savez(f, x=rng.integers(0, 256, size=(50, 6, 6), dtype=np.uint8), y=np.arange(50))
    d = load_data("npz", path=str(f), binarize="none")
    assert d.data_shape == (1, 6, 6) and d.train.shape[0] == 45 and d.test.shape[0] == 5
    assert d.train.max() <= 1 and d.train_labels is not None
    np.savez(tmp_path / "flat.npz", x=rng.random((20, 5)), x_test=rng.random((4, 5)))
    d = load_data("npz", path=str(tmp_path / "flat.npz"), binarize="static")
    assert d.data_shape == (5,) and d.test.shape == (4, 5)


@pytest.mark.parametrize(
    "arrays, pattern",
    [
        ({"images": np.zeros((4, 3))}, "no array named 'x'.*np.savez"),
        ({"x": np.array([{"a": 1}, {"b": 2}], dtype=object)}, "without pickle"),
        ({"x": np.zeros((0, 3))}, "empty"),
        ({"x": np.full((10, 3), np.nan)}, "NaN or Inf"),
        ({"x": np.full((10, 3), 5.0)}, r"needs values in \[0, 1\]"),
        ({"x": np.zeros(10)}, r"shape \(N, ...\)"),
    ],
)
def test_bad_npz_is_refused(tmp_path, arrays, pattern):
    f = tmp_path / "bad.npz"
    np.savez(f, **arrays)
    with pytest.raises(DataError, match=pattern):
        load_data("npz", path=str(f))


def test_npz_path_errors(tmp_path):
    with pytest.raises(DataError, match="needs data.path"):
        load_data("npz")
    with pytest.raises(DataError, match="does not exist"):
        load_data("npz", path=str(tmp_path / "nope.npz"))
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data("npz", path=str(tmp_path / "junk.npz"))


def test_missing_mnist_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="PYRO_VAE_DATA.*--set data.root="):
        load_data("mnist", root=str(tmp_path), download=False)


def test_bernoulli_refuses_grey_levels():
    lik = BernoulliLikelihood((3,))
    with pytest.raises(DataError, match="binarize.*continuous_bernoulli.*allow_grey"):
        lik.check_data(torch.tensor([[0.0, 0.5, 1.0]]))
    lik.check_data(torch.tensor([[0.0, 1.0, 1.0]]))
    BernoulliLikelihood((3,), allow_grey=True).check_data(torch.tensor([[0.0, 0.5, 1.0]]))
    with pytest.raises(DataError, match="NaN"):
        lik.check_data(torch.tensor([[0.0, float("nan"), 1.0]]))


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").exists(), reason="no MNIST under ../shared/data")
def test_mnist_from_shared_data(monkeypatch):
    monkeypatch.setenv("PYRO_VAE_DATA", str(SHARED_DATA))
    d = load_data("mnist", download=False)
    assert d.train.shape == (60000, 1, 28, 28) and d.test.shape == (10000, 1, 28, 28)
    assert d.train_labels.shape == (60000,) and int(d.train_labels.max()) == 9
    assert set(d.test.unique().tolist()) == {0.0, 1.0}
    # the published MNIST mean pixel intensity is 0.1307
    assert abs(float(d.train.mean()) - 0.1307) < 1e-3
