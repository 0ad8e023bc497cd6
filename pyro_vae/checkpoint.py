"""Checkpoints: plain tensors and Python values only, written atomically, read with ``weights_only=True``."""

import os
import tempfile

import torch

from .errors import CheckpointError

FORMAT = "pyro-vae-checkpoint"
VERSION = 1


def save_checkpoint(path, **state):
    """Write ``state`` to ``path`` atomically: temporary file in the same folder, fsync, rename."""
    state = {"format": FORMAT, "version": VERSION, **state}
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint written by ``save_checkpoint``; any other file is a CheckpointError."""
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path!r}: train first (pyro-vae train --out DIR)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file (KeyError, BadZipFile, ...)
        raise CheckpointError(
            f"{path!r} is truncated, corrupt, or not a pyro-vae checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); retrain, or resume from an intact copy"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is a torch file but not a pyro-vae checkpoint")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path!r} was written by a newer pyro-vae (format {state['version']}); upgrade pyro-vae")
    return state


def restore_module(module, state_dict, path="the checkpoint"):
    """``load_state_dict`` with a message that names the parameters whose shapes differ."""
    own = module.state_dict()
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
            f"{path} is from another architecture: " + "; ".join(parts[:8])
            + ("; ..." if len(parts) > 8 else "") + ". Build the model from the checkpoint's own config."
        )
    module.load_state_dict(state_dict)
