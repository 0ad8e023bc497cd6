"""Checks of user-given numbers: one helper for the package, so every message has one form,
"NAME must be WHAT, got VALUE", with a hint of what to do. Booleans, NaN and infinities are
never numbers here."""

import math

from .errors import ConfigError


def describe(integer, low=None, high=None, strict=False):
    """What a number must be, in words: "an integer from 1 to 10,000", "a positive number", ..."""
    kind = "an integer" if integer else "a number"
    if low == 0 and strict and high is None:
        return f"a positive {'integer' if integer else 'number'}"
    if low is not None and high is not None:
        return f"{kind} from {low:,} to {high:,}" if integer else f"{kind} in {'(' if strict else '['}{low}, {high}]"
    if low is not None:
        return f"{kind} {'>' if strict else '>='} {low}"
    return f"a finite {kind[2:] if integer else 'number'}"


def number(name, value, *, integer=False, low=None, high=None, strict=False, hint="", error=ConfigError):
    """``value`` if it is a finite number (an int if ``integer``) with ``low <= value`` (``low < value``
    if ``strict``) and ``value <= high``; otherwise ``error`` naming ``name`` and what it must be."""
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (low is None or (value > low if strict else value >= low))
    ok = ok and (high is None or value <= high)
    if not ok:
        raise error(f"{name} must be {describe(integer, low, high, strict)}, got {value!r}{hint}")
    return int(value) if integer else float(value)


def positive(name, value, *, integer=False, hint="", error=ConfigError):
    """A positive number (an integer >= 1 if ``integer``)."""
    return number(name, value, integer=integer, low=1 if integer else 0, strict=not integer, hint=hint, error=error)


#: the most numbers one data point may hold (a 4-channel 4096 x 4096 image), and the most along one axis
MAX_POINT_ELEMENTS, MAX_AXIS = 4 * 4096 * 4096, 65536


def data_shape(name, shape, error=ConfigError):
    """``shape`` as a tuple if it is the shape of one data point: 1 to 4 positive integers, each at most
    ``MAX_AXIS``, at most ``MAX_POINT_ELEMENTS`` numbers in all, so nothing is allocated from a wrong one."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not 1 <= len(shape) <= 4:
        raise error(f"{name} must be 1 to 4 sizes, e.g. (1, 28, 28), got {shape!r}")
    for size in shape:
        number(name, size, integer=True, low=1, high=MAX_AXIS, hint=f" (in {tuple(shape)!r})", error=error)
    if math.prod(shape) > MAX_POINT_ELEMENTS:
        raise error(
            f"{name} {tuple(shape)} holds {math.prod(shape):,} numbers per point, more than the "
            f"{MAX_POINT_ELEMENTS:,} pyro-vae allows"
        )
    return tuple(int(s) for s in shape)
