"""Callbacks: code the training loop calls at the start, after every step, at every epoch end and
at the end. Loggers are callbacks, chosen by name in ``train.loggers``; ``metrics.jsonl`` and the
checkpoint stay the source of truth, so a logger may fail or be added on resume without harm.

- ``csv``: ``metrics.csv`` beside ``metrics.jsonl``, rewritten whole at each epoch end (it agrees
  with the checkpoint after any kill, like the jsonl);
- ``tensorboard``: event files under ``RUN/tensorboard`` (``torch.utils.tensorboard``; ``pip install
  tensorboard``): scalars ``train/loss``, ``train/beta`` every ``every`` steps, ``epoch/train_loss``,
  ``epoch/test_elbo``, ``epoch/beta`` per epoch, and sample and reconstruction images per epoch
  for image data. On resume, events past the checkpoint's step are purged.
- ``wandb`` (``pip install wandb``) and ``mlflow`` (``pip install mlflow``): the same scalars, the
  config as parameters; one W&B run per run folder (its id is stored in the folder, so a resumed
  run continues it).
"""

import csv
import io

import torch

from ..config.validate import flatten
from ..errors import ConfigError
from ..evaluation.plots import is_image_shape
from ..files import atomic_write_text
from ..registry import Registry

#: the loggers by their config name (``train.loggers``)
LOGGERS = Registry("train.loggers")


class Callback:
    """Override any hook. ``run`` is a ``RunInfo``: the folder, config, VAE, data, the step the loop
    starts at (after a resume, the checkpoint's) and the metrics history up to it."""

    def on_train_start(self, run):
        pass

    def on_step(self, run, epoch, step, global_step, loss, beta):
        """After each optimiser step: ``loss`` in nats per data point, ``beta`` the KL weight used."""

    def on_epoch_end(self, run, record):
        """After the checkpoint and metrics of an epoch are written; ``record`` is its metrics line."""

    def on_train_end(self, run, history):
        pass


class RunInfo:
    def __init__(self, folder, cfg, vae, data, start_step, history=()):
        self.folder, self.cfg, self.vae, self.data, self.start_step = folder, cfg, vae, data, start_step
        self.history = list(history)  # the epochs' records before this run started (a resume's, reconciled)


@LOGGERS.register("csv")
class CSVLogger(Callback):
    """``metrics.csv``: one row per epoch, the columns of ``metrics.jsonl``."""

    def __init__(self):
        self.history = []

    def on_train_start(self, run):
        self.history = list(run.history)

    def on_epoch_end(self, run, record):
        self.history = [r for r in self.history if r["epoch"] < record["epoch"]] + [record]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(record), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(run.folder.file("metrics.csv"), out.getvalue())


def _epoch_step(run, record):
    """The global step at the end of ``record``'s epoch: epoch scalars share the step axis of step scalars."""
    return record["epoch"] * run.data.num_batches(run.cfg["data"]["batch_size"])


class _ScalarLogger(Callback):
    """Scalars every ``every`` steps and per epoch through ``self._log(dict, step)``."""

    every = 10

    def on_step(self, run, epoch, step, global_step, loss, beta):
        if global_step % self.every == 0:
            self._log({"train/loss": loss, "train/beta": beta}, global_step)

    def on_epoch_end(self, run, record):
        self._log({f"epoch/{k}": record[k] for k in ("train_loss", "test_elbo", "beta")}, _epoch_step(run, record))


@LOGGERS.register("tensorboard")
class TensorBoardLogger(_ScalarLogger):
    """TensorBoard event files under ``RUN/tensorboard``; scalars every ``every`` steps and per epoch,
    sample and reconstruction images per epoch."""

    def __init__(self, every=10, images=16):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.loggers = [\"tensorboard\"] needs the tensorboard package: "
                "pip install tensorboard (or pip install 'pyro-vae[tensorboard]')"
            ) from None
        self.writer_class, self.every, self.images = SummaryWriter, every, images
        self.writer = None

    def on_train_start(self, run):
        self.writer = self.writer_class(
            log_dir=str(run.folder.file("tensorboard")), purge_step=run.start_step + 1 if run.start_step else None
        )

    def _log(self, values, step):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def on_epoch_end(self, run, record):
        super().on_epoch_end(run, record)
        if is_image_shape(run.vae.data_shape):
            step = _epoch_step(run, record)
            with torch.no_grad():
                x = run.data.test[: self.images]
                self.writer.add_images("samples", run.vae.sample(self.images).clamp(0, 1)[:, :3].cpu(), step)
                self.writer.add_images(
                    "reconstructions", torch.cat([x, run.vae.reconstruct(x)]).clamp(0, 1)[:, :3].cpu(), step
                )
        self.writer.flush()

    def on_train_end(self, run, history):
        if self.writer is not None:
            self.writer.close()


def _optional(module, extra):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"train.loggers = [\"{extra}\"] needs the {module} package: pip install {module} "
            f"(or pip install 'pyro-vae[{extra}]')"
        ) from None


@LOGGERS.register("wandb")
class WandbLogger(_ScalarLogger):
    """Weights & Biases: one W&B run per run folder, resumed with it (``project`` names the W&B project)."""

    def __init__(self, project="pyro-vae", every=10):
        self.wandb, self.project, self.every = _optional("wandb", "wandb"), project, every

    def on_train_start(self, run):
        id_file = run.folder.file(".wandb-id")
        run_id = id_file.read_text().strip() if id_file.exists() else self.wandb.util.generate_id()
        atomic_write_text(id_file, run_id)
        self.run = self.wandb.init(
            project=self.project,
            id=run_id,
            resume="allow",
            dir=str(run.folder),
            name=run.folder.path.name,
            config=run.cfg,
        )

    def _log(self, values, step):
        self.run.log(values, step=step)

    def on_train_end(self, run, history):
        self.run.finish()


@LOGGERS.register("mlflow")
class MLflowLogger(_ScalarLogger):
    """MLflow: the config as parameters, the scalars as metrics (``experiment`` names the experiment)."""

    def __init__(self, experiment="pyro-vae", every=10):
        self.mlflow, self.experiment, self.every = _optional("mlflow", "mlflow"), experiment, every

    def on_train_start(self, run):
        self.mlflow.set_experiment(self.experiment)
        self.mlflow.start_run(run_name=run.folder.path.name)
        self.mlflow.log_params({k: str(v) for k, v in flatten(run.cfg).items()})

    def _log(self, values, step):
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in values.items()}, step=step)

    def on_train_end(self, run, history):
        self.mlflow.end_run()


def build_loggers(specs):
    """The logger callbacks ``train.loggers`` lists: names, or tables with their options."""
    return [LOGGERS.build(spec) for spec in specs]
