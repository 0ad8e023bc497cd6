"""Sharing a trained model: ``export_model(RUN, FILE)`` writes the run's VAE as a model file
(``model_file``: safetensors or a torch file of plain tensors, with its config), which
``load_model(FILE)`` rebuilds for inference without the training data."""

from __future__ import annotations

from ..aliases import PathLike
from .folder import check_output_file
from .load import load_model
from .model_file import write_model


def export_model(run_dir: PathLike, path: PathLike) -> int:
    """Write the trained VAE of the run folder (or model file) ``run_dir`` to ``path``, which may not be a file a
    run needs nor ``run_dir`` itself; returns the number of parameters."""
    path = check_output_file(path, inputs=[run_dir], hint="give the model file another name or folder")
    cfg, vae = load_model(run_dir)
    return write_model(path, cfg, vae)
