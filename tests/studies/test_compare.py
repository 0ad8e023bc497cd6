import csv
import json
import math

import pytest
import torch

from pyro_vae import ConfigError, TrainingInterrupted
from pyro_vae.cli import main
from pyro_vae.evaluation.representation import SURGERY_COLUMNS
from pyro_vae.studies.compare import COLUMNS, compare, parse_budget, parse_estimators, report, run_folder

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


QUIET = dict(progress=False, log=lambda s: None)


def test_parse_budget():
    assert parse_budget(None) is None and parse_budget("steps:30") == ("steps", 30)
    assert parse_budget("seconds:1.5") == ("seconds", 1.5) and parse_budget("epochs:2") == ("epochs", 2)
    for bad in ("steps", "minutes:3", "steps:-1", "steps:1.5", "seconds:nan", "seconds:0"):
        with pytest.raises(ConfigError, match="budget"):
            parse_budget(bad)


def test_compare_runs_every_estimator_from_several_seeds(tmp_path, synthetic):
    out = tmp_path / "study"
    rows = compare(
        small_config("train.epochs=2"),
        "trace,dreg,score_function_z",
        out,
        seeds=2,
        snr_samples=5,
        data=synthetic,
        **QUIET,
    )
    assert [r["estimator"] for r in rows] == ["trace", "dreg", "score_function_z"]
    for r in rows:
        assert r["seeds"] == 2 and r["steps"] == 2 * synthetic.num_batches(50)
        assert r["gap"] == pytest.approx(r["log_px"] - r["test_elbo"])
        assert r["encoder_snr"] > 0 and r["decoder_grad_var"] > 0 and r["test_elbo_se"] > 0
    runs = list(csv.DictReader(open(out / "compare_runs.csv")))
    assert [(r["estimator"], r["seed"]) for r in runs] == [
        (e, s) for e in ("trace", "dreg", "score_function_z") for s in ("0", "1")
    ]
    for r in rows:  # each row's mean and standard error are those of its seeds' numbers
        mine = [float(x["test_elbo"]) for x in runs if x["estimator"] == r["estimator"]]
        assert r["test_elbo"] == pytest.approx(sum(mine) / 2) and r["test_elbo_se"] == pytest.approx(
            abs(mine[0] - mine[1]) / 2
        )
    with open(out / "compare.csv") as f:
        table = list(csv.reader(f))
    surgery = [c for m in SURGERY_COLUMNS for c in (m, m + "_se")]  # every one has one factorised latent site
    assert table[0] == COLUMNS + surgery and [r[0] for r in table[1:]] == ["trace", "dreg", "score_function_z"]
    paired = list(csv.DictReader(open(out / "compare_paired.csv")))
    assert {(p["estimator"], p["metric"]) for p in paired} == {
        (e, m)
        for e in ("dreg", "score_function_z")
        for m in ("test_elbo", "log_px", "gap", "rate", "distortion", "seconds_per_epoch")
    }
    by_seed = {r["seed"]: float(r["rate"]) for r in runs if r["estimator"] == "dreg"}
    base = {r["seed"]: float(r["rate"]) for r in runs if r["estimator"] == "trace"}
    dreg_rate = next(p for p in paired if p["estimator"] == "dreg" and p["metric"] == "rate")
    assert float(dreg_rate["mean"]) == pytest.approx(sum(by_seed[s] - base[s] for s in base) / 2)
    assert all((out / n).stat().st_size > 1000 for n in ("elbo_vs_steps.png", "elbo_vs_time.png", "snr.png"))
    md = (out / "compare.md").read_text()
    assert "| trace | 2 |" in md and "Paired differences from trace" in md and "±" in md
    # seed 0 of the study is the run a one-seed study makes: the same numbers exactly
    again = compare(small_config("train.epochs=2"), "trace", tmp_path / "again", snr_samples=5, data=synthetic, **QUIET)
    seed0 = json.loads((run_folder(out, "trace", 0) / "evaluation.json").read_text())
    assert again[0]["test_elbo"] == seed0["metrics"]["test_elbo"] and math.isnan(again[0]["test_elbo_se"])
    assert again[0]["log_px"] == seed0["metrics"]["log_px"]


def test_every_estimator_of_a_seed_starts_from_the_same_weights_and_batches(tmp_path, synthetic, monkeypatch):
    """What each run of a study starts from, seen from inside the loop: its initial weights (the VAE at the
    first callback) and the first batches it trains on are identical across the estimators of a seed, and
    differ between seeds."""
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
        label = (out.parent.name, out.name)
        kwargs["data"].label = label
        return train(cfg, out, callbacks=[Start(label)], **kwargs)

    monkeypatch.setattr(study, "train", spied)
    data = FirstBatches(
        synthetic.train, synthetic.test, synthetic.train_labels, synthetic.test_labels, synthetic.binarize
    )
    compare(
        small_config("train.epochs=1"),
        "trace,iwae,score_function_z",
        tmp_path / "study",
        seeds=2,
        snr_samples=2,
        data=data,
        **QUIET,
    )
    labels = ["iwae", "score_function_z", "trace"]
    assert sorted(starts) == sorted(batches) == [(e, f"seed-{s}") for e in labels for s in (0, 1)]
    for seed in ("seed-0", "seed-1"):
        first = starts[("trace", seed)]
        assert all(torch.equal(first[k], starts[(e, seed)][k]) for e in labels for k in first)
        assert all(torch.equal(u, v) for e in labels for u, v in zip(batches[("trace", seed)], batches[(e, seed)]))
    a, b = starts[("trace", "seed-0")], starts[("trace", "seed-1")]
    weights = [k for k in a if k.endswith("weight")]
    assert weights and not any(torch.equal(a[k], b[k]) for k in weights)  # every weight matrix drawn anew
    assert not torch.equal(batches[("trace", "seed-0")][0], batches[("trace", "seed-1")][0])


