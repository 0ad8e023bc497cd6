"""Registries map config names to classes (or factories); no if-chains on strings.

A registry entry's config parameters are the keyword parameters of its constructor, less
the ones the builder supplies from context (``latent_dim``, ``data_shape``...). So the
config ``{kind = "mixture", components = 10}`` is ``MixturePrior(latent_dim, components=10)``.

Each registry serves one config key (``Registry("model.prior", context=("latent_dim",))``) and is
found by it (``for_key``): the config layer reads and builds every kind through that table, so it
imports none of the layers that define them (the loggers of ``training`` sit above it). Importing
``pyro_vae`` imports every subpackage, so every registry is in the table before a config is read.
"""

import difflib
import inspect

from .errors import ConfigError


def _definition(obj):
    return getattr(obj, "__module__", None), getattr(obj, "__qualname__", repr(obj))


#: config key -> the registry that serves it
_BY_KEY = {}


def for_key(key):
    """The registry of the config key ``key`` (e.g. "model.prior")."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise LookupError(
            f"no registry serves the config key {key!r} (import pyro_vae, which defines them all)"
        ) from None


def component_registries():
    """{config key: registry} of the component tables (``{kind = ..., ...}``), whose ``context`` the builder supplies."""
    return {key: r for key, r in _BY_KEY.items() if r.context is not None}


class Registry:
    """The kinds of one config key. ``context``: the constructor parameters the builder supplies (not
    config parameters) for a key whose value is a component table; None for a key that names a kind."""

    def __init__(self, key, context=None):
        self.what = key  # e.g. "model.prior", used in error messages
        self.context = None if context is None else tuple(context)
        self._entries = {}
        self._hidden = set()
        _BY_KEY[key] = self

    def register(self, name, override=False, hidden=False):
        """Decorator: register ``obj`` under ``name``. Registering the same definition again (the same
        object, or a class of the same module and name: a re-run notebook cell, a re-imported plugin)
        replaces it quietly; another object under a taken name needs ``override=True``. A ``hidden``
        kind works but is not listed among the choices (a record, not an option)."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.what}: a kind is registered under a non-empty string, got {name!r}")

        def decorator(obj):
            old = self._entries.get(name)
            same = old is obj or (old is not None and _definition(old) == _definition(obj))
            if old is not None and not same and not override:
                raise ConfigError(
                    f"{self.what}: {name!r} is already registered to {_definition(old)[1]} from "
                    f"{_definition(old)[0]}; pass override=True to replace it, or choose another name"
                )
            self._entries[name] = obj
            if hidden:
                self._hidden.add(name)
            return obj

        return decorator

    def __contains__(self, name):
        return isinstance(name, str) and name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def names(self):
        return sorted(set(self._entries) - self._hidden)

    def get(self, name):
        if not isinstance(name, str):  # a list, a table, a number: no kind is named so (and some are unhashable)
            raise ConfigError(
                f"{self.what}: a kind is a name (a string), got {name!r}; valid kinds: {', '.join(self.names())}"
            )
        if name not in self._entries:
            hint = difflib.get_close_matches(name, self._entries, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"{self.what}: unknown kind {name!r}{did_you_mean}; valid kinds: {', '.join(self.names())}"
            )
        return self._entries[name]

    def params(self, name, context=()):
        """The config parameters of ``name``, with their defaults (``inspect.Parameter.empty`` if none)."""
        sig = inspect.signature(self.get(name))
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.name not in context and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def check(self, spec, context=None):
        """Validate a ``{kind = ..., param = ...}`` spec; return (kind, params). ``context``: the names the
        builder supplies (default: the registry's own)."""
        context = (self.context or ()) if context is None else context
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, dict):
            raise ConfigError(f"{self.what} must be a table like {{ kind = \"{self.names()[0]}\" }}, got {spec!r}")
        if "kind" not in spec:
            raise ConfigError(f"{self.what} needs a 'kind'; valid kinds: {', '.join(self.names())}")
        kind = spec["kind"]
        params = {k: v for k, v in spec.items() if k != "kind"}
        allowed = self.params(kind, context)
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            valid = ", ".join(allowed) or "none"
            raise ConfigError(
                f"{self.what} kind {kind!r}: unknown parameter(s) {', '.join(unknown)}; valid parameters: {valid}"
            )
        missing = [k for k, d in allowed.items() if d is inspect.Parameter.empty and k not in params]
        if missing:
            raise ConfigError(f"{self.what} kind {kind!r}: missing parameter(s) {', '.join(missing)}")
        return kind, params

    def build(self, spec, **context):
        kind, params = self.check(spec, context=tuple(context))
        try:
            return self.get(kind)(**context, **params)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{self.what} kind {kind!r} with {params}: {e}") from e
