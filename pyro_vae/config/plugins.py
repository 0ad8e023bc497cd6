"""Plugins: user modules that register their own kinds (priors, likelihoods, estimators, ...).

A plugin is an ordinary module (``my_parts`` on the import path) or a ``.py`` file; importing it
registers its kinds, e.g. ``@PRIORS.register("mine")``. Three ways in:

- ``pyro-vae --import my_parts train ...`` (repeatable; also after the subcommand);
- ``plugins = ["my_parts"]`` in a config file, or ``cfg["plugins"]`` from Python;
- an installed package's entry point in the group ``pyro_vae.plugins``, loaded by every command.

A run records its plugins in its config (``config.toml`` and the checkpoint), and validating that
config imports them first, so ``evaluate``, ``sample``, ``plot`` and ``--resume`` of the run work
in a fresh process; a plugin that cannot be imported is a clear error. A ``.py`` file is recorded
by its absolute path; a module name is searched on ``sys.path`` and in the current folder.
"""

import importlib
import importlib.util
import os
import sys
import warnings

from ..errors import ConfigError, PyroVAEWarning

ENTRY_POINT_GROUP = "pyro_vae.plugins"


def normalise(name):
    """How a plugin is recorded: a ``.py`` file by its absolute path, a module by its dotted name."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"a plugin is a module name or a .py file, got {name!r}")
    name = name.strip()
    return os.path.abspath(name) if name.endswith(".py") else name


def load_plugin(name):
    """Import one plugin (module name or .py file) and return the module; importing twice is a no-op."""
    name = normalise(name)
    try:
        if name.endswith(".py"):
            module_name = "pyro_vae_plugin_" + os.path.splitext(os.path.basename(name))[0]
            if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == name:
                return sys.modules[module_name]
            if not os.path.isfile(name):
                raise FileNotFoundError(f"no file {name}")
            spec = importlib.util.spec_from_file_location(module_name, name)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
            return module
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())  # as `python -m` would: modules beside the user
        return importlib.import_module(name)
    except ConfigError:
        raise
    except SystemExit as e:  # a module written as a script: its exit would end the command without a word
        raise ConfigError(
            f"the plugin {name} called sys.exit({e.code!r}) while being imported: a plugin module only "
            "defines and registers kinds (put script code under if __name__ == \"__main__\":)"
        ) from None
    except Exception as e:
        raise ConfigError(
            f"cannot import the plugin {name} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
            "install it, run from the folder that holds it, or add that folder to PYTHONPATH"
        ) from None


def load_plugins(names):
    """Import each plugin in ``names``; returns their recorded names."""
    for name in names:
        load_plugin(name)
    return [normalise(n) for n in names]


def load_entry_points():
    """Import the plugins installed packages declare in the ``pyro_vae.plugins`` entry-point group;
    one that fails to load is a warning (it must not stop commands that do not use it)."""
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
            loaded.append(ep.value)
        except Exception as e:
            warnings.warn(
                PyroVAEWarning(
                    f"the plugin {ep.name} ({ep.value}) of the {ENTRY_POINT_GROUP} entry points "
                    f"failed to load ({type(e).__name__}: {e})"
                ),
                stacklevel=2,
            )
    return loaded
