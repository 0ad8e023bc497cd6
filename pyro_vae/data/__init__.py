"""Datasets by name (``data.dataset``): in memory (``memory``: the MNIST family, npz, synthetic), read
from disk batch by batch (``images``: image folders, CIFAR-10, CelebA) or rendered batch by batch
(``shapes``: dSprites' factor grid); all register in ``DATASETS``."""

from . import images, shapes  # noqa: F401  (register the datasets read from disk or rendered)
from .memory import DATASETS, Data, from_torch, load_data, resolve_root

__all__ = ["DATASETS", "Data", "from_torch", "load_data", "resolve_root"]
