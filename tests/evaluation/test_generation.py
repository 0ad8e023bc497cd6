"""Sample quality of a trained run from the command line and in a study, offline: ``pyro-vae sample --sampler``,
``pyro-vae evaluate --samples``, ``compare`` with ``eval.samples``."""

import csv
import json
import socket

import pytest

from pyro_vae.cli import main

from ..test_cli import ARGS

FEATURES = "eval.features={kind='classifier', epochs=3, min_accuracy=0.5}"  # the 8x8 set's quadrants: ~0.8


@pytest.fixture
def offline(monkeypatch, tmp_path):
    def refuse(*a, **k):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.chdir(tmp_path)  # the feature cache goes beside data.root ("data" here)


def test_sample_and_evaluate_with_post_hoc_samplers(tmp_path, capsys, offline):
    run = tmp_path / "run"
    train = ["train", *ARGS, "--set", "train.epochs=3", "--set", FEATURES, "--out", str(run), "--quiet"]
    assert main(train) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--sampler", "gmm", "--n", "16", "--out", str(tmp_path / "gmm.png")]) == 0
    assert (tmp_path / "gmm.png").stat().st_size > 0 and (run / "samplers" / "gmm.pt").exists()
    assert "fitted the gmm sampler" in capsys.readouterr().out
    prior_grid = (run / "samples.png").read_bytes()
    assert main(["sample", str(run), "--sampler", "gmm", "--n", "16"]) == 0  # its own file, the prior's kept
    assert (run / "samples-gmm.png").stat().st_size > 0 and (run / "samples.png").read_bytes() == prior_grid
    capsys.readouterr()

    args = ["evaluate", str(run), "--iwae-samples", "0", "--samples", "200", "--samplers", "prior,gmm", "--json"]
    assert main(args) == 0
    q = json.loads(capsys.readouterr().out)["samples"]
    assert set(q) == {"floor", "prior", "gmm", "features"}
    assert q["features"]["kind"] == "classifier" and q["features"]["n"] == 200
    for name in ("floor", "prior", "gmm"):
        assert q[name]["fid"] >= 0 and 0 <= q[name]["precision"] <= 1 and 0 <= q[name]["recall"] <= 1
    assert q["floor"]["fid"] < q["prior"]["fid"]  # real images beat a 3-epoch model's

    assert main(["evaluate", str(run), "--iwae-samples", "0", "--samples", "200", "--samplers", "prior"]) == 0
    out = capsys.readouterr().out
    assert "sample quality: 200 images x ~ p(x|z) per sampler" in out and "floor" in out and "FID" in out


def test_sample_quality_errors_are_one_line(tmp_path, capsys, offline):
    run = tmp_path / "run"
    assert main(["train", *ARGS, "--set", "train.epochs=1", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    cases = [
        (["sample", str(run), "--sampler", "gmmm"], "unknown kind 'gmmm' (did you mean 'gmm'?)"),
        (["evaluate", str(run), "--iwae-samples", "0", "--samples", "5"], "must lie between 10 and"),
        (["evaluate", str(run), "--iwae-samples", "0", "--samples", "50", "--features", "nope"], "unknown kind 'nope'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_compare_reports_sample_quality_per_sampler(tmp_path, offline):
    out = tmp_path / "study"
    argv = [
        "compare",
        *ARGS,
        "--set",
        "train.epochs=1",
        "--set",
        "eval.iwae_samples=8",
        "--set",
        "eval.samples=100",
        "--set",
        "eval.samplers=['prior', 'gmm']",
        "--set",
        FEATURES,
        "--estimators",
        "trace,stl",
        "--snr-samples",
        "3",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    header = (out / "compare.csv").read_text().splitlines()[0].split(",")
    for column in ("fid_prior", "fid_gmm", "recall_gmm", "fid_floor", "fid_gmm_se"):
        assert column in header
    rows = list(csv.DictReader(open(out / "compare_runs.csv")))
    assert all(float(r["fid_floor"]) < float(r["fid_prior"]) for r in rows)
    assert (out / "trace" / "seed-0" / "samplers" / "gmm.pt").exists()
    assert "fid_gmm" in (out / "compare.md").read_text()


def test_sweep_reports_sample_quality_per_combination(tmp_path, offline):
    from pyro_vae import load_data, sweep

    overrides = [
        "data.dataset=synthetic",
        "data.batch_size=50",
        "model.latent_dim=3",
        "model.encoder.hidden=[32]",
        "model.decoder.hidden=[32]",
        "train.epochs=1",
        "train.beta=0.5,2",
        "eval.samples=100",
        "eval.samplers=['prior', 'gmm']",
        FEATURES,
    ]
    rows = sweep(None, overrides, tmp_path / "sweep", data=load_data("synthetic"), progress=False, log=lambda *a: None)
    assert all({"fid_prior", "fid_gmm", "fid_floor", "recall_gmm"} <= set(r) for r in rows)
    assert all(r["fid_floor"] < r["fid_prior"] for r in rows)
    header = (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()[0].split(",")
    assert "fid_gmm" in header and (tmp_path / "sweep" / rows[0]["folder"] / "samplers" / "gmm.pt").exists()
