"""Data parallel training under torchrun (gloo, 2 CPU ranks): the same numbers as one process with the
same micro-batches, resume after an interrupt, and a failing rank stopping the other."""

import json
import os
import subprocess
import sys

import pytest
import torch

import pyro_vae
from pyro_vae.errors import ConfigError
from pyro_vae.training.distributed import GradientAverager, World, micro_batches, stream_seed

SETTINGS = [
    "data.dataset=synthetic",
    "train.epochs=2",
    "data.batch_size=64",
    "model.latent_dim=2",
    "model.encoder.hidden=[32]",
    "model.decoder.hidden=[32]",
    "seed=3",
]


def torchrun(tmp_path, *args, nproc=2, timeout=120):
    """``torchrun --nproc_per_node=2 -m pyro_vae ARGS`` in tmp_path, one thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "pyro_vae",
        *args,
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def sets(*extra):
    return [a for s in [*SETTINGS, *extra] for a in ("--set", s)]


def weights(folder):
    return torch.load(os.path.join(folder, "checkpoint.pt"), weights_only=True)["model"]


def metrics(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    r = torchrun(tmp, "train", *sets(), "--out", "runs/ddp", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "runs" / "ddp", r


def test_two_ranks_equal_one_process_with_the_same_micro_batches(two_rank_run, tmp_path):
    folder, r = two_rank_run
    assert "2 ranks, 2 micro-batches of 32 per batch of 64" in r.stdout
    assert r.stdout.count("epoch   1") == 1  # rank 0 alone speaks
    cfg = pyro_vae.load_config(overrides=[*SETTINGS, "train.micro_batches=2"])
    pyro_vae.train(cfg, tmp_path / "one", progress=False, log=lambda *a: None)
    a, b = weights(folder), weights(tmp_path / "one")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)
    for x, y in zip(metrics(folder), metrics(tmp_path / "one")):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-6)
        assert x["test_elbo"] == pytest.approx(y["test_elbo"], rel=1e-6)
    # and the plain one-process run (one micro-batch) draws other noise: not the same numbers
    pyro_vae.train(pyro_vae.load_config(overrides=SETTINGS), tmp_path / "plain", progress=False, log=lambda *a: None)
    assert not torch.allclose(weights(tmp_path / "plain")["encoder.net.0.weight"], b["encoder.net.0.weight"])


STOPPER = """
import os, signal
from pyro_vae.training.callbacks import LOGGERS, Callback

@LOGGERS.register("sigterm_at_step_9")
class Stop(Callback):
    def on_step(self, run, epoch, step, global_step, loss, beta):
        if global_step == 9:
            os.kill(os.getpid(), signal.SIGTERM)  # rank 0 only: the other rank learns it at the next all-reduce
"""


def test_an_interrupted_two_rank_run_resumes_to_the_uninterrupted_result(two_rank_run, tmp_path):
    (tmp_path / "stopper.py").write_text(STOPPER)
    r = torchrun(
        tmp_path,
        "--import",
        "stopper.py",
        "train",
        *sets('train.loggers=["sigterm_at_step_9"]'),
        "--out",
        "runs/cut",
        "--quiet",
    )
    assert r.returncode != 0
    assert "SIGTERM at epoch 1, step 10 of 31: saved a checkpoint at this step" in r.stderr, r.stderr[-3000:]
    status = json.loads((tmp_path / "runs/cut/status.json").read_text())
    assert status["state"] == "interrupted"
    r = torchrun(tmp_path, "train", "--resume", "runs/cut", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming runs/cut at epoch 1, step 10 of 31" in r.stdout
    a, b = weights(two_rank_run[0]), weights(tmp_path / "runs/cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [m["epoch"] for m in metrics(tmp_path / "runs/cut")] == [1, 2]


BOOM = """
import os
import pyro.infer
from pyro_vae.infer.estimators import ESTIMATORS

@ESTIMATORS.register("boom_on_rank_1")
class Boom(pyro.infer.Trace_ELBO):
    calls = 0

    def loss_and_grads(self, model, guide, *args, **kwargs):
        Boom.calls += 1
        if os.environ.get("RANK") == "1" and Boom.calls == 3:
            raise RuntimeError("boom on rank 1")
        return super().loss_and_grads(model, guide, *args, **kwargs)
"""


def test_a_failing_rank_stops_the_others_with_a_clear_message(tmp_path):
    (tmp_path / "boom.py").write_text(BOOM)
    r = torchrun(
        tmp_path,
        "--import",
        "boom.py",
        "train",
        *sets("train.elbo.kind=boom_on_rank_1"),
        "--out",
        "runs/boom",
        "--quiet",
    )
    assert r.returncode != 0
    assert "boom on rank 1" in r.stderr
    assert "another rank stopped" in r.stderr  # rank 0's one line
    status = json.loads((tmp_path / "runs/boom/status.json").read_text())
    assert status["state"] == "failed" and "another rank stopped" in status["message"]


def test_rank_zero_refusals_reach_every_rank(two_rank_run, tmp_path):
    """An existing run folder is rank 0's to judge; the others stop with it instead of waiting."""
    folder = two_rank_run[0]
    r = torchrun(folder.parent.parent, "train", *sets(), "--out", "runs/ddp", "--quiet")
    assert r.returncode != 0
    assert r.stderr.count("already holds a run") == 1, r.stderr[-3000:]


def test_micro_batches_must_divide_the_batch_and_be_shared_by_the_ranks():
    cfg = pyro_vae.load_config(overrides=["data.batch_size=64", "train.micro_batches=3"])
    with pytest.raises(ConfigError, match="cannot be cut into 3 equal micro-batches"):
        micro_batches(cfg, World())
    cfg = pyro_vae.load_config(overrides=["data.batch_size=64", "train.micro_batches=2"])
    with pytest.raises(ConfigError, match="cannot be shared by 4 ranks"):
        micro_batches(cfg, World(0, 4))
    assert micro_batches(pyro_vae.load_config(overrides=["data.batch_size=64"]), World(1, 4)) == 4
    assert micro_batches(cfg, World(0, 2)) == 2


def test_stream_seeds_differ_across_steps_micro_batches_and_seeds():
    seeds = {stream_seed(s, t, m) for s in range(3) for t in range(-1, 50) for m in range(8)}
    assert len(seeds) == 3 * 51 * 8 and all(0 <= x < 2**63 for x in seeds)


def test_one_process_micro_batches_average_the_gradients():
    """M micro-batches in one process: the gradient and loss are the means over the micro-batches."""
    p = torch.nn.Parameter(torch.zeros(3))
    q = torch.nn.Parameter(torch.zeros(2))  # no gradient: stays None
    p.grad = torch.tensor([2.0, 4.0, 6.0])  # the sum over M = 2 micro-batches
    loss, stop = GradientAverager([p, q], World(), 2)(10.0, False)
    assert loss == 5.0 and not stop
    assert torch.equal(p.grad, torch.tensor([1.0, 2.0, 3.0])) and q.grad is None
