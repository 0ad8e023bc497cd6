"""The run folder under real faults: SIGKILL at any write, two writers, resume with changed settings,
failed starts and failed runs, and the status the folder reports after each."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch

from pyro_vae import ConfigError, DataError, TrainingError, load_checkpoint, train
from pyro_vae.data import Data
from pyro_vae.errors import RunExistsError, RunFolderError, RunLockedError
from pyro_vae.training.folder import RunFolder, read_metrics
from pyro_vae.training.monitor import DivergenceMonitor, DivergenceWarning
from pyro_vae.training.resume import resume_changes

from ..conftest import small_config

QUIET = dict(progress=False, log=lambda s: None)
EPOCHS = 3

#: a child process that trains (or resumes) the small synthetic run in argv[1], and SIGKILLs itself at
#: its argv[2]-th file write, at stage argv[3]: before the temporary file, after writing it (before the
#: rename), or after the rename. argv[2] = 0: no kill.
CHILD = textwrap.dedent(f"""
    import os, signal, sys
    import torch
    import pyro_vae.training.checkpoint, pyro_vae.files
    from pyro_vae import load_config, train
    from pyro_vae.training.folder import RunFolder

    torch.set_num_threads(1)
    folder, kill_at, stage = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    original, calls = pyro_vae.files.atomic_write, [0]

    def atomic_write(path, write):
        calls[0] += 1
        now = calls[0] == kill_at
        if now and stage == "before":
            os.kill(os.getpid(), signal.SIGKILL)

        def write_then_maybe_die(f):
            write(f)
            if now and stage == "written":
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        original(path, write_then_maybe_die)
        if now and stage == "renamed":
            os.kill(os.getpid(), signal.SIGKILL)

    pyro_vae.files.atomic_write = pyro_vae.training.checkpoint.atomic_write = atomic_write
    cfg = load_config(overrides=["data.dataset=synthetic", "data.batch_size=50", "model.latent_dim=4",
                                 "model.encoder.hidden=[32]", "model.decoder.hidden=[32]", "train.epochs={EPOCHS}"])
    resume = os.path.exists(os.path.join(folder, "checkpoint.pt"))
    train(cfg, folder, resume=resume, progress=False, log=lambda s: None)
