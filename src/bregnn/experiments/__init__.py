"""Reproduced experiments, one module each, discovered by name.

A module in this package becomes a ``bregnn`` sub-command when it defines:

- ``NAME``: the sub-command name (e.g. ``"two-spiral"``);
- ``HELP``: a one-line description;
- ``add_arguments(parser)``: registers its options on an ``argparse`` parser;
- ``run(args) -> int``: runs it and returns an exit status.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

__all__ = ["experiments", "get_experiment"]


def experiments() -> dict[str, ModuleType]:
    """All experiment modules of this package, keyed by their ``NAME``."""
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        name = getattr(module, "NAME", None)
        if name is None:
            continue
        if name in found:
            raise RuntimeError(f"two experiments are named {name!r}")
        found[name] = module
    return found


def get_experiment(name: str) -> ModuleType:
    """The experiment called ``name``; ``ValueError`` lists the valid names."""
    registry = experiments()
    if name not in registry:
        raise ValueError(f"unknown experiment {name!r}; valid names: {sorted(registry)}")
    return registry[name]
