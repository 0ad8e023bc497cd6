"""A model file: one self-contained file with a VAE's weights and the config that builds them.

``FILE.safetensors`` (safetensors, the config as JSON metadata; ``pip install safetensors``) or any
other name as a torch file of plain tensors and values (read with ``weights_only=True``).
``write_model`` writes one, ``read_model`` reads it back; ``load.load_model(FILE)`` rebuilds the VAE.
"""

import json
import os

import torch

from ..checks import data_shape
from ..errors import CheckpointError, ConfigError
from ..files import atomic_write, make_folder

FORMAT, VERSION = "pyro-vae-model", 1


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise ConfigError(
            "a .safetensors file needs the safetensors package: pip install safetensors "
            "(or give another file name for a torch file)"
        ) from None
    return safetensors.torch


def write_model(path, cfg, vae):
    """Write ``vae`` and the config ``cfg`` that builds it to ``path``; returns the number of parameters."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a folder: give a file name, e.g. {os.path.join(path, 'model.safetensors')}")
    make_folder(os.path.dirname(os.path.abspath(path)), "choose another file name")
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in vae.state_dict().items()}
    if path.endswith(".safetensors"):
        meta = {
            "format": FORMAT,
            "version": str(VERSION),
            "config": json.dumps(cfg),
            "data_shape": json.dumps(list(vae.data_shape)),
        }
        blob = _safetensors().save(weights, metadata=meta)
        atomic_write(path, lambda f: f.write(blob))
    else:
        state = {
            "format": FORMAT,
            "version": VERSION,
            "config": cfg,
            "data_shape": list(vae.data_shape),
            "model": weights,
        }
        atomic_write(path, lambda f: torch.save(state, f))
    return sum(v.numel() for v in weights.values())


def read_model(path):
    """(config, data_shape, weights) from a file ``export_model`` wrote; a CheckpointError for any other."""
    path = os.fspath(path)
    try:
        if path.endswith(".safetensors"):
            st = _safetensors()
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} is a safetensors file but not a pyro-vae model")
            cfg, shape = json.loads(meta["config"]), json.loads(meta["data_shape"])
            weights = st.load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not a pyro-vae model file (export one with pyro-vae export RUN FILE)")
            cfg, shape, weights = state["config"], state["data_shape"], state["model"]
    except (CheckpointError, ConfigError):
        raise
    except Exception as e:
        raise CheckpointError(
            f"{path} is truncated, corrupt, or not a pyro-vae model file "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if not (isinstance(cfg, dict) and isinstance(weights, dict) and isinstance(shape, list) and shape):
        raise CheckpointError(f"{path} is a pyro-vae model file without a valid config, data shape or weights")
    return cfg, data_shape(f"the data shape in {path}", shape, CheckpointError), weights
