"""The injectable loop: parts given to ``train`` replace the config's, callbacks see every step and
epoch, loggers (CSV, TensorBoard) are callbacks chosen by ``train.loggers``."""

import csv
import json

import pytest
import torch

from pyro_vae import ESTIMATORS, ConfigError, build_vae, load_checkpoint, train
from pyro_vae.training.callbacks import Callback

from ..conftest import small_config

QUIET = dict(progress=False, log=lambda s: None)


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_start(self, run):
        self.events.append(("start", run.start_step))

    def on_step(self, run, epoch, step, global_step, loss, beta):
        self.events.append(("step", epoch, step, global_step, loss, beta))

    def on_epoch_end(self, run, record):
        self.events.append(("epoch", record["epoch"], record["test_elbo"]))

    def on_train_end(self, run, history):
        self.events.append(("end", len(history)))


def test_callbacks_see_every_step_and_epoch(tmp_path, synthetic):
    rec = Recorder()
    _, history = train(
        small_config("train.epochs=2", "train.kl_warmup={kind='linear', epochs=1}"),
        tmp_path,
        data=synthetic,
        callbacks=[rec],
        **QUIET,
    )
    steps = [e for e in rec.events if e[0] == "step"]
    assert rec.events[0] == ("start", 0) and rec.events[-1] == ("end", 2)
    assert [e[3] for e in steps] == list(range(1, 81))  # 40 steps per epoch, numbered globally
    assert [e[5] for e in steps[:3]] == pytest.approx([1 / 40, 2 / 40, 3 / 40])  # the warm-up's beta
    assert sum(e[4] for e in steps if e[1] == 1) / 40 == pytest.approx(history[0]["train_loss"])
    assert [e[1:] for e in rec.events if e[0] == "epoch"] == [(r["epoch"], r["test_elbo"]) for r in history]


def test_given_parts_replace_the_configs(tmp_path, synthetic):
    cfg = small_config("train.epochs=1")
    vae = build_vae(small_config("model.latent_dim=3"), synthetic.data_shape)
    elbo = ESTIMATORS.build({"kind": "iwae", "num_particles": 3})
    optimizer = torch.optim.SGD(vae.parameters(), lr=1e-6, momentum=0.9)  # the loss sums over all N points
    trained, _ = train(cfg, tmp_path, data=synthetic, vae=vae, elbo=elbo, optimizer=optimizer, **QUIET)
    assert trained is vae and vae.latent_dim == 3
    assert "momentum" in load_checkpoint(tmp_path)["optimizer"]["param_groups"][0]  # SGD's state, not Adam's
    with pytest.raises(ConfigError, match="holds none of the VAE's parameters"):
        train(
            cfg,
            tmp_path / "b",
            data=synthetic,
            vae=vae,
            optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
            **QUIET,
        )


def test_csv_logger_agrees_with_the_jsonl_after_a_resume(tmp_path, synthetic):
    train(small_config("train.epochs=1", "train.loggers=['csv']"), tmp_path, data=synthetic, **QUIET)
    train(small_config("train.epochs=2", "train.loggers=['csv']"), tmp_path, resume=True, data=synthetic, **QUIET)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [float(r["test_elbo"]) for r in rows] == pytest.approx([r["test_elbo"] for r in lines])


def test_unknown_logger_is_refused():
    with pytest.raises(
        ConfigError,
        match="train.loggers: unknown kind 'wand'.*did you mean 'wandb'.*valid kinds: csv, mlflow, tensorboard, wandb",
    ):
        small_config("train.loggers=['wand']")


def test_tensorboard_writes_the_expected_scalars_and_images(tmp_path, synthetic):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(small_config("train.epochs=1", "train.loggers=['tensorboard']"), tmp_path, data=synthetic, **QUIET)
    train(
        small_config("train.epochs=2", "train.loggers=['tensorboard']"), tmp_path, resume=True, data=synthetic, **QUIET
    )
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "train/beta", "epoch/train_loss", "epoch/test_elbo", "epoch/beta"} <= set(tags["scalars"])
    assert {"samples", "reconstructions"} <= set(tags["images"])
    assert [e.step for e in events.Scalars("epoch/test_elbo")] == [40, 80]
    assert [e.step for e in events.Scalars("train/loss")] == list(range(10, 81, 10))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("epoch/test_elbo")] == pytest.approx([r["test_elbo"] for r in lines])


