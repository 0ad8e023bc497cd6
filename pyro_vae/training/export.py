"""Sharing a trained model: ``export_model(RUN, FILE)`` writes the run's VAE as a model file
(``model_file``: safetensors or a torch file of plain tensors, with its config), which
``load_model(FILE)`` rebuilds for inference without the training data."""

from .load import load_model
from .model_file import write_model


def export_model(run_dir, path):
    """Write the trained VAE of the run folder ``run_dir`` to ``path``; returns the number of parameters."""
    cfg, vae = load_model(run_dir)
    return write_model(path, cfg, vae)
