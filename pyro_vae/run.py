"""The run folder: one writer at a time, a status that says what happened, files that agree.

- **One writer.** ``RunFolder.acquire`` takes an exclusive advisory lock (``fcntl.flock`` on
  ``.lock``) for the whole run. The kernel drops it when its holder dies, so it is never stale.
- **The checkpoint is the source of truth** for the epoch reached. It holds the metrics history
  too, so on resume ``metrics.jsonl`` is reconciled to it: lines past its epoch are dropped,
  lines it has and the log lacks (a kill between the two writes) are restored.
- **status.json** says what the last writer did: ``running``, ``finished``, ``interrupted`` or
  ``failed``, with the reason and the next step. A ``running`` status whose lock is free belonged
  to a process that was killed (read as ``killed``).
- **Atomic files.** Every file is written by ``files.atomic_write``; the temporary files of a
  writer killed mid-write are removed when the next writer takes the lock.
- **Resume rules.** A setting changed on resume is applied (learning rate, epochs, beta schedule,
  estimator, ...) or refused with the reason (architecture, data, seed, optimiser kind, batch size
  inside an interrupted epoch): ``resume_changes``.
"""

import fcntl
import json
import os
import socket
import time
from datetime import datetime
from pathlib import Path

import pyro

from .builder import build_vae, prepare
from .checkpoint import restore_module
from .config import flatten, validate
from .errors import CheckpointError, ConfigError, RunExistsError, RunFolderError, RunLockedError
from .files import atomic_write_text, check_folder_target, leftover_temps, os_error

CHECKPOINT, METRICS, CONFIG, STATUS, LOCK, SAMPLES = (
    "checkpoint.pt", "metrics.jsonl", "config.toml", "status.json", ".lock", "samples.png")
#: the files a training run writes; --overwrite removes exactly these
RUN_FILES = (CHECKPOINT, METRICS, CONFIG, STATUS, SAMPLES)


