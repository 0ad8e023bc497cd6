"""Budgets: train.max_steps and train.max_seconds stop a run inside an epoch, and a larger budget continues it."""

import time

import pytest
import torch

from pyro_vae import Callback, train
from pyro_vae.training.folder import read_metrics

from ..conftest import small_config

QUIET = dict(progress=False, log=lambda s: None)


def test_a_step_budget_stops_inside_an_epoch_and_a_larger_one_continues_as_if_never_stopped(tmp_path, synthetic):
    steps = synthetic.num_batches(50)  # 40 per epoch
    whole, history = train(small_config("train.epochs=2"), tmp_path / "whole", data=synthetic, **QUIET)
    cfg = small_config("train.epochs=2", "train.max_steps=25")
    _, part = train(cfg, tmp_path / "part", data=synthetic, **QUIET)
    assert [r.get("partial") for r in part] == [25] and part[0]["epoch"] == 1
    assert read_metrics(tmp_path / "part/metrics.jsonl")[0] == part
    _, again = train(cfg, tmp_path / "part", resume=True, data=synthetic, **QUIET)  # spent: nothing more
    assert again == part
    _, more = train(
        small_config("train.epochs=2", "train.max_steps=55"), tmp_path / "part", resume=True, data=synthetic, **QUIET
    )
    assert [(r["epoch"], r.get("partial")) for r in more] == [(1, None), (2, 55 - steps)]
    assert more[0]["train_loss"] == history[0]["train_loss"]
    resumed, rest = train(small_config("train.epochs=2"), tmp_path / "part", resume=True, data=synthetic, **QUIET)
    assert [r["train_loss"] for r in rest] == [r["train_loss"] for r in history]
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


def test_a_time_budget_stops_within_one_step_of_the_limit(tmp_path, synthetic):
    """The loop's clock (steps and batches, evaluation excluded) passes the limit at the last step and not
    before it: the overshoot is at most that step's own duration."""
    ends = []

    class Clock(Callback):
        def on_step(self, run, epoch, step, global_step, loss, beta):
            ends.append(time.perf_counter())

    limit = 0.6
    _, history = train(
        small_config("train.epochs=1000", f"train.max_seconds={limit}"),
        tmp_path,
        data=synthetic,
        callbacks=[Clock()],
        **QUIET,
    )
    spent = sum(r["seconds"] for r in history)
    steps = sum(r.get("partial") or synthetic.num_batches(50) for r in history)
    assert len(ends) == steps and 1 < len(history) < 1000
    last_step = ends[-1] - ends[-2]
    assert limit <= spent <= limit + last_step + 1e-3
    with pytest.raises(Exception, match="max_seconds"):
        small_config("train.max_seconds=-1")