def test_tensorboard_purges_events_past_the_checkpoint_on_resume(tmp_path, synthetic):
    """A run that logged epoch 2 and then lost its checkpoint (a kill before the write): the resume rewrites
    steps 41-80, and TensorBoard shows each step once, with the resumed run's values (those of an uninterrupted
    run), because the new event file opens with a purge of every step from the checkpoint's on."""
    pytest.importorskip("tensorboard")
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    run, reference = tmp_path / "run", tmp_path / "reference"
    cfg = small_config("train.epochs=2", "train.loggers=['tensorboard']")
    train(cfg, reference, data=synthetic, **QUIET)
    train(small_config("train.epochs=1", "train.loggers=['tensorboard']"), run, data=synthetic, **QUIET)
    for name in ("checkpoint.pt", "config.toml"):
        shutil.copy(run / name, tmp_path / name)
    lost = small_config("train.epochs=2", "train.loggers=['tensorboard']", "train.optimizer.lr=0.01")  # other values
    train(lost, run, resume=True, data=synthetic, **QUIET)
    for name in ("checkpoint.pt", "config.toml"):  # epoch 2's checkpoint (and config) never reached the disk
        shutil.copy(tmp_path / name, run / name)
    train(cfg, run, resume=True, data=synthetic, **QUIET)

    def scalars(folder, tag):
        events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0}).Reload()
        return [(e.step, e.value) for e in events.Scalars(tag)]

    for tag in ("train/loss", "epoch/test_elbo"):
        got, want = scalars(run, tag), scalars(reference, tag)
        assert [step for step, _ in got] == [step for step, _ in want]  # each step once
        assert [value for _, value in got] == pytest.approx([value for _, value in want], rel=1e-5)
    files = sorted((run / "tensorboard").iterdir(), key=lambda p: p.name)
    assert len(files) == 3
    starts = [
        (e.step, e.session_log.status) for e in EventFileLoader(str(files[-1])).Load() if e.HasField("session_log")
    ]
    assert starts and starts[0][0] == 41 and starts[0][1] == 1  # SessionLog.START at the first step after it


class FakeTracker:
    """Stands in for the wandb and mlflow modules (not installed in CI): records every call."""

    def __init__(self):
        self.calls = []
        self.util = self

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self

        return record

    def generate_id(self):  # a new id each time, as W&B's: a fresh run and a resumed one can be told apart
        import uuid

        return uuid.uuid4().hex[:8]


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_wandb_and_mlflow_loggers_report_the_same_scalars(tmp_path, synthetic, monkeypatch, name):
    import sys

    fake = FakeTracker()
    monkeypatch.setitem(sys.modules, name, fake)
    train(small_config("train.epochs=1", f"train.loggers=['{name}']"), tmp_path, data=synthetic, **QUIET)
    calls = [c[0] for c in fake.calls]
    assert calls[-1] in ("finish", "end_run")
    logged = [c for c in fake.calls if c[0] in ("log", "log_metrics")]
    assert len(logged) == 4 + 1  # every 10 of 40 steps, then the epoch
    keys = set(logged[-1][1][0])
    assert keys in (
        {"epoch/train_loss", "epoch/test_elbo", "epoch/beta"},
        {"epoch_train_loss", "epoch_test_elbo", "epoch_beta"},
    )


def test_a_resumed_run_continues_its_wandb_run_and_a_new_folder_starts_another(tmp_path, synthetic, monkeypatch):
    import sys

    fake = FakeTracker()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    train(small_config("train.epochs=1", "train.loggers=['wandb']"), tmp_path / "a", data=synthetic, **QUIET)
    train(
        small_config("train.epochs=2", "train.loggers=['wandb']"), tmp_path / "a", resume=True, data=synthetic, **QUIET
    )
    train(small_config("train.epochs=1", "train.loggers=['wandb']"), tmp_path / "b", data=synthetic, **QUIET)
    inits = [kwargs for name, _, kwargs in fake.calls if name == "init"]
    assert len(inits) == 3 and all(k["resume"] == "allow" for k in inits)
    assert inits[0]["id"] == inits[1]["id"] == (tmp_path / "a" / ".wandb-id").read_text()  # the same W&B run
    assert inits[2]["id"] != inits[0]["id"] and inits[2]["id"] == (tmp_path / "b" / ".wandb-id").read_text()
    steps = [kwargs["step"] for name, _, kwargs in fake.calls if name == "log"]
    assert steps[:5] == [10, 20, 30, 40, 40] and steps[5:10] == [50, 60, 70, 80, 80]  # the resume goes on from 40


def test_a_missing_tracker_package_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    from pyro_vae.training.callbacks import build_loggers

    with pytest.raises(ConfigError, match="needs the wandb package: pip install wandb"):
        build_loggers(["wandb"])


def test_a_torch_dataset_or_loader_is_accepted_as_data(tmp_path, synthetic):
    from torch.utils.data import DataLoader, TensorDataset

    from pyro_vae import load_run

    dataset = TensorDataset(synthetic.train, torch.zeros(len(synthetic.train), dtype=torch.long))
    _, history = train(small_config(), tmp_path / "a", data=dataset, **QUIET)
    assert load_checkpoint(tmp_path / "a")["config"]["data"]["dataset"] == "given"
    train(
        small_config(),
        tmp_path / "b",
        data=(DataLoader(dataset, batch_size=100), TensorDataset(synthetic.test)),
        **QUIET,
    )
    with pytest.raises(Exception, match="given from Python, which no name can load: pass it again"):
        load_run(tmp_path / "a")
    _, vae, data = load_run(tmp_path / "a", data=dataset)
    assert data.num_train == 1800 and data.test.shape[0] == 200  # 10 % held out, as for npz
