"""Data parallel training over the processes ``torchrun`` starts (``torch.distributed``).

W processes (ranks) train one model. Each global batch of B points (``data.batch_size``) is cut
into M micro-batches of B / M points (``train.micro_batches``; 0 means M = W), rank r computing
the M / W consecutive ones from r M / W on, each with its own random stream seeded by (seed, step,
micro-batch). Each micro-batch's loss is Pyro's, scaled by its plate to the whole data set
(num_data / (B / M) times its sum), so the average over the M micro-batches is the single-process
loss num_data / B times the sum over the batch, and so is the gradient: after ``loss_and_grads``,
one all-reduce of a flat buffer (every gradient, which of them exist, the loss, a stop flag) sums
the ranks' accumulated gradients and divides by M. The result depends on M, not on W: a 2-rank
run equals a 1-process run with ``train.micro_batches = 2`` (up to the order of float sums).

Rank 0 alone writes the run folder; the others learn its decisions (the output folder, the
resumed checkpoint, an error) from broadcasts. Backends: gloo on the CPU, nccl on CUDA. Without
torchrun (no ``WORLD_SIZE`` > 1 in the environment) everything here is a no-op.
"""

import datetime
import os
import re
import socket
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import launched, local_rank
from ..errors import ConfigError, PyroVAEError, TrainingError
from ..evaluation.metrics import evaluate

#: how long a rank waits for the others at a collective before it gives up
TIMEOUT = datetime.timedelta(minutes=30)


class RankZeroError(PyroVAEError):
    """Rank 0 failed (its message is its error); every other rank stops with it."""


class RendezvousError(PyroVAEError):
    """torchrun's variables are inconsistent, or the ranks did not find each other: each rank says so."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks: ``rank`` of ``size``, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.size > 1

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (plain Python values and tensors; pickled between ranks)."""
        if not self.distributed:
            return value
        box = [value]
        _collective(dist.broadcast_object_list, box, src=0)
        return box[0]

    def on_main(self, fn):
        """``fn()`` run on rank 0 only; its result on every rank. If it raises, rank 0 raises that
        error and every other rank a ``RankZeroError`` with its message, so none waits for ever."""
        if not self.distributed:
            return fn()
        error, result = None, None
        if self.is_main:
            try:
                result = fn()
            except BaseException as e:  # noqa: BLE001 - told to the others, then raised
                error = e
        message = self.broadcast(
            None if error is None else f"rank 0: {error}" if str(error) else f"rank 0: {type(error).__name__}"
        )
        if error is not None:
            raise error
        if message is not None:
            raise RankZeroError(message)
        return self.broadcast(result)

    def all_sum(self, values):
        """The sum over ranks of a list of floats."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        _collective(dist.all_reduce, t)
        return t.tolist()

    def same_parameters(self, module):
        """Copy rank 0's parameters and buffers into ``module`` on every rank."""
        if self.distributed:
            for t in module.state_dict().values():
                _collective(dist.broadcast, t.data, src=0)


def world():
    """The current world: torchrun's, once ``init`` has joined it, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), local_rank())
    return World()


#: how long a rank waits for the others to join (``PYRO_VAE_RENDEZVOUS_TIMEOUT``, seconds)
RENDEZVOUS_TIMEOUT = 300
#: what torchrun sets, and what a rank needs to find the others
ENVIRONMENT = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def check_environment():
    """torchrun's variables, checked for consistency before a rank waits for the others: (rank, world size)."""
    env = os.environ
    shown = ", ".join(f"{k}={env[k]}" for k in ENVIRONMENT if k in env) or "none"
    fix = (
        f"torchrun sets them (torchrun --nproc_per_node=N $(which pyro-vae) train ...); unset them to train in "
        f"one process (set: {shown})"
    )

    def integer(name, low, high=None, default=None):
        text = env.get(name, default)
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise RendezvousError(f"the environment variable {name} = {text!r} is not an integer: {fix}") from None
        if value < low or (high is not None and value >= high):
            bound = f"from {low} to {high - 1}" if high is not None else f">= {low}"
            raise RendezvousError(f"the environment variable {name} = {value} must be {bound}: {fix}")
        return value

    size = integer("WORLD_SIZE", 1)
    rank = integer("RANK", 0, size)
    integer(
        "LOCAL_RANK",
        0,
        integer("LOCAL_WORLD_SIZE", 1, default=size) if "LOCAL_WORLD_SIZE" in env else None,
        default="0",
    )
    if size > 1:
        if not env.get("MASTER_ADDR"):
            raise RendezvousError(
                f"WORLD_SIZE = {size} but MASTER_ADDR is not set, so rank {rank} cannot find the others: {fix}"
            )
        integer("MASTER_PORT", 1, 65536)
    return rank, size


