"""Checkpoints: plain tensors and Python values only, written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch

from ..aliases import PathLike
from ..errors import CheckpointError
from ..files import atomic_write

FORMAT = "pyro-vae-checkpoint"
VERSION = 1


def save_checkpoint(path: PathLike, **state: Any) -> None:
    """Write ``state`` to ``path`` atomically: temporary file in the same folder, fsync, rename."""
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda f: torch.save(state, f))


#: what a training run's checkpoint holds, and the type of each entry
RUN_KEYS = {"config": dict, "model": dict, "optimizer": dict, "epoch": int, "rng": torch.Tensor}


def load_checkpoint(
    path: PathLike, map_location: str | torch.device = "cpu", require: Iterable[str] = ()
) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; any other file is a CheckpointError, as is
    one that lacks an entry named in ``require`` (names of ``RUN_KEYS``)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}: train first (pyro-vae train --out DIR)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file (KeyError, BadZipFile, ...)
        raise CheckpointError(
            f"{path} is truncated, corrupt, or not a pyro-vae checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); retrain, or resume from an intact copy"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a pyro-vae checkpoint")
    version = state.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path} was written by a newer pyro-vae (format {version}); upgrade pyro-vae")
    bad = [k for k in require if not isinstance(state.get(k), RUN_KEYS[k]) or isinstance(state.get(k), bool)]
    if bad:
        raise CheckpointError(
            f"{path} is a pyro-vae checkpoint without a valid {', '.join(bad)} (damaged or edited): "
            "retrain, or resume from an intact copy"
        )
    return state


def restore_module(module, state_dict, path="the checkpoint"):
    """``load_state_dict`` with a message that names the parameters whose shapes differ."""
    own = module.state_dict()
    if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()):
        raise CheckpointError(f"{path} holds model weights that are not tensors (damaged or edited): retrain")
    damaged = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if damaged:
        raise CheckpointError(
            f"{path} holds weights that are NaN or infinite ({', '.join(damaged[:4])}"
            f"{', ...' if len(damaged) > 4 else ''}): the file is damaged; use another checkpoint or "
            "model file, or retrain"
        )
    diffs = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if diffs or missing or unexpected:
        parts = diffs + [f"missing from checkpoint: {', '.join(missing)}"] * bool(missing)
        parts += [f"not in this model: {', '.join(unexpected)}"] * bool(unexpected)
        raise CheckpointError(
            f"{path} is from another architecture: "
            + "; ".join(parts[:8])
            + ("; ..." if len(parts) > 8 else "")
            + ". Build the model from the checkpoint's own config."
        )
    module.load_state_dict(state_dict)
