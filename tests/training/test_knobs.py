"""Optimisation knobs: a learning-rate schedule, gradient clipping and early stopping, each resumed exactly."""

import signal

import pytest
import torch

from pyro_vae import ConfigError, TrainingInterrupted, load_checkpoint, train
from pyro_vae.training.loop import early_stop

from ..conftest import small_config
from .test_faults import SignalAfter, metrics

QUIET = dict(progress=False, log=lambda s: None)


@pytest.mark.parametrize(
    "schedule",
    [
        "{kind='step', epochs=1, gamma=0.5}",
        "{kind='cosine', min_lr=1e-5}",
        "{kind='exponential', gamma=0.7, every='step'}",
    ],
)
def test_schedule_and_clipping_interrupted_and_resumed_equal_an_uninterrupted_run(tmp_path, synthetic, schedule):
    cfg = small_config("train.epochs=3", f"train.lr_schedule={schedule}", "train.grad_clip=5.0")
    train(cfg, tmp_path / "full", data=synthetic, **QUIET)
    with pytest.raises(TrainingInterrupted):
        train(cfg, tmp_path / "cut", data=SignalAfter(synthetic, signal.SIGINT, epoch=2, at=13), **QUIET)
    train(cfg, tmp_path / "cut", resume=True, data=synthetic, **QUIET)
    a, b = load_checkpoint(tmp_path / "cut"), load_checkpoint(tmp_path / "full")
    assert metrics(tmp_path / "cut" / "metrics.jsonl") == metrics(tmp_path / "full" / "metrics.jsonl")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"] < 1e-3  # it decayed
    assert a["lr_schedule"] == b["lr_schedule"]


def test_step_schedule_halves_the_learning_rate_each_epoch(tmp_path, synthetic):
    train(
        small_config("train.epochs=3", "train.lr_schedule={kind='step', epochs=1, gamma=0.5}"),
        tmp_path,
        data=synthetic,
        **QUIET,
    )
    assert load_checkpoint(tmp_path)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 / 8)


def test_a_learning_rate_changed_on_resume_becomes_the_schedules_new_base(tmp_path, synthetic):
    sched = "train.lr_schedule={kind='step', epochs=1, gamma=0.5}"
    train(small_config("train.epochs=2", sched), tmp_path, data=synthetic, **QUIET)  # lr now 1e-3 / 4
    train(
        small_config("train.epochs=3", sched, "train.optimizer.lr=0.1"), tmp_path, resume=True, data=synthetic, **QUIET
    )
    state = load_checkpoint(tmp_path)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 / 8)  # the position kept, the base new
    assert state["lr_schedule"]["base_lrs"] == [pytest.approx(0.1)]
    with pytest.raises(ConfigError, match="train.lr_schedule.*the schedule's position"):
        train(
            small_config("train.epochs=4", "train.lr_schedule={kind='cosine'}"),
            tmp_path,
            resume=True,
            data=synthetic,
            **QUIET,
        )


def test_gradient_clipping_bounds_the_update(synthetic):
    from pyro_vae import build_elbo, build_optimizer, build_vae
    from pyro_vae.training.step import svi_step

    cfg = small_config("train.optimizer={kind='sgd', lr=1.0}")
    vae = build_vae(cfg, synthetic.data_shape)
    before = [p.detach().clone() for p in vae.parameters()]
    svi_step(
        vae.model,
        vae.guide,
        build_elbo(cfg),
        build_optimizer(cfg, vae.parameters()),
        synthetic.example_batch(50),
        num_data=2000,
        max_grad_norm=0.01,
    )
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(vae.parameters(), before)])
    assert moved.norm() == pytest.approx(0.01, rel=1e-4)  # SGD with lr 1 moves by the clipped gradient


def test_early_stop_rule():
    h = [{"epoch": e, "test_elbo": v} for e, v in enumerate([-10.0, -9.0, -9.5, -9.2, -8.0, -8.5], start=1)]
    assert [early_stop(h[:n], 2) and early_stop(h[:n], 2)["epoch"] for n in range(1, 7)] == [
        None,
        None,
        None,
        2,
        None,
        None,
    ]
    assert early_stop(h, 0) is None and early_stop(h[:4], 1)["epoch"] == 2


def test_early_stop_ends_the_run_and_resume_says_so(tmp_path, synthetic, monkeypatch):
    import sys

    values = iter([-10.0, -9.0, -9.5, -9.6, -9.7, -9.8])
    monkeypatch.setattr(
        sys.modules["pyro_vae.training.distributed"], "shared_test_elbo", lambda vae, x, world, seed: next(values)
    )
    said = []
    _, history = train(
        small_config("train.epochs=6", "train.early_stop=2"), tmp_path, data=synthetic, progress=False, log=said.append
    )
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert any(
        "stopped early after epoch 4: the test ELBO has not improved on epoch 2's (-9.000) for 2 epochs" in s
        for s in said
    )
    said.clear()
    train(
        small_config("train.epochs=6", "train.early_stop=2"),
        tmp_path,
        resume=True,
        data=synthetic,
        progress=False,
        log=said.append,
    )
    assert any("stopped early at epoch 4" in s and "raise train.early_stop" in s for s in said)
    assert load_checkpoint(tmp_path)["epoch"] == 4
