"""Training: ``train`` (config -> build -> run folder -> loop), the loop and its SVI step, the run folder,
checkpoints, callbacks and loggers, torchrun, the divergence monitor, reading runs back and export."""

from .callbacks import LOGGERS, Callback
from .checkpoint import load_checkpoint, save_checkpoint
from .folder import RunFolder
from .load import load_model, load_run
from .runner import train
from .step import svi_step

__all__ = [
    "LOGGERS",
    "Callback",
    "RunFolder",
    "load_checkpoint",
    "load_model",
    "load_run",
    "save_checkpoint",
    "svi_step",
    "train",
]
