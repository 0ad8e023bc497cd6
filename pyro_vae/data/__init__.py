"""Datasets by name (``data.dataset``): in memory (``memory``: the MNIST family, npz, synthetic) or read
from disk batch by batch (``images``: image folders, CIFAR-10, CelebA); both register in ``DATASETS``."""

from . import images  # noqa: F401  (registers the datasets read from disk)
from .memory import DATASETS, Data, from_torch, load_data, resolve_root

__all__ = ["DATASETS", "Data", "from_torch", "load_data", "resolve_root"]
