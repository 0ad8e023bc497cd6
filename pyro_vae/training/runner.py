"""``train``: config -> build -> run folder -> loop. It validates the config, opens (or resumes) the run
folder, has ``config.build.prepare`` load the data and build the parts, and hands them to ``loop.Loop``.
The run folder (lock, status, checkpoint as the source of truth, metrics reconciled to it) is ``folder``'s.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..aliases import Config, Log, PathLike

if TYPE_CHECKING:
    import pyro
    import torch

    from ..models.vae import VAE
    from .callbacks import Callback
from ..config.build import build_run
from ..config.validate import validate
from ..data.memory import TORCHVISION_DATASETS, Data, resolve_root
from . import distributed
from .callbacks import build_loggers
from .folder import RunFolder, default_out
from .loop import Loop
from .resume import open_run


def train(
    cfg: Config,
    out: PathLike | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: Any = None,
    log: Log = print,
    vae: VAE | None = None,
    elbo: pyro.infer.ELBO | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    callbacks: Iterable[Callback] = (),
) -> tuple[VAE, list[dict[str, Any]]]:
    """Train the VAE ``cfg`` describes; write the run folder ``out``. Returns (vae, history).

    The folder is locked for the whole run (one writer), its ``status.json`` says what happened,
    and each epoch end writes the checkpoint first, then ``metrics.jsonl`` (both atomically).
    With ``resume=True``, ``out`` must hold a run: its checkpoint (model, optimiser, RNG states,
    epoch and step) is restored, changed settings are applied or refused (``resume.resume_changes``)
    and training continues to ``cfg['train']['epochs']``; on the CPU the result equals an
    uninterrupted run's exactly. SIGINT or SIGTERM saves a checkpoint at the current step and
    raises ``TrainingInterrupted``.

    ``data``, ``vae``, ``elbo`` and ``optimizer``, when given, replace what the config would build
    (the run still checks them, checkpoints them and resumes them: pass the same parts on resume).
    ``callbacks`` (``callbacks.Callback``) are called with every step and epoch record, after the
    loggers ``train.loggers`` names.

    Under ``torchrun`` every rank calls ``train`` with the same arguments; they train one model
    (``distributed``: each rank computes its share of every batch, gradients are averaged) and
    rank 0 alone writes the run folder and runs the loggers and callbacks.
    """
    cfg = validate(cfg)
    world = distributed.init(cfg["device"])
    if not world.is_main:  # rank 0 alone speaks and writes; the others learn its decisions by broadcast
        log, progress, callbacks = _silent, False, ()
    folder = RunFolder(world.broadcast(str(out or default_out(cfg))))
    cfg = _run_config(cfg, folder)
    if data is not None and not isinstance(data, Data):  # a torch Dataset or DataLoader: no name loads it again
        cfg["data"]["dataset"] = "given"
    try:
        state = world.on_main(lambda: open_run(folder, cfg, resume, overwrite, log))
        parts = build_run(cfg, data, vae, elbo, optimizer)
        if not resume:  # the folder is made only now: a failed start leaves none behind
            world.on_main(lambda: (folder.acquire(), folder.start_new(overwrite)) and None)
        callbacks = [*build_loggers(cfg["train"]["loggers"]), *callbacks] if world.is_main else []
        loop = Loop(cfg, folder, parts, world=world, callbacks=callbacks, log=log, progress=progress)
        if state is not None:
            loop.restore(state)
        return parts.vae, loop.run()
    finally:
        if world.is_main:
            folder.release(remove_if_unused=True)


def _silent(*args, **kwargs):
    pass


def _run_config(cfg, out):
    """The config as the run records it: its folder, and its data root as an absolute path (the
    environment variable PYRO_VAE_DATA included), so evaluate finds the data from anywhere."""
    cfg = copy.deepcopy(cfg)
    if cfg["data"]["dataset"] in TORCHVISION_DATASETS:
        cfg["data"]["root"] = os.path.abspath(resolve_root(cfg["data"]["root"]))
    cfg["train"]["out"] = str(out)
    return cfg
