"""The configuration reference, generated from the code's own defaults, bounds, choices and registries, so it
cannot drift from what ``validate`` accepts: one table per section (key, default, allowed values, meaning) and,
for each key whose value is a component, one row per kind with its parameters and their defaults.
``docs/conf.py`` writes it into the documentation at build time."""

import inspect

from ..checks import describe
from ..registry import for_key
from .validate import _BOUNDS, _CHOICES, _OR_WORD, _PATHS, _TYPE_NAMES, DEFAULTS, HELP

#: keys whose value is a component table ({kind = ..., parameters}) or a list of them
COMPONENT_KEYS = (
    "model.encoder",
    "model.decoder",
    "model.prior",
    "model.likelihood",
    "model.posterior",
    "train.elbo",
    "train.optimizer",
    "train.kl_warmup",
    "train.lr_schedule",
    "train.loggers",
    "eval.samplers",
    "eval.features",
)
#: what the builder supplies to a list-valued key's kinds (not config parameters)
_LIST_CONTEXT = {"eval.samplers": ("latent_dim", "prior")}


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _toml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _allowed(key, default):
    """In words, what ``validate`` accepts for ``key``."""
    if key in COMPONENT_KEYS:
        return "a table: { kind = ... } (kinds below)"
    if key in ("data.dataset", "model.kind"):
        return " \\| ".join(f"`{k}`" for k in for_key(key).names())
    if key in _CHOICES:
        return " \\| ".join(f"`{c}`" for c in _CHOICES[key])
    if key in _BOUNDS:
        b = _BOUNDS[key]
        words = describe(b.get("integer", False), b.get("low"), b.get("high"), b.get("strict", False))
        return f'"{_OR_WORD[key]}" or {words}' if key in _OR_WORD else words
    if key in _PATHS:
        return "a path" + (" (empty: none)" if _PATHS[key] else "")
    return _TYPE_NAMES.get(type(default), type(default).__name__)


def _rows(section, table, prefix=""):
    for name, default in table.items():
        key = f"{prefix}{name}"
        if isinstance(default, dict) and key not in COMPONENT_KEYS:
            yield from _rows(section, default, f"{key}.")
        else:
            yield key, default


def _first_line(obj):
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def kinds_table(key):
    """Markdown rows: each kind of the component key ``key``, its parameters (defaults) and its docstring's
    first paragraph."""
    registry = for_key(key)
    lines = [f"### `{key}`", "", "| kind | parameters (defaults) | meaning |", "|---|---|---|"]
    for name in registry.names():
        params = registry.params(name, registry.context or _LIST_CONTEXT.get(key, ()))
        shown = ", ".join(
            f"`{p}`" if d is inspect.Parameter.empty else f"`{p} = {_toml(d)}`" for p, d in params.items()
        )
        lines.append(f"| `{name}` | {_cell(shown)} | {_cell(_first_line(registry.get(name)))} |")
    return lines


def config_reference():
    """The reference as Markdown (MyST): every key of ``DEFAULTS``, then every component key's kinds."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `pyro_vae.config` (its defaults, bounds, choices and registries) when the documentation "
        "is built; [the configuration guide](../guide/configuration.md) explains how to set them.",
        "",
    ]
    top = {k: v for k, v in DEFAULTS.items() if not isinstance(v, dict)}
    for section, table in [("top level", top), *[(k, v) for k, v in DEFAULTS.items() if isinstance(v, dict)]]:
        prefix = "" if section == "top level" else f"{section}."
        out += [
            f"## `[{section}]`" if prefix else "## Top level",
            "",
            "| key | default | allowed | meaning |",
            "|---|---|---|---|",
        ]
        for key, default in _rows(section, table, prefix):
            out.append(f"| `{key}` | `{_cell(_toml(default))}` | {_allowed(key, default)} | {_cell(HELP[key])} |")
        out.append("")
    out += [
        "## Components",
        "",
        "Each component key takes a table `{ kind = \"...\", parameter = value }`; setting "
        "`kind` resets the other parameters to the new kind's defaults.",
        "",
    ]
    for key in COMPONENT_KEYS:
        out += kinds_table(key) + [""]
    return "\n".join(out)
