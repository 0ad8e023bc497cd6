"""Configs from TOML files and ``--set key=value`` overrides (values read as TOML), and back to TOML."""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping

import tomli_w

from ..aliases import Config, Overrides, PathLike
from ..errors import ConfigError
from ..registry import component_registries
from .validate import flatten, validate


def parse_value(text):
    """A ``--set`` value as TOML (numbers, booleans, lists, inline tables); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def split_top_level(text, sep=","):
    """Split at ``sep`` outside brackets and braces."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def apply_overrides(cfg: Config, overrides: Overrides) -> Config:
    """Apply overrides, ``key.sub=value`` strings (values read as TOML) or a mapping
    {"key.sub": value}. Setting a component's ``kind`` resets its other parameters to the new
    kind's defaults (before the other overrides apply), so kinds never inherit stray keys."""
    cfg = copy.deepcopy(cfg)
    parsed = sorted(_parse_overrides(overrides), key=lambda kv: kv[0][-1] != "kind")  # kinds first
    registries = component_registries()
    for path, value in parsed:
        node = cfg
        for i, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
        if path[-1] == "kind" and ".".join(path[:-1]) in registries:
            node.clear()
        node[path[-1]] = value
    return cfg


def _parse_overrides(overrides):
    """[(key path, value)] from ``"a.b=value"`` strings (values read as TOML) or a mapping {"a.b": value}."""
    if isinstance(overrides, Mapping):
        return [(str(key).split("."), value) for key, value in overrides.items()]
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(item, str) for item in overrides):
        raise ConfigError(
            f"overrides must be a list of 'key=value' strings (or a mapping of keys to values), "
            f"got {overrides!r} (e.g. [\"train.epochs=1\"])"
        )
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set needs key=value, got {item!r} (e.g. --set train.epochs=1)")
        key, text = item.split("=", 1)
        parsed.append((key.strip().split("."), parse_value(text.strip())))
    return parsed


def load_config(path: PathLike | None = None, overrides: Overrides = ()) -> Config:
    """Read a TOML file (or start from the defaults), apply overrides, validate."""
    cfg = {}
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"the config path must be a file name, got {type(path).__name__}")
    if path:
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                cfg = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path} is a folder: give a .toml file") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text; TOML files are UTF-8") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    # component tables given in the file replace the default table; --set edits within it. Then only
    # what the file and --set name is kept, so a family's own defaults fill the rest (model.kind=m2 on
    # the command line trains with enumeration unless train.elbo is named too)
    edited = apply_overrides(validate(cfg), overrides)  # which also checks the overrides' form
    given = set(flatten(cfg)) | {".".join(path) for path, _ in _parse_overrides(overrides)}
    return validate(_given_only(edited, given, set(component_registries())))


def _given_only(cfg, given, components, prefix=""):
    """``cfg`` less what no key of ``given`` names: a leaf, or a component table (a key of ``components``),
    is kept where a given key is it, lies inside it, or holds it."""
    out = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        named = any(g == dotted or g.startswith(dotted + ".") or dotted.startswith(g + ".") for g in given)
        if not named:
            continue
        if isinstance(value, dict) and dotted not in components and dotted not in given:
            out[key] = _given_only(value, given, components, dotted + ".")
        else:
            out[key] = value
    return out


def dump_toml(cfg):
    """The config as TOML text (``tomli_w``; the standard library reads TOML but does not write it)."""
    return tomli_w.dumps(cfg)