""")


def child(folder, kill_at=0, stage="before"):
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(kill_at), stage], capture_output=True, text=True, timeout=300
    )


def strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.slow  # the cheaper form of the same check runs by default: the random-time kills below
def test_sigkill_at_random_writes_then_resume_equals_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    assert child(reference).returncode == 0
    rng = random.Random(11)
    folder = tmp_path / "killed"
    for attempt in range(4):
        done = load_checkpoint(folder)["epoch"] if (folder / "checkpoint.pt").exists() else 0
        # a process writes config + status, then per epoch checkpoint + metrics + status, then the final status
        writes = 2 + 3 * (EPOCHS - done) + 1
        kill_at, stage = rng.randint(1, writes), rng.choice(["before", "written", "renamed"])
        result = child(folder, kill_at, stage)
        assert result.returncode == -signal.SIGKILL, result.stderr
        # a dead writer's "running" reads as killed: its lock is free
        assert RunFolder(folder).read_status().get("state") in (None, "killed", "finished")
    final = child(folder)
    assert final.returncode == 0, final.stderr
    records, damaged = read_metrics(folder / "metrics.jsonl")
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1)) and not damaged
    assert strip(records) == strip(read_metrics(reference / "metrics.jsonl")[0])
    a, b = load_checkpoint(folder), load_checkpoint(reference)
    assert a["epoch"] == b["epoch"] == EPOCHS
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert json.loads((folder / "status.json").read_text())["state"] == "finished"


#: the child above on a slow file system that narrates: each of the package's writes stops half-way for SLOW
#: seconds ("half NAME"), and each fsync and rename waits SLOW seconds ("fsync NAME", "replace NAME", "replaced
#: NAME"), all appended to the trace file argv[4], so that a kill can land inside a checkpoint's write (half
#: written, synced, being renamed) and the parent can tell where it landed
SLOW = 0.1
SLOW_CHILD = (
    textwrap.dedent("""
    import io, os, sys, time
    import pyro_vae.files, pyro_vae.training.checkpoint
    trace, slow = open(sys.argv[4], "a", buffering=1), float(sys.argv[5])
    fsync, replace, real_atomic_write = os.fsync, os.replace, pyro_vae.files.atomic_write

    def slow_fsync(fd):
        trace.write("fsync " + os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) + "\\n")
        time.sleep(slow)
        fsync(fd)

    def slow_replace(src, dst):
        trace.write("replace " + os.path.basename(dst) + "\\n")
        time.sleep(slow)
        replace(src, dst)
        trace.write("replaced " + os.path.basename(dst) + "\\n")

    def halting_atomic_write(path, write):
        def halting(f):
            buffer = io.BytesIO()
            write(buffer)
            data = buffer.getvalue()
            f.write(data[:len(data) // 2])
            f.flush()
            trace.write("half " + os.path.basename(os.fspath(path)) + "\\n")
            time.sleep(slow)
            f.write(data[len(data) // 2:])

        real_atomic_write(path, halting)

    os.fsync, os.replace = slow_fsync, slow_replace
    pyro_vae.files.atomic_write = pyro_vae.training.checkpoint.atomic_write = halting_atomic_write
""")
    + CHILD
)


def test_sigkill_at_random_times_then_resume_equals_an_uninterrupted_run(tmp_path):
    """SIGKILL at random times across whole runs (start-up, mid-epoch, between files) and, once per run at least,
    inside a checkpoint's write (its temporary file written, before or during the rename), on a slow file system;
    then a resume to the end equals an uninterrupted run. A new seed each time; a failure names it, and
    PYRO_VAE_KILL_SEED=<seed> repeats its kill times."""
    seed = int(os.environ.get("PYRO_VAE_KILL_SEED") or random.SystemRandom().randrange(2**31))
    rng, why = random.Random(seed), f"kill seed {seed} (PYRO_VAE_KILL_SEED={seed} repeats it)"
    trace = tmp_path / "trace"

    def start(folder):
        return subprocess.Popen(
            [sys.executable, "-c", SLOW_CHILD, str(folder), "0", "never", str(trace), str(SLOW)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def lines():
        return trace.read_text().splitlines() if trace.exists() else []

    def inside_checkpoint(line):  # the checkpoint half written, being synced, or being renamed into place
        return (
            line == "half checkpoint.pt"
            or (line.startswith("fsync ") and "checkpoint" in line)
            or line == "replace checkpoint.pt"
        )

    began = time.monotonic()
    reference = start(tmp_path / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    lifetime = time.monotonic() - began  # a whole run's, start-up included, on the slow file system
    folder, landed = tmp_path / "killed", []
    for attempt in range(4):
        seen = len(lines())
        proc = start(folder)
        if attempt in (0, 2):  # inside a checkpoint's write: once it is half written, a moment into the window
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline and "half checkpoint.pt" not in lines()[seen:]:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 2.5 * SLOW))
        else:
            time.sleep(rng.uniform(0, lifetime))
        proc.kill()
        proc.wait(timeout=60)
        landed.append((lines()[seen:] or ["(nothing written)"])[-1])
        # a dead writer's "running" reads as killed: its lock is free
        assert RunFolder(folder).read_status().get("state") in (None, "killed", "finished"), (why, landed)
    final = start(folder)
    assert final.wait(timeout=300) == 0, (why, landed, final.stderr.read())
    assert any(inside_checkpoint(line) for line in landed), (why, "no kill landed inside a checkpoint's write", landed)
    records, damaged = read_metrics(folder / "metrics.jsonl")
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1)) and not damaged, (why, landed)
    assert strip(records) == strip(read_metrics(tmp_path / "reference" / "metrics.jsonl")[0]), (why, landed)
    a, b = load_checkpoint(folder), load_checkpoint(tmp_path / "reference")
    assert a["epoch"] == b["epoch"] == EPOCHS, (why, landed)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"]), (why, landed)
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")], (why, landed)
    assert json.loads((folder / "status.json").read_text())["state"] == "finished", (why, landed)


def test_resume_reconciles_metrics_to_the_checkpoint_and_removes_temporary_files(tmp_path, synthetic):
    cfg = small_config("train.epochs=2")
    train(small_config("train.epochs=1"), tmp_path, data=synthetic, **QUIET)
    line = (tmp_path / "metrics.jsonl").read_text()
    # a writer killed after the metrics of an epoch whose checkpoint it never wrote, and mid-write of a checkpoint
    (tmp_path / "metrics.jsonl").write_text(line + line.replace('"epoch": 1', '"epoch": 2') + "{damaged\n")
    (tmp_path / ".checkpoint-abc123.tmp").write_bytes(b"half")
    said = []
    train(cfg, tmp_path, resume=True, data=synthetic, progress=False, log=said.append)
    assert any("removed 1 temporary file" in s for s in said)
    assert any(
        "reconciled to the checkpoint (epoch 1): dropped 1 line(s) past it" in s and "1 damaged" in s for s in said
    )
    assert any(s.startswith(f"resuming {tmp_path} at epoch 2, step 0 of 40") for s in said)
    records, damaged = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and not damaged
    assert not list(tmp_path.glob(".*.tmp"))

    # the checkpoint reached epoch 2 but the log lost that line: the line comes back from the checkpoint
    (tmp_path / "metrics.jsonl").write_text(line)
    said.clear()
    train(cfg, tmp_path, resume=True, data=synthetic, progress=False, log=said.append)
    assert any("restored 1 line(s)" in s for s in said)
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")[0]] == [1, 2]


def test_a_locked_folder_refuses_a_second_writer(tmp_path, synthetic):
    with RunFolder(tmp_path / "run"):
        for resume in (False, True):
            with pytest.raises(
                RunLockedError, match=r"in use by another pyro-vae process \(pid \d+.*choose another --out"
            ):
                train(small_config(), tmp_path / "run", resume=resume, overwrite=True, data=synthetic, **QUIET)
    assert {p.name for p in (tmp_path / "run").iterdir()} == {".lock"}  # nothing written by the refused runs
    train(small_config(), tmp_path / "run", data=synthetic, **QUIET)  # released: now it trains
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_two_concurrent_trainings_into_one_folder_exactly_one_runs(tmp_path):
    folder = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "pyro_vae.cli",
        "train",
        "--out",
        str(folder),
        "--quiet",
        "--set",
        "data.dataset=synthetic",
        "--set",
        "train.epochs=3",
        "--set",
        "model.latent_dim=4",
    ]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    err = next(e for rc, e in results if rc == 2)
    assert err.count("\n") == 1 and ("in use by another pyro-vae process" in err or "already holds a run" in err)
    records, damaged = read_metrics(folder / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3] and not damaged
    assert load_checkpoint(folder)["config"]["train"]["epochs"] == 3


def test_the_lock_of_a_killed_process_is_free(tmp_path):
    script = (
        f"from pyro_vae.training.folder import RunFolder; import os, signal; RunFolder({str(tmp_path)!r}).acquire(); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == -signal.SIGKILL
    assert "pid" in (tmp_path / ".lock").read_text()
    with RunFolder(tmp_path) as folder:
        assert not folder.locked_by_another()


def test_resume_with_a_changed_learning_rate_uses_it(tmp_path, synthetic):
    train(small_config("train.epochs=1"), tmp_path, data=synthetic, **QUIET)
    said = []
    train(
        small_config("train.epochs=2", "train.optimizer.lr=0.5"),
        tmp_path,
        resume=True,
        data=synthetic,
        progress=False,
        log=said.append,
    )
    state = load_checkpoint(tmp_path)
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.5 and state["epoch"] == 2
    assert "lr = 0.5" in (tmp_path / "config.toml").read_text()  # config.toml rewritten on resume
    assert "  train.optimizer.lr: 0.001 -> 0.5" in said
    assert state["optimizer"]["state"]  # Adam's moments were kept, not reset


def test_resume_refuses_what_cannot_change_and_says_why(tmp_path, synthetic):
    train(small_config("train.epochs=1"), tmp_path, data=synthetic, **QUIET)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    for override, why in (
        ("train.optimizer.kind=sgd", "optimiser's saved state"),
        ("model.latent_dim=3", "weights belong to the saved architecture"),
        ("seed=5", "data order"),
        ("data.binarize=static", "one dataset"),
    ):
        with pytest.raises(ConfigError, match=rf"cannot change on resume: .*\({why}|{why}"):
            train(small_config("train.epochs=2", override), tmp_path, resume=True, data=synthetic, **QUIET)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    # a batch size changes between epochs, not inside an interrupted one
    train(small_config("train.epochs=2", "data.batch_size=100"), tmp_path, resume=True, data=synthetic, **QUIET)
    saved = load_checkpoint(tmp_path)["config"]
    with pytest.raises(ConfigError, match="data.batch_size .*inside an interrupted epoch.*after the epoch ends"):
        resume_changes(saved, {**saved, "data": {**saved["data"], "batch_size": 7}}, mid_epoch=True)
    assert resume_changes(saved, {**saved, "data": {**saved["data"], "batch_size": 7}}, mid_epoch=False) == [
        ("data.batch_size", 100, 7)
    ]


def test_cli_resume_refuses_out_config_and_overwrite(tmp_path, capsys):
    from pyro_vae.cli import main

    for extra in (["--out", str(tmp_path / "x")], ["--config", "c.toml"], ["--overwrite"]):
        assert main(["train", "--resume", str(tmp_path), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{extra[0]} cannot go with it" in err
    assert not (tmp_path / "x").exists()


class Poisoned(Data):
    """Training data whose ``at``-th batch of each pass is NaN."""

    def __init__(self, data, at):
        super().__init__(data.train, data.test, binarize=data.binarize)
        self.at = at

    def to(self, device):
        return self

    def batches(self, *args):
        for i, x in enumerate(super().batches(*args)):
            yield x * float("nan") if i == self.at else x


def test_nan_in_the_first_epoch_says_there_is_no_checkpoint_and_the_rerun_works(tmp_path, synthetic):
    with pytest.raises(
        TrainingError,
        match=r"became nan at epoch 1, step 3, before the first epoch ended, so "
        r"there is no checkpoint.*run the same command again",
    ):
        train(small_config(), tmp_path, data=Poisoned(synthetic, 2), **QUIET)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "failed" and "no checkpoint" in status["message"] and status["epoch"] == 0
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.jsonl").exists()
    with pytest.raises(Exception, match="holds no checkpoint: no epoch has finished there.*failed"):
        train(small_config(), tmp_path, resume=True, data=synthetic, **QUIET)
    train(small_config(), tmp_path, data=synthetic, **QUIET)  # the next step works, without --overwrite
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "finished"


def test_nan_after_a_checkpoint_names_the_resume_command(tmp_path, synthetic):
    train(small_config("train.epochs=1"), tmp_path, data=synthetic, **QUIET)
    with pytest.raises(
        TrainingError,
        match=rf"the last good checkpoint .* is kept.*--resume {tmp_path} "
        r"--set train.optimizer.lr=0.0001",
    ):
        train(small_config("train.epochs=2"), tmp_path, resume=True, data=Poisoned(synthetic, 0), **QUIET)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "failed" and status["epoch"] == 1


def test_a_failed_start_leaves_no_folder(tmp_path, synthetic):
    for overrides in (["data.dataset=npz", f"data.path={tmp_path / 'missing.npz'}"], ["data.batch_size=5000"]):
        with pytest.raises(DataError):
            train(small_config(*overrides), tmp_path / "new" / "run", **QUIET)
    assert not (tmp_path / "new").exists() or not (tmp_path / "new" / "run").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays, empty
    with pytest.raises(DataError):
        train(small_config("data.batch_size=5000"), tmp_path / "mine", **QUIET)
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())


def test_out_that_cannot_be_a_run_folder(tmp_path, synthetic, monkeypatch):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        with pytest.raises(RunFolderError, match=rf"{tmp_path / 'file'} is a file, not a folder.*choose another --out"):
            train(small_config(), out, data=synthetic, **QUIET)
    # a folder this process may not write into (tests run as root, so the permission is simulated)
    (tmp_path / "ro").mkdir()
    monkeypatch.setattr("pyro_vae.files.os.access", lambda p, mode: str(p) != str(tmp_path / "ro"))
    with pytest.raises(
        RunFolderError, match=rf"cannot write into {tmp_path / 'ro'}: permission denied; choose another"
    ):
        train(small_config(), tmp_path / "ro" / "run", data=synthetic, **QUIET)
    monkeypatch.undo()

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("pathlib.Path.mkdir", read_only)
    with pytest.raises(RunFolderError, match="the file system is read-only; choose another --out"):
        train(small_config(), tmp_path / "elsewhere", data=synthetic, **QUIET)


def test_existing_run_refused_before_loading_data(tmp_path, synthetic):
    train(small_config(), tmp_path, data=synthetic, **QUIET)
    with pytest.raises(RunExistsError, match="already holds a run"):
        # the data path does not exist: the refusal comes first, without loading data
        train(small_config("data.dataset=npz", "data.path=/nonexistent.npz"), tmp_path, **QUIET)


def test_divergence_monitor_warns_once_on_an_explosion_and_not_on_healthy_curves():
    rng = random.Random(0)
    monitor = DivergenceMonitor()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy curve with noise and a KL warm-up bump: silent
        for t in range(3000):
            monitor.update(90 + 400 * 0.998**t + 20 * (t > 500) * 0.99 ** (t - 500) + rng.gauss(0, 5))
    monitor = DivergenceMonitor()
    with pytest.warns(
        DivergenceWarning, match=r"diverging at step 2\d\d: .*best of .*Lower train.optimizer.lr"
    ) as seen:
        for t in range(400):
            monitor.update(100.0 if t < 200 else 1.5e8, f" at step {t}")
    assert len(seen) == 1


def test_adam_at_lr_10_warns_of_divergence(tmp_path, synthetic):
    cfg = small_config(
        "train.epochs=2", "train.optimizer.lr=10.0", "model.likelihood.kind=gaussian", "data.binarize=none"
    )
    with pytest.warns(DivergenceWarning, match="diverging"):
        try:
            train(cfg, tmp_path, data=load_plain(synthetic), **QUIET)
        except TrainingError:
            pass  # a NaN after the warning is fine: the warning came first


def load_plain(synthetic):
    return Data(synthetic.train, synthetic.test, binarize="none")
