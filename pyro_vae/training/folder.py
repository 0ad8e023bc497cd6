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

Which settings may change on resume is ``resume``'s; reading a run back into a model is ``load``'s.
"""

import fcntl
import hashlib
import json
import os
import socket
import time
from datetime import datetime
from pathlib import Path

from ..errors import CheckpointError, RunExistsError, RunFolderError, RunLockedError, UsageError
from ..files import atomic_write_text, check_folder_target, check_path, leftover_temps, os_error
from .checkpoint import RUN_KEYS, load_checkpoint

CHECKPOINT, METRICS, CONFIG, STATUS, LOCK, SAMPLES = (
    "checkpoint.pt",
    "metrics.jsonl",
    "config.toml",
    "status.json",
    ".lock",
    "samples.png",
)
#: the files a training run writes; --overwrite removes exactly these
RUN_FILES = (CHECKPOINT, METRICS, CONFIG, STATUS, SAMPLES)
#: the files of a run that its later commands read (resume, evaluate, sample, plot): no output replaces them
NEEDED = (CHECKPOINT, METRICS, CONFIG, STATUS, LOCK)


def check_output_file(path, inputs=(), hint="choose another file name", guard_run=True):
    """``path`` as a str if a command may write the file there; a UsageError where it would replace a file a
    run needs (the checkpoint, config, metrics, status or lock of a run folder; ``guard_run=False``: the
    run itself writes them) or one of the ``inputs`` the command reads."""
    path = Path(check_path(path, "the output file", hint))
    if (
        guard_run
        and path.name in NEEDED
        and any((path.parent / name).exists() for name in (CHECKPOINT, METRICS, STATUS, LOCK))
    ):
        raise UsageError(
            f"{path} is the {path.name} of the run in {path.parent or '.'}: writing there would destroy the run; {hint}"
        )
    for given in inputs:
        try:
            same = os.path.samefile(path, given)
        except OSError:  # either is missing: not the same file
            same = False
        if same:
            raise UsageError(
                f"{path} is {given}, which this command reads: writing there would destroy its input; {hint}"
            )
    return str(path)


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


def checkpoint_digest(folder):
    """SHA-256 of the run's checkpoint file (None without one): what a result derived from it belongs to."""
    path = Path(folder) / CHECKPOINT
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


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
                "folder at a time: wait for it to finish, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
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
        if not self.file(CHECKPOINT).exists():  # metrics without their checkpoint: nothing to continue
            return RunExistsError(
                f"{self.path} holds the metrics of a run whose {CHECKPOINT} is gone, so it cannot be "
                f"continued: put the checkpoint back, choose another --out, or pass --overwrite "
                "to replace it"
            )
        return RunExistsError(
            f"{self.path} already holds a run; continue it with --resume {self.path}, "
            "choose another --out, or pass --overwrite to replace it"
        )

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
        record = {
            "state": state,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
            **info,
        }
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
        if not self.path.is_dir():
            raise CheckpointError(
                f"there is no run folder at {self.path}: train one with pyro-vae train --out {self.path}"
            )
        if not self.file(CHECKPOINT).exists():
            epochs = len(read_metrics(self.file(METRICS))[0])
            if epochs:  # the run trained, and its weights were deleted or moved
                raise CheckpointError(
                    f"{self.path} holds metrics of {epochs} epoch(s) but its {CHECKPOINT} is gone (deleted or moved), "
                    f"so its weights are lost: put the checkpoint back, or train again with pyro-vae train --out "
                    f"{self.path} --overwrite"
                )
            status = self.read_status()
            said = f" (status: {status['state']}: {status.get('message', '')})" if status else ""
            raise CheckpointError(
                f"{self.path} holds no checkpoint: no epoch has finished there{said}. "
                f"Train into it with pyro-vae train --out {self.path}"
            )
        return load_checkpoint(self.file(CHECKPOINT), require=tuple(RUN_KEYS))


def default_out(cfg):
    """``train.out`` with NAME replaced by DATASET-DATE-TIME."""
    out = cfg["train"]["out"]
    if "NAME" in out:
        out = out.replace("NAME", f"{cfg['data']['dataset']}-{datetime.now():%Y%m%d-%H%M%S}")
    return out