def read_metrics(path):
    """The records of a metrics log and the numbers of its damaged lines: (records, damaged)."""
    records, damaged = [], []
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return records, damaged
    except OSError as e:
        raise RunFolderError(f"cannot read {path}: {e.strerror}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records.append(record)
        else:
            damaged.append(number)
    return records, damaged


class RunFolder:
    """A run folder on disk. ``acquire()`` before writing, ``release()`` after (or use ``with``)."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd = None
        self._created = False

    def __str__(self):
        return str(self.path)

    def file(self, name):
        return self.path / name

    # -- the lock ------------------------------------------------------------------------------
    def check_target(self):
        """Refuse, before any work, an --out that cannot be a run folder (a file in the way, no permission)."""
        check_folder_target(self.path)

    def acquire(self, create=True):
        """Take the folder's exclusive lock (creating the folder if ``create``) or raise RunLockedError."""
        self.check_target()
        try:
            if not self.path.is_dir():
                if not create:
                    raise RunFolderError(f"{self.path} does not exist: there is no run to resume there")
                self._created = True
                self.path.mkdir(parents=True)
            fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        except FileExistsError:  # created by another process since the check: not ours to remove
            self._created = False
            return self.acquire(create)
        except OSError as e:
            raise os_error(self.path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{self.path} is in use by another pyro-vae process ({holder}); one process writes a run "
                "folder at a time: wait for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                 .encode())
        self._fd = fd
        return self

    def release(self, remove_if_unused=False):
        """Drop the lock; with ``remove_if_unused``, also remove a folder this process created and
        left empty (a failed start leaves nothing behind)."""
        if self._fd is None:
            return
        if remove_if_unused and self._created and {p.name for p in self.path.iterdir()} <= {LOCK}:
            self.file(LOCK).unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:
                pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def locked_by_another(self):
        """Whether a process other than this object holds the lock (a live writer)."""
        try:
            fd = os.open(self.file(LOCK), os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError:
            return self._fd is None
        finally:
            os.close(fd)

    # -- contents ------------------------------------------------------------------------------
    def holds_run(self):
        """A checkpoint or metrics: something a user could lose. A failed start (config.toml and
        status.json, no checkpoint) holds none and may be trained into again."""
        return self.file(CHECKPOINT).exists() or bool(read_metrics(self.file(METRICS))[0])

    def start_new(self, overwrite):
        """Make the (locked) folder ready for a new run: refuse to replace a run unless ``overwrite``."""
        if self.holds_run() and not overwrite:
            raise self.exists_error()
        for name in RUN_FILES:
            self.file(name).unlink(missing_ok=True)
        self.clean_temps()

    def exists_error(self):
        return RunExistsError(f"{self.path} already holds a run; continue it with --resume {self.path}, "
                              "choose another --out, or pass --overwrite to replace it")

    def clean_temps(self):
        """Remove the temporary files a writer killed mid-write left; returns how many."""
        temps = leftover_temps(self.path)
        for t in temps:
            os.unlink(t)
        return len(temps)

    def write_text(self, name, text):
        try:
            atomic_write_text(self.file(name), text)
        except OSError as e:
            raise os_error(self.file(name), e) from None

    def write_metrics(self, history):
        self.write_text(METRICS, "".join(json.dumps(r) + "\n" for r in history))

    def write_status(self, state, **info):
        record = {"state": state, "pid": os.getpid(), "host": socket.gethostname(),
                  "updated": time.strftime("%Y-%m-%d %H:%M:%S"), **info}
        self.write_text(STATUS, json.dumps(record, indent=1) + "\n")

    def read_status(self):
        """status.json as a dict (``{}`` if none); a ``running`` run whose lock is free reads ``killed``."""
        try:
            status = json.loads(self.file(STATUS).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(status, dict):
            return {}
        if status.get("state") == "running" and not self.locked_by_another():
            status["state"] = "killed"
        return status

    def reconcile(self, history, epoch):
        """Make metrics.jsonl hold exactly ``history`` (the checkpoint's records up to ``epoch``);
        returns a one-line account of what changed, or None."""
        records, damaged = read_metrics(self.file(METRICS))
        if records == history and not damaged:
            return None
        have, keep = {r["epoch"] for r in records}, {r["epoch"] for r in history}
        dropped = sum(r["epoch"] not in keep for r in records)
        restored = len(keep - have)
        self.write_metrics(history)
        parts = [f"dropped {dropped} line(s) past it"] * bool(dropped)
        parts += [f"restored {restored} line(s) from it"] * bool(restored)
        parts += [f"removed {len(damaged)} damaged line(s)"] * bool(damaged)
        return f"{METRICS} reconciled to the checkpoint (epoch {epoch}): " + (", ".join(parts) or "rewritten")

    def load_checkpoint(self):
        """The run's checkpoint, or a CheckpointError that says what the folder holds instead."""
        from .checkpoint import RUN_KEYS, load_checkpoint

        if not self.path.is_dir():
            raise CheckpointError(f"there is no run folder at {self.path}: train one with pyro-vae train --out {self.path}")
        if not self.file(CHECKPOINT).exists():
            status = self.read_status()
            said = f" (status: {status['state']}: {status.get('message', '')})" if status else ""
            raise CheckpointError(
                f"{self.path} holds no checkpoint: no epoch has finished there{said}. "
                f"Train into it with pyro-vae train --out {self.path}")
        return load_checkpoint(self.file(CHECKPOINT), require=tuple(RUN_KEYS))


# -- resume: which settings may change --------------------------------------------------------
APPLY, REFUSE, BETWEEN_EPOCHS = "apply", "refuse", "between epochs"
#: (dotted key or section, rule, why); the first entry that names the key or a section above it decides
RESUME_RULES = [
    ("train.lr_schedule", REFUSE, "the schedule's position and state belong to the run"),
    ("train.grad_clip", APPLY, "from the next step"),
    ("train.precision", APPLY, "the networks' arithmetic from the next step (the weights stay float32)"),
    ("train.micro_batches", APPLY, "the next steps' random streams follow the new count"),
    ("train.early_stop", APPLY, "judged on the whole history"),
    ("train.aux_loss", APPLY, "the auxiliary classification weight from the next step"),
    ("train.labelled_weight", APPLY, "the labelled points' weight from the next step"),
    ("train.optimizer.kind", REFUSE, "the optimiser's saved state (e.g. Adam's moments) belongs to the old kind"),
    ("train.optimizer", APPLY, "applied to the optimiser from the next step"),
    ("train.epochs", APPLY, "training continues to the new count"),
    ("train.beta", APPLY, "the KL weight from the next step"),
    ("train.kl_warmup", APPLY, "the schedule from the next step"),
    ("train.target_rate", APPLY, "constrained mode from the next step"),
    ("train.beta_lr", APPLY, "constrained mode from the next step"),
    ("train.loggers", APPLY, "loggers only read what the loop reports"),
    ("train.elbo", APPLY, "estimators hold no state: the new one trains from the next step"),
    ("train.out", APPLY, "the run folder is where it is now"),
    ("plugins", APPLY, "modules imported before the config is read"),
    ("eval", APPLY, "evaluation settings"),
    ("device", APPLY, "weights, optimiser state and data move to the new device"),
    ("data.root", APPLY, "where the same dataset is found"),
    ("data.download", APPLY, "whether a missing dataset may be downloaded"),
    ("data.workers", APPLY, "how many processes read the images"),
    ("data.labelled_batch", APPLY, "the labelled points seen beside the next steps' batches"),
    ("data.batch_size", BETWEEN_EPOCHS, "the interrupted epoch's batches were cut at the old size"),
    ("seed", REFUSE, "the seed fixes the run's data order and every random draw"),
    ("data", REFUSE, "a run trains on one dataset, binarised one way"),
    ("model", REFUSE, "the checkpoint's weights belong to the saved architecture"),
]


def _rule(key):
    for name, rule, why in RESUME_RULES:
        if key == name or key.startswith(name + "."):
            return rule, why
    return REFUSE, "it cannot change inside a run"


def resume_changes(saved, cfg, mid_epoch):
    """The settings ``cfg`` changes from the checkpoint's ``saved`` config, as (key, old, new) lines
    to apply; raises ConfigError naming every refused change and why (``mid_epoch``: the checkpoint
    was saved inside an epoch)."""
    old, new = flatten(saved), flatten(cfg)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    applied, refused = [], []
    for key in changed:
        rule, why = _rule(key)
        line = (key, old.get(key, "(unset)"), new.get(key, "(unset)"))
        if rule == APPLY or (rule == BETWEEN_EPOCHS and not mid_epoch):
            applied.append(line)
        else:
            when = " inside an interrupted epoch" if rule == BETWEEN_EPOCHS else ""
            refused.append(f"{key} ({line[1]!r} -> {line[2]!r}){when}: {why}")
    if refused:
        hint = ("resume once without it and change it after the epoch ends" if all("interrupted epoch" in r for r in refused)
                else "start a new run with --out for that (a run keeps its architecture, data and seed)")
        raise ConfigError("cannot change on resume: " + "; ".join(refused) + f". {hint[0].upper()}{hint[1:]}")
    return [line for line in applied if line[0] != "train.out"]


# -- reading a run back ---------------------------------------------------------------------
def default_out(cfg):
    """``train.out`` with NAME replaced by DATASET-DATE-TIME."""
    out = cfg["train"]["out"]
    if "NAME" in out:
        out = out.replace("NAME", f"{cfg['data']['dataset']}-{datetime.now():%Y%m%d-%H%M%S}")
    return out


def load_run(run_dir, data=None):
    """Rebuild a trained VAE and its data from a run folder: returns (cfg, vae, data). ``data`` (a
    ``Data``, or a torch Dataset/DataLoader) replaces the data the config names."""
    folder = RunFolder(run_dir)
    state = folder.load_checkpoint()
    cfg = saved_config(state["config"], folder.file(CHECKPOINT))
    data, vae, _, _ = prepare(cfg, data)
    restore_module(vae, state["model"], str(folder.file(CHECKPOINT)))
    return cfg, vae, data


def load_model(run_dir):
    """Rebuild a trained VAE from a run folder's checkpoint, or from a file ``pyro-vae export`` wrote,
    without loading its data (for sampling): returns (cfg, vae). Checkpoints older than
    ``data_shape`` fall back to ``load_run``."""
    if os.path.isfile(run_dir):
        from .export import read_model

        cfg, shape, weights = read_model(run_dir)
        cfg = saved_config(cfg, run_dir)
        vae = build_vae(cfg, shape)
        restore_module(vae, weights, str(run_dir))
        return cfg, vae
    folder = RunFolder(run_dir)
    state = folder.load_checkpoint()
    cfg = saved_config(state["config"], folder.file(CHECKPOINT))
    shape = state.get("data_shape")
    if not (isinstance(shape, list) and shape and all(isinstance(s, int) and s > 0 for s in shape)):
        cfg, vae, _ = load_run(run_dir)
        return cfg, vae
    pyro.set_rng_seed(cfg["seed"])
    vae = build_vae(cfg, tuple(shape))
    restore_module(vae, state["model"], str(folder.file(CHECKPOINT)))
    return cfg, vae


#: keys added with a default that differs from what came before them: a config saved without the key
#: trained with this value, and reads back with it (an old m2 run resumes with the objective it had)
BEFORE_THE_KEY = {("train", "labelled_weight"): 1.0}


def saved_config(cfg, where):
    """A config read back from a checkpoint or model file ``where``, validated (its plugins imported)."""
    if isinstance(cfg, dict):
        cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
        for (section, key), value in BEFORE_THE_KEY.items():
            if isinstance(cfg.get(section), dict) and key not in cfg[section]:
                cfg[section][key] = value
    try:
        return validate(cfg)
    except ConfigError as e:
        raise CheckpointError(f"{where} holds a config this pyro-vae cannot read ({e})") from None
