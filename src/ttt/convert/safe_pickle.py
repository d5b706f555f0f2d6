"""Read a pickle without importing or running anything it names.

EasyLM's `metadata.pkl` pickles live objects of the official package (ml_collections.ConfigDict, the official
ModelConfig), so a plain `pickle.load` needs that code importable and would run whatever the file names. This
unpickler resolves only plain containers; every other class becomes an inert stand-in that keeps the data the
pickle gives it (constructor arguments, state, items), so the file reads as plain data.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

_SAFE = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "str"): str,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "bool"): bool,
    ("builtins", "bytes"): bytes,
    ("collections", "OrderedDict"): dict,
}


class Opaque:
    """Stand-in for a class the pickle names: holds what the pickle passed to it, runs nothing."""

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs
        self.state: Any = None
        self.items: dict = {}
        self.elements: list = []

    @classmethod
    def __new_from_pickle__(cls, *args: Any) -> Opaque:
        return cls(*args)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def to_plain(self) -> Any:
        """The most natural plain value: the state if it is a dict (the usual __dict__ / ConfigDict case)."""
        if isinstance(self.state, dict):
            return plain(self.state)
        if self.items:
            return plain(self.items)
        return {"__class__": self.qualified_name, "args": plain(self.args), "state": plain(self.state)}

    def __repr__(self) -> str:
        return f"<opaque {self.qualified_name}>"


def plain(value: Any) -> Any:
    """Recursively replace stand-ins by plain data."""
    if isinstance(value, Opaque):
        return value.to_plain()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE:
            return _SAFE[(module, name)]
        return type(name, (Opaque,), {"qualified_name": f"{module}.{name}", "__module__": "ttt.convert.safe_pickle"})


def safe_load(data: bytes) -> Any:
    """Unpickle `data` with stand-ins for every non-container class; returns plain data."""
    return plain(SafeUnpickler(io.BytesIO(data)).load())
