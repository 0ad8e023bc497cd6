"""Reading a run back: its config (validated, plugins imported) and its model, from a run folder's
checkpoint or from a model file ``pyro-vae export`` wrote."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pyro
import torch

from ..aliases import Config, PathLike

if TYPE_CHECKING:
    from ..data.memory import Data
    from ..models.vae import VAE
from ..checks import data_shape
from ..config.build import build_vae, prepare, vae_shapes
from ..config.validate import validate
from ..errors import CheckpointError, ConfigError
from .checkpoint import restore_module
from .folder import CHECKPOINT, RunFolder
from .model_file import read_model


def load_run(run_dir: PathLike, data: Any = None) -> tuple[Config, VAE, Data]:
    """Rebuild a trained VAE and its data from a run folder: returns (cfg, vae, data). ``data`` (a
    ``Data``, or a torch Dataset/DataLoader) replaces the data the config names."""
    folder = RunFolder(run_dir)
    state = folder.load_checkpoint()
    cfg = saved_config(state["config"], folder.file(CHECKPOINT))
    if state.get("data_shape") is not None:
        check_weights_fit(
            cfg,
            data_shape(f"the data shape in {folder.file(CHECKPOINT)}", state["data_shape"], CheckpointError),
            state["model"],
            folder.file(CHECKPOINT),
        )
    data, vae, _, _ = prepare(cfg, data)
    restore_module(vae, state["model"], str(folder.file(CHECKPOINT)))
    return cfg, vae, data


def check_weights_fit(cfg, shape, weights, where):
    """Refuse, before anything is built, a file whose config builds a model its weights do not fit: a damaged
    or edited file must not make us allocate what its config says (``build.vae_shapes``: found on torch's
    meta device; a model that cannot be laid out there is checked after it is built, by ``restore_module``)."""
    expected = vae_shapes(cfg, shape)
    if expected is None or not isinstance(weights, dict):
        return
    got = {k: tuple(v.shape) for k, v in weights.items() if torch.is_tensor(v)}
    diffs = [
        f"{k}: file {got.get(k, 'missing')} vs config {expected.get(k, 'none')}"
        for k in sorted(expected.keys() | got.keys())
        if got.get(k) != expected.get(k)
    ]
    if diffs:
        raise CheckpointError(
            f"{where} holds weights that its own config does not build ({'; '.join(diffs[:4])}"
            f"{'; ...' if len(diffs) > 4 else ''}): the file is damaged or was edited; use another"
        )


def load_model(run_dir: PathLike) -> tuple[Config, VAE]:
    """Rebuild a trained VAE from a run folder's checkpoint, or from a file ``pyro-vae export`` wrote,
    without loading its data (for sampling): returns (cfg, vae). Checkpoints older than
    ``data_shape`` fall back to ``load_run``."""
    if os.path.isfile(run_dir):
        cfg, shape, weights = read_model(run_dir)
        cfg = saved_config(cfg, run_dir)
        check_weights_fit(cfg, shape, weights, run_dir)
        vae = build_vae(cfg, shape)
        restore_module(vae, weights, str(run_dir))
        return cfg, vae
    folder = RunFolder(run_dir)
    state = folder.load_checkpoint()
    cfg = saved_config(state["config"], folder.file(CHECKPOINT))
    shape = state.get("data_shape")
    if shape is None:  # a checkpoint from before the data shape was kept
        cfg, vae, _ = load_run(run_dir)
        return cfg, vae
    pyro.set_rng_seed(cfg["seed"])
    shape = data_shape(f"the data shape in {folder.file(CHECKPOINT)}", shape, CheckpointError)
    check_weights_fit(cfg, shape, state["model"], folder.file(CHECKPOINT))
    vae = build_vae(cfg, shape)
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