def _numbers(out, name):
    """A study file's rows without the columns that measure time."""
    timed = ("train_seconds", "seconds_per_epoch", "seconds_per_epoch_se")
    return [
        {
            k: v
            for k, v in r.items()
            if k not in timed and not (name.endswith("paired.csv") and r["metric"] == "seconds_per_epoch")
        }
        for r in csv.DictReader(open(out / name))
    ]


def test_a_study_killed_inside_a_run_resumes_to_the_uninterrupted_study(tmp_path, synthetic, monkeypatch):
    import signal

    import pyro_vae.studies.compare as study
    from pyro_vae import Callback

    cfg = small_config("train.epochs=2")
    args = dict(seeds=2, budget="steps:50", snr_samples=3, data=synthetic, **QUIET)
    compare(cfg, "trace,iwae", tmp_path / "whole", **args)

    class Kill(Callback):
        def on_step(self, run, epoch, step, global_step, loss, beta):
            if global_step == 30:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C: a checkpoint at this step, then TrainingInterrupted

    train = study.train

    def killed(cfg, out, **kwargs):
        if out.parent.name == "iwae" and out.name == "seed-0":
            kwargs["callbacks"] = [Kill()]
        return train(cfg, out, **kwargs)

    monkeypatch.setattr(study, "train", killed)
    with pytest.raises(TrainingInterrupted, match="run the same compare command again"):
        compare(cfg, "trace,iwae", tmp_path / "part", **args)
    assert (run_folder(tmp_path / "part", "trace", 1) / "evaluation.json").exists()
    assert not (run_folder(tmp_path / "part", "iwae", 0) / "evaluation.json").exists()
    monkeypatch.setattr(study, "train", train)
    said = []
    compare(cfg, "trace,iwae", tmp_path / "part", **{**args, "log": said.append})
    assert any("resuming" in s and "iwae/seed-0 at epoch 1, step 30" in s for s in said)
    assert sum("evaluated already" in s for s in said) == 2  # the two trace runs that had finished: untouched
    for name in ("compare_runs.csv", "compare_paired.csv"):
        assert _numbers(tmp_path / "part", name) == _numbers(tmp_path / "whole", name)
    assert all(r["steps"] == "50" for r in csv.DictReader(open(tmp_path / "part/compare_runs.csv")))
    # the report alone: rewritten from the runs' evaluations, the same tables
    for name in ("compare.md", "compare.csv", "compare_paired.csv"):
        (tmp_path / "part" / name).unlink()
    report(tmp_path / "part", log=lambda s: None)
    assert _numbers(tmp_path / "part", "compare_paired.csv") == _numbers(tmp_path / "whole", "compare_paired.csv")
    assert "| iwae |" in (tmp_path / "part/compare.md").read_text()


def test_compare_in_parallel_processes_equals_one_process(tmp_path, synthetic):
    cfg = small_config("train.epochs=1")
    args = dict(snr_samples=2, data=synthetic, **QUIET)
    one = compare(cfg, "trace,stl", tmp_path / "one", **args)
    two = compare(cfg, "trace,stl", tmp_path / "two", jobs=2, **args)
    for a, b in zip(one, two):
        assert a["estimator"] == b["estimator"]
        for k in ("test_elbo", "log_px", "rate", "distortion", "encoder_snr"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-4)


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


def test_compare_cli_report_reference_and_budget(tmp_path, capsys):
    base = ["compare", "--set", "data.dataset=synthetic", "--set", "eval.iwae_samples=5", "--quiet"]
    out = str(tmp_path / "s")
    assert main([*base, "--estimators", "trace,stl", "--reference", "stl", "--budget", "steps:20", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "Paired differences from stl" in printed and "budget steps:20" in printed
    assert main(["compare", "--report", out, "--reference", "trace"]) == 0  # paired against another estimator
    printed = capsys.readouterr().out
    assert "Paired differences from trace" in printed and "| stl |" in printed
    assert main(["compare", "--report", str(tmp_path)]) == 2
    assert "holds no study" in capsys.readouterr().err
    for bad, said in (
        (["--reference", "dreg"], "not one of the estimators"),
        (["--budget", "hours:2"], "unknown budget"),
    ):
        assert main([*base, "--estimators", "trace,stl", "--out", str(tmp_path / "t"), *bad]) == 2
        assert said in capsys.readouterr().err
    assert main(["compare", "--out", str(tmp_path / "t")]) == 2
    assert "needs --estimators" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
