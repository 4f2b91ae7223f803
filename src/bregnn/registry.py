"""One small name -> object registry for every named concept of bregnn.

Activations, solvers, penalties, datasets, models, recipes and commands each keep one
:class:`Registry`. A registry rejects duplicate names, normalises look-ups the same way
everywhere (case and ``-``/``_`` are ignored unless ``normalize`` says otherwise) and has
one error text::

    >>> reg = Registry("colour")
    >>> reg.register("dark-red", 0x8B0000)
    >>> reg.get("Dark_Red") == 0x8B0000
    True
    >>> reg.get("blue")
    Traceback (most recent call last):
    ...
    ValueError: unknown colour 'blue'; valid colours: ['dark-red']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "default_key"]

T = TypeVar("T")


def default_key(name: str) -> str:
    """The look-up key of ``name``: lower case, ``_`` and spaces read as ``-``."""
    return name.strip().lower().replace("_", "-").replace(" ", "-")


class Registry(Generic[T]):
    """Names (in registration order) mapped to objects.

    Args:
        kind: what the entries are (``"activation"``, ``"method"``, ...), used in errors.
        normalize: maps a name to its look-up key (default :func:`default_key`).
    """

    def __init__(self, kind: str, normalize: Callable[[str], str] = default_key) -> None:
        self.kind = kind
        self._normalize = normalize
        self._entries: dict[str, T] = {}  # key -> object
        self._names: dict[str, str] = {}  # key -> name as registered

    def register(self, name: str, obj: T | None = None) -> Any:
        """Add ``obj`` under ``name`` (``ValueError`` if the name is taken). Without ``obj``
        this is a decorator: ``@REG.register("name")``."""
        if obj is None:

            def decorator(target: T) -> T:
                self.register(name, target)
                return target

            return decorator
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string; got {name!r}")
        key = self._normalize(name)
        if key in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[key] = obj
        self._names[key] = name
        return None

    def key(self, name: str) -> str:
        """The registered name of ``name`` (``ValueError`` listing the valid names)."""
        key = self._normalize(name) if isinstance(name, str) else None
        if key not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {self.names()}")
        return self._names[key]

    def get(self, name: str) -> T:
        """The object called ``name`` (``ValueError`` listing the valid names)."""
        return self._entries[self._normalize(self.key(name))]

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._names.values())

    def items(self) -> list[tuple[str, T]]:
        return [(self._names[k], v) for k, v in self._entries.items()]

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._normalize(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
