"""The config: defaults and validation (``validate``), TOML files and ``--set`` (``load``), plugins, and
the objects a config describes (``build``)."""

from .build import build_elbo, build_optimizer, build_vae, prepare
from .load import apply_overrides, dump_toml, load_config
from .validate import DEFAULTS, validate

__all__ = [
    "DEFAULTS",
    "apply_overrides",
    "build_elbo",
    "build_optimizer",
    "build_vae",
    "dump_toml",
    "load_config",
    "prepare",
    "validate",
]