def _wait_for(addr, port, deadline):
    """Return once ``addr:port`` accepts a connection (rank 0's store); a TimeoutError at ``deadline``."""
    while True:
        try:
            with socket.create_connection((addr, port), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens at {addr}:{port} ({e.strerror or e})") from None
            time.sleep(0.2)


def _rendezvous_timeout():
    text = os.environ.get("PYRO_VAE_RENDEZVOUS_TIMEOUT", str(RENDEZVOUS_TIMEOUT))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise RendezvousError(f"PYRO_VAE_RENDEZVOUS_TIMEOUT = {text!r} must be a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def init(device="cpu"):
    """Join torchrun's process group (once) if this process was launched as one of several ranks:
    gloo for ``device = "cpu"``, nccl for CUDA (rank r on GPU ``LOCAL_RANK``). Returns the ``World``.
    The variables are checked first; a rank that finds no other within the rendezvous timeout
    (``PYRO_VAE_RENDEZVOUS_TIMEOUT``, default 300 s) stops with a TrainingError that names them."""
    if dist.is_available() and dist.is_initialized():
        return world()
    if "WORLD_SIZE" in os.environ:
        check_environment()
    if not launched():
        return world()
    if not dist.is_available():
        raise ConfigError("this torch was built without torch.distributed, so it cannot train under torchrun")
    cuda = str(device).startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"device = {device!r} but no CUDA device is available here: use device = \"cpu\"")
        torch.cuda.set_device(local_rank())
    rank, size = check_environment()
    wait = _rendezvous_timeout()
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    where = f"{addr}:{port}"
    try:
        if rank != 0:  # wait here for rank 0's store, so a missing one is our message, not torch's retry log
            _wait_for(addr, port, time.monotonic() + wait.total_seconds())
        store, rank, size = next(dist.rendezvous("env://", timeout=wait))
        dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=size, timeout=TIMEOUT)
    except (RuntimeError, ValueError, OSError) as e:  # DistStoreError, a timeout, a refused connection
        raise RendezvousError(
            f"rank {rank} of WORLD_SIZE = {size} found no other rank at MASTER_ADDR:MASTER_PORT = {where} within "
            f"{wait.total_seconds():g} s ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__}): start every "
            "rank with torchrun --nproc_per_node=N $(which pyro-vae) train ..., or unset WORLD_SIZE, RANK and "
            "MASTER_ADDR to train in one process (PYRO_VAE_RENDEZVOUS_TIMEOUT sets the wait)"
        ) from None
    return world()


def shutdown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device():
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _collective(op, *args, **kwargs):
    """A collective; a dead or failed peer becomes a TrainingError that says where to look."""
    try:
        return op(*args, **kwargs)
    except RuntimeError as e:
        why = re.sub(
            r"^\[[^\]]*\]\s*", "", str(e).splitlines()[0] if str(e) else type(e).__name__
        )  # gloo's source path
        raise TrainingError(
            f"another rank stopped ({why[:120]}); its own error is printed above (torchrun prints every rank's output)"
        ) from None


def micro_batches(cfg, world):
    """M, the micro-batches per global batch (``train.micro_batches``, 0: one per rank), checked."""
    m = cfg["train"]["micro_batches"] or world.size
    b = cfg["data"]["batch_size"]
    if m % world.size:
        raise ConfigError(
            f"train.micro_batches = {m} cannot be shared by {world.size} ranks: use a multiple of "
            f"{world.size} (or 0, one per rank)"
        )
    if b % m:
        raise ConfigError(
            f"data.batch_size = {b} cannot be cut into {m} equal micro-batches "
            f"({'one per rank' if not cfg['train']['micro_batches'] else 'train.micro_batches'}): "
            f"use a batch size divisible by {m}"
        )
    return m


def stream_seed(seed, step, micro):
    """The seed of micro-batch ``micro`` of global step ``step`` (splitmix64 of the three), < 2^63."""
    z = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + micro * 0x94D049BB133111EB + 1) % (1 << 64)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % (1 << 64)
    return (z ^ (z >> 31)) >> 1


class GradientAverager:
    """Averages the gradients of ``params`` (and a loss and a stop flag) over M micro-batches
    spread across the ranks, by one all-reduce of a flat buffer per step. A parameter no micro-batch
    gave a gradient keeps ``grad = None``, as in a single process (Adam then leaves it alone)."""

    def __init__(self, params, world, micro_batches):
        self.params = [p for p in params if p.requires_grad]
        self.world, self.m = world, micro_batches
        n = sum(p.numel() for p in self.params)
        device = self.params[0].device if self.params else torch.device("cpu")
        dtype = self.params[0].dtype if self.params else torch.float32
        # [gradients..., has-gradient flag per parameter, loss, stop flag]
        self.buffer = torch.empty(n + len(self.params) + 2, dtype=dtype, device=device)
        self.views, offset = [], 0
        for p in self.params:
            self.views.append(self.buffer[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        self.flags = self.buffer[offset : offset + len(self.params)]
        self.tail = self.buffer[offset + len(self.params) :]

    def __call__(self, loss, stop=False):
        """Sum the local gradients, loss and stop flag over ranks, divide by M: (mean loss, any stop)."""
        if not self.world.distributed:
            if self.m > 1:
                for p in self.params:
                    if p.grad is not None:
                        p.grad.div_(self.m)
            return loss / self.m, stop
        for p, view, i in zip(self.params, self.views, range(len(self.params))):
            has = p.grad is not None
            if has:
                view.copy_(p.grad)
            else:
                view.zero_()
            self.flags[i] = float(has)
        self.tail[0], self.tail[1] = float(loss), float(bool(stop))
        _collective(dist.all_reduce, self.buffer)
        self.buffer.div_(self.m)
        for p, view, flag in zip(self.params, self.views, self.flags.tolist()):
            p.grad = view if flag > 0 else None  # views of the buffer: refilled only after zero_grad
        loss, stop = self.tail.tolist()
        return loss, stop > 0


@torch.no_grad()
def shared_test_elbo(vae, x, world, seed, batch_size=1000, labels=None):
    """``evaluation.test_elbo`` computed by all ranks together: chunk c of ``batch_size`` points is drawn with
    its own seed on rank c mod W and the sums are added over ranks, so the value does not depend on W."""
    total, n = 0.0, 0
    for c, i in enumerate(range(0, x.shape[0], batch_size)):
        if c % world.size == world.rank:
            torch.manual_seed(stream_seed(seed, -1, c))
            xb, yb = x[i : i + batch_size], None if labels is None else labels[i : i + batch_size]
            total += evaluate(vae, xb, iwae_samples=0, batch_size=batch_size, labels=yb)["elbo"] * xb.shape[0]
            n += xb.shape[0]
    total, n = world.all_sum([total, n])
    return total / n
