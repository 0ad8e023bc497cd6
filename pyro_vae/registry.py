"""Registries map config names to classes (or factories); no if-chains on strings.

A registry entry's config parameters are the keyword parameters of its constructor, less
the ones the builder supplies from context (``latent_dim``, ``data_shape``...). So the
config ``{kind = "mixture", components = 10}`` is ``MixturePrior(latent_dim, components=10)``.
"""

import difflib
import inspect

from .errors import ConfigError


class Registry:
    def __init__(self, what):
        self.what = what  # e.g. "model.prior", used in error messages
        self._entries = {}

    def register(self, name):
        def decorator(obj):
            if name in self._entries:
                raise ValueError(f"{self.what}: {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def __contains__(self, name):
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def names(self):
        return sorted(self._entries)

    def get(self, name):
        if name not in self._entries:
            hint = difflib.get_close_matches(str(name), self._entries, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"{self.what}: unknown kind {name!r}{did_you_mean}; "
                f"valid kinds: {', '.join(self.names())}"
            )
        return self._entries[name]

    def params(self, name, context=()):
        """The config parameters of ``name``, with their defaults (``inspect.Parameter.empty`` if none)."""
        sig = inspect.signature(self.get(name))
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.name not in context
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def check(self, spec, context=()):
        """Validate a ``{kind = ..., param = ...}`` spec; return (kind, params)."""
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{self.what} must be a table like {{ kind = \"{self.names()[0]}\" }}, got {spec!r}"
            )
        if "kind" not in spec:
            raise ConfigError(
                f"{self.what} needs a 'kind'; valid kinds: {', '.join(self.names())}"
            )
        kind = spec["kind"]
        params = {k: v for k, v in spec.items() if k != "kind"}
        allowed = self.params(kind, context)
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            valid = ", ".join(allowed) or "none"
            raise ConfigError(
                f"{self.what} kind {kind!r}: unknown parameter(s) {', '.join(unknown)}; "
                f"valid parameters: {valid}"
            )
        missing = [
            k for k, d in allowed.items() if d is inspect.Parameter.empty and k not in params
        ]
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
