"""Where this process computes: the config's ``device`` as a torch device, and torchrun's placement.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) plain "cuda" is this rank's GPU, ``LOCAL_RANK``.
"""

import os

import torch

from .errors import ConfigError


def launched():
    """Whether torchrun (or another launcher that sets ``WORLD_SIZE``) started several processes."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def local_rank():
    """This process's GPU index on its machine under torchrun (``LOCAL_RANK``; 0 without it)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def device_for(name):
    """The torch device for a config ``device`` on this rank: plain "cuda" is this rank's GPU."""
    if name == "cuda" and launched():
        return torch.device("cuda", local_rank())
    return torch.device(name)


def resolve_device(name):
    """The config's ``device`` as a torch device, refused with the fix where this machine has none."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r} but no CUDA device is available here: use device = \"cpu\"")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("device = \"mps\" but this machine has no Apple-silicon GPU (MPS): use device = \"cpu\"")
    return device_for(name)
