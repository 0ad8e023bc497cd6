"""Interruptions, non-finite losses, atomic writes: nothing already written is lost."""

import json
import os
import signal

import pytest
import torch

from pyro_vae import TrainingError, TrainingInterrupted, load_checkpoint, save_checkpoint, train
from pyro_vae.data import Data

from ..conftest import small_config

QUIET = dict(progress=False, log=lambda s: None)


class SignalAfter(Data):
    """Training data that sends this process ``sig`` while forming batch ``at`` of epoch ``epoch``."""

    def __init__(self, data, sig, epoch, at):
        super().__init__(data.train, data.test, data.train_labels, data.test_labels, data.binarize)
        self.sig, self.epoch, self.at, self.seen_epochs = sig, epoch, at, 0

    def to(self, device):
        return self

    def batches(self, batch_size, generator, start=0, generator_state=None):
        self.seen_epochs += 1
        for i, x in enumerate(super().batches(batch_size, generator, start, generator_state), start=start):
            if self.seen_epochs == self.epoch and i == self.at:
                os.kill(os.getpid(), self.sig)
            yield x


def metrics(path):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_and_resume_equals_uninterrupted(tmp_path, synthetic, sig):
    cfg = small_config("train.epochs=3")
    train(cfg, tmp_path / "full", data=synthetic, **QUIET)

    with pytest.raises(TrainingInterrupted, match=r"at epoch 2, step 8 of 40.*--resume"):
        train(cfg, tmp_path / "cut", data=SignalAfter(synthetic, sig, epoch=2, at=7), **QUIET)
    state = load_checkpoint(tmp_path / "cut")
    assert state["epoch"] == 1 and state["partial"]["epoch"] == 2 and state["partial"]["step"] == 8
    assert len(metrics(tmp_path / "cut" / "metrics.jsonl")) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored

    train(cfg, tmp_path / "cut", resume=True, data=synthetic, **QUIET)
    assert metrics(tmp_path / "cut" / "metrics.jsonl") == metrics(tmp_path / "full" / "metrics.jsonl")
    a, b = load_checkpoint(tmp_path / "cut"), load_checkpoint(tmp_path / "full")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_an_ignored_signal_stays_ignored_and_a_foreign_handler_is_put_back(tmp_path, synthetic):
    """As under nohup or in a script's background job: SIGINT ignored is not a request to stop; SIGTERM, caught
    by the caller's own handler before training, is the loop's while it trains and the caller's again after."""

    def theirs(signum, frame):
        pass

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, theirs)
    cfg = small_config("train.epochs=2")
    _, history = train(cfg, tmp_path / "ignored", data=SignalAfter(synthetic, signal.SIGINT, epoch=1, at=3), **QUIET)
    assert [r["epoch"] for r in history] == [1, 2]  # the run went on to its end
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is theirs
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM at epoch 1, step 4"):
        train(cfg, tmp_path / "caught", data=SignalAfter(synthetic, signal.SIGTERM, epoch=1, at=3), **QUIET)
    assert signal.getsignal(signal.SIGTERM) is theirs


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path, synthetic):
    cfg = small_config("train.epochs=1")
    train(cfg, tmp_path, data=synthetic, **QUIET)
    good = load_checkpoint(tmp_path)

    class Poisoned(Data):
        def batches(self, *args):
            for i, x in enumerate(super().batches(*args)):
                yield x * float("nan") if i == 3 else x

    bad = Poisoned(synthetic.train, synthetic.test, binarize=synthetic.binarize)
    bad.to = lambda device: bad
    with pytest.raises(TrainingError, match=r"became nan at epoch 2, step 4.*kept.*learning rate"):
        train(small_config("train.epochs=2"), tmp_path, resume=True, data=bad, **QUIET)
    kept = load_checkpoint(tmp_path)
    assert kept["epoch"] == 1 and all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])
    assert len(metrics(tmp_path / "metrics.jsonl")) == 1


def test_an_interrupted_checkpoint_write_leaves_the_old_one(tmp_path, monkeypatch, small_vae):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, epoch=1, model=small_vae.state_dict())
    before = path.read_bytes()

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, epoch=2, model=small_vae.state_dict())
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


def test_bad_training_settings_are_refused_before_training(tmp_path, synthetic):
    from pyro_vae import ConfigError, DataError

    with pytest.raises(
        DataError, match=r"batch_size = 5000 is larger than the training set \(2000.*--set data.batch_size="
    ):
        train(small_config("data.batch_size=5000"), tmp_path / "a", data=synthetic, **QUIET)
    with pytest.raises(ConfigError, match="lr must be a positive number.*--set train.optimizer.lr=1e-3"):
        train(small_config("train.optimizer.lr=-1.0"), tmp_path / "b", data=synthetic, **QUIET)
    with pytest.raises(DataError, match="binary data.*binarize"):
        train(small_config(), tmp_path / "c", data=Data(synthetic.train, synthetic.test, binarize="none"), **QUIET)
    # refused before anything is written beyond the folder itself
    assert not any((tmp_path / d / "metrics.jsonl").exists() for d in "abc")


def test_model_refuses_data_of_another_shape(small_vae):
    from pyro_vae import DataError

    for program in (small_vae.model, small_vae.guide):
        with pytest.raises(DataError, match=r"shape \(1, 32, 32\).*built for \(1, 8, 8\)"):
            program(torch.zeros(3, 1, 32, 32))
