"""The names the public API's type hints use (the ground: no torch, no other module of the package)."""

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

#: a config: nested tables of plain values, as ``load_config`` returns and ``validate`` checks
Config = dict[str, Any]
#: a path as text or an ``os.PathLike``
PathLike = Union[str, "os.PathLike[str]"]
#: where a long command says what it does (``print`` by default)
Log = Callable[[str], None]
#: the overrides of ``--set``, as ["key=value", ...] or {dotted key: value}
Overrides = Union[Iterable[str], Mapping[str, Any]]

__all__ = ["Config", "PathLike", "Log", "Overrides"]
