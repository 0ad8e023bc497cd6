import csv
import json

import pytest
import torch

from pyro_vae import ConfigError
from pyro_vae.cli import main
from pyro_vae.studies.compare import COLUMNS, compare, parse_estimators

from ..conftest import small_config


def test_parse_estimators():
    parsed = parse_estimators("trace, iwae,r={kind='renyi', alpha=0.5, num_particles=3},score_function_z")
    assert list(parsed) == ["trace", "iwae", "r", "score_function_z"]
    assert parsed["r"] == {"train.elbo": {"kind": "renyi", "alpha": 0.5, "num_particles": 3}}
    assert parsed["score_function_z"]["model.posterior.reparameterized"] is False
    with pytest.raises(ConfigError, match="valid kinds"):
        parse_estimators("trace,sgvb")
    with pytest.raises(ConfigError, match="twice"):
        parse_estimators("trace,trace")
    with pytest.raises(ConfigError, match="at least one"):
        parse_estimators(" , ")


def test_compare_runs_every_estimator_from_the_same_start(tmp_path, synthetic):
    out = tmp_path / "study"
    rows = compare(
        small_config("train.epochs=2"),
        "trace,dreg,score_function_z",
        out,
        snr_samples=5,
        progress=False,
        log=lambda s: None,
        data=synthetic,
    )
    assert [r["estimator"] for r in rows] == ["trace", "dreg", "score_function_z"]
    for r in rows:
        assert r["gap"] == pytest.approx(r["log_px"] - r["test_elbo"])
        assert r["encoder_snr"] > 0 and r["decoder_grad_var"] > 0
    with open(out / "compare.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == COLUMNS and [r[0] for r in table[1:]] == ["trace", "dreg", "score_function_z"]
    assert all((out / n).stat().st_size > 1000 for n in ("elbo_vs_epoch.png", "elbo_vs_time.png", "snr.png"))
    assert "| trace |" in (out / "compare.md").read_text()
    # the same initial weights: each run's first epoch starts from identical parameters, so with the
    # same estimator two runs agree exactly
    hist = json.loads((out / "compare.json").read_text())["histories"]
    assert set(hist) == {"trace", "dreg", "score_function_z"} and all(len(h) == 2 for h in hist.values())
    again = compare(
        small_config("train.epochs=2"),
        "trace",
        tmp_path / "again",
        snr_samples=2,
        progress=False,
        log=lambda s: None,
        data=synthetic,
    )
    assert again[0]["test_elbo"] == pytest.approx(rows[0]["test_elbo"], rel=0, abs=0.5)
    first = json.loads((tmp_path / "again" / "compare.json").read_text())["histories"]["trace"]
    assert [h["train_loss"] for h in first] == [h["train_loss"] for h in hist["trace"]]


def test_every_estimator_starts_from_the_same_weights_and_batches(tmp_path, synthetic, monkeypatch):
    """What each run of a study starts from, seen from inside the loop: its initial weights (the VAE at the
    first callback) and the first batches it trains on are identical across estimators."""
    import pyro_vae.studies.compare as study
    from pyro_vae import Callback, Data

    starts, batches = {}, {}

    class FirstBatches(Data):
        label = None

        def to(self, device):
            return self

        def batches(self, batch_size, generator, *args, **kwargs):
            for i, x in enumerate(super().batches(batch_size, generator, *args, **kwargs)):
                if i < 3:
                    batches.setdefault(self.label, []).append(x.clone())
                yield x

    class Start(Callback):
        def __init__(self, label):
            self.label = label

        def on_train_start(self, run):
            starts[self.label] = {k: v.clone() for k, v in run.vae.state_dict().items()}

    train = study.train

    def spied(cfg, out, **kwargs):
        kwargs["data"].label = out.name
        return train(cfg, out, callbacks=[Start(out.name)], **kwargs)

    monkeypatch.setattr(study, "train", spied)
    data = FirstBatches(
        synthetic.train, synthetic.test, synthetic.train_labels, synthetic.test_labels, synthetic.binarize
    )
    compare(
        small_config("train.epochs=1"),
        "trace,iwae,score_function_z",
        tmp_path / "study",
        snr_samples=2,
        progress=False,
        log=lambda s: None,
        data=data,
    )
    assert sorted(starts) == sorted(batches) == ["iwae", "score_function_z", "trace"]
    first = starts["trace"]
    assert all(torch.equal(first[k], other[k]) for other in starts.values() for k in first)
    assert all(len(b) == 3 and all(torch.equal(u, v) for u, v in zip(batches["trace"], b)) for b in batches.values())


def test_compare_cli_refuses_bad_estimators_before_training(tmp_path, capsys):
    assert (
        main(
            [
                "compare",
                "--set",
                "data.dataset=synthetic",
                "--estimators",
                "trace,iwae={kind='iwae', num_particles=1}",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "num_particles >= 2" in capsys.readouterr().err
    assert not (tmp_path / "s" / "trace").exists()
