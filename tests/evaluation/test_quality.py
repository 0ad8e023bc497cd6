"""Sample-quality metrics: FID against its closed form, KID unbiased, precision/recall on sets whose answer is
known, the feature classifier cached with a checksum, and nothing that needs the network."""

import json
import math
import socket
import statistics

import pytest
import torch

from pyro_vae import load_data
from pyro_vae.errors import DataError, UsageError
from pyro_vae.evaluation import features as F
from pyro_vae.evaluation.quality import features_of, frechet_distance, kernel_distance, precision_recall, quality


def gaussian(n, d, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


def test_fid_agrees_with_the_closed_form_of_two_gaussians():
    """N(0, I_4) against N(m, 4 I_4): FID = |m|^2 + Tr(I + 4I - 2 (4I)^(1/2)) = |m|^2 + 4 = 5. One draw of
    n = 20000 has a standard deviation of 0.046 (measured over 20 seeds): within 4 of them."""
    a = gaussian(20000, 4, 0)
    b = gaussian(20000, 4, 1, scale=2.0, shift=torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    assert frechet_distance(a, b) == pytest.approx(5.0, abs=4 * 0.046)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def synthetic():
    return load_data("synthetic")


@pytest.fixture(scope="module")
def random_net(synthetic):
    """A fixed, untrained feature network (its features still move with the images)."""
    torch.manual_seed(0)
    return F.Classifier(synthetic.data_shape, 4).eval()


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(synthetic, random_net):
    x = synthetic.test.float()
    real = features_of(random_net, x)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    fids = [
        frechet_distance(real, features_of(random_net, (x + s * noise).clamp(0, 1))) for s in (0, 0.05, 0.1, 0.2, 0.4)
    ]
    assert fids[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in zip(fids, fids[1:])), fids


def test_kid_is_unbiased_for_two_sets_from_one_distribution():
    """The mean KID of independent pairs from one Gaussian is 0 within 4 standard errors of that mean;
    a shifted one lies far above it."""
    same = [
        kernel_distance(gaussian(300, 8, 2 * s), gaussian(300, 8, 2 * s + 1), subsets=20, subset_size=150)[0]
        for s in range(20)
    ]
    mean, se = statistics.mean(same), statistics.stdev(same) / math.sqrt(len(same))
    assert abs(mean) < 4 * se
    shifted = kernel_distance(gaussian(300, 8, 0), gaussian(300, 8, 1, shift=1.0), subsets=20, subset_size=150)[0]
    assert shifted > mean + 20 * statistics.stdev(same)


def test_precision_and_recall_on_sets_with_known_answers():
    a = gaussian(400, 3, 0)
    assert precision_recall(a, a) == (1.0, 1.0)
    assert precision_recall(a, a + 100.0) == (0.0, 0.0)
    # samples that are real points are realistic (precision 1) but cover half the data's variety at most
    p, r = precision_recall(a, a[:200])
    assert p == 1.0 and 0.5 <= r < 1.0
    # mode dropping: real = two far clusters, generated = one of them: precision ~1, recall ~1/2
    real = torch.cat([gaussian(500, 2, 1), gaussian(500, 2, 2, shift=50.0)])
    p, r = precision_recall(real, gaussian(500, 2, 3))
    assert p > 0.95 and r == pytest.approx(0.5, abs=0.05)


def test_metrics_refuse_bad_feature_sets():
    with pytest.raises(UsageError, match="same F"):
        frechet_distance(gaussian(10, 3, 0), gaussian(10, 4, 1))
    with pytest.raises(UsageError, match="at least"):
        precision_recall(gaussian(3, 2, 0), gaussian(3, 2, 1))
    with pytest.raises(UsageError, match=r"images \(n, C, H, W\)"):
        features_of(torch.nn.Identity(), torch.zeros(5, 4))


def test_quality_reports_every_number(synthetic, random_net):
    real = features_of(random_net, synthetic.test[:200].float())
    fake = features_of(random_net, synthetic.train[:200].float())
    q = quality(real, fake)
    assert set(q) == {"fid", "kid", "kid_std", "precision", "recall"}
    assert q["fid"] > 0 and 0 <= q["precision"] <= 1 and 0 <= q["recall"] <= 1 and all(map(math.isfinite, q.values()))


def no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_the_classifier_is_trained_once_cached_with_a_checksum_and_offline(synthetic, tmp_path, monkeypatch):
    no_network(monkeypatch)
    net = F.cached_classifier(synthetic, tmp_path, epochs=2, log=lambda *a: None, progress=False)
    (weights,) = tmp_path.glob("classifier-*.pt")
    record = json.loads(weights.with_suffix(".json").read_text())
    assert record["test_accuracy"] == net.test_accuracy and 0.25 < net.test_accuracy <= 1  # 4 classes: above chance
    assert record["data_fingerprint"] in weights.name

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(F, "train_classifier", no_training)
    again = F.cached_classifier(synthetic, tmp_path, epochs=2, log=lambda *a: None)
    x = synthetic.test[:50].float()
    assert torch.equal(again(x), net(x))
    # a damaged file is refused, not silently replaced
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DataError, match="delete both files"):
        F.cached_classifier(synthetic, tmp_path, epochs=2, log=lambda *a: None)


def test_a_weak_classifier_is_refused(synthetic, tmp_path):
    with pytest.raises(DataError, match="test accuracy"):
        F.build_features(
            {"kind": "classifier", "epochs": 1, "min_accuracy": 0.99},
            synthetic,
            tmp_path,
            progress=False,
            log=lambda *a: None,
        )


def test_inception_without_local_weights_says_how_to_provide_them(synthetic, tmp_path, monkeypatch):
    no_network(monkeypatch)
    monkeypatch.delenv(F.INCEPTION_ENV, raising=False)
    with pytest.raises(UsageError, match=F.INCEPTION_ENV):
        F.build_features("inception", synthetic, tmp_path)
    monkeypatch.setenv(F.INCEPTION_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(UsageError, match="missing.pth"):
        F.build_features("inception", synthetic, tmp_path)
    # data without labels: "auto" falls to Inception, and says so
    unlabelled = type(synthetic)(synthetic.train, synthetic.test, None, None, synthetic.binarize, None)
    with pytest.raises(UsageError, match="classifier"):
        F.build_features("auto", unlabelled, tmp_path)


def test_a_plugin_feature_network(synthetic, tmp_path):
    @F.FEATURES.register("mean_pixels")
    def mean_pixels(data, cache_dir, size=4):
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(size), torch.nn.Flatten())

    try:
        net = F.build_features({"kind": "mean_pixels", "size": 2}, synthetic, tmp_path)
        assert features_of(net, synthetic.test[:10].float()).shape == (10, 4)
    finally:
        del F.FEATURES._entries["mean_pixels"]  # other tests list the registered kinds
