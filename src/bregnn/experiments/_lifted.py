"""Command-line options of the lifted commands, built from each method's ``Config``.

``bregnn lifted-classify --method bcd --help`` lists BCD's own settings with its defaults:
the options are the union of the chosen methods' ``Config`` fields, each option's help names
the default of every chosen method that has it, and a setting reaches only the methods that
have it (no method's default leaks into another's).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from bregnn.lifted.solvers import SOLVERS, config_fields

__all__ = ["add_method_options", "chosen_methods", "method_settings"]


def chosen_methods(argv: Sequence[str], default: Sequence[str]) -> list[str]:
    """The ``--method`` values in ``argv`` (``default`` without one); unknown names are kept
    for the main parser's validation to report."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", nargs="+", default=list(default))
    known, _ = pre.parse_known_args(list(argv))
    return [m for m in known.method if m in SOLVERS] or list(default)


def _defaults(method: str, overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    fields = config_fields(SOLVERS.get(method).Config)
    values = {k: default for k, (_, default, _) in fields.items()}
    values.update({k: v for k, v in overrides.get(method, {}).items() if k in values})
    return values


def add_method_options(
    parser: argparse.ArgumentParser,
    methods: Sequence[str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    skip: Sequence[str] = (),
) -> None:
    """Add one option per setting of the chosen ``methods`` (``overrides``: the command's
    own defaults per method; ``skip``: settings the command handles itself)."""
    overrides = overrides or {}
    group = parser.add_argument_group(
        f"settings of {', '.join(methods)}",
        "defaults per method in brackets; see each method's Config in the API reference",
    )
    seen: dict[str, tuple[type, str, list[str]]] = {}
    for method in methods:
        defaults = _defaults(method, overrides)
        for name, (kind, _, text) in config_fields(SOLVERS.get(method).Config).items():
            if name in skip:
                continue
            entry = seen.setdefault(name, (kind, text, []))
            entry[2].append(f"{method}: {defaults[name]}")
    for name, (kind, text, defaults) in seen.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{text} [{'; '.join(defaults)}]".strip()
        if kind is bool:
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            group.add_argument(flag, type=kind, default=None, metavar=name.upper(), help=help_text)


def method_settings(
    args: argparse.Namespace,
    method: str,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    skip: Sequence[str] = (),
) -> dict[str, Any]:
    """The settings of ``method``: its command defaults (``overrides``) updated by the
    options given on the command line; settings it does not have are not passed."""
    fields = config_fields(SOLVERS.get(method).Config)
    settings = {k: v for k, v in (overrides or {}).get(method, {}).items() if k in fields}
    for name in fields:
        value = getattr(args, name, None)
        if name not in skip and value is not None:
            settings[name] = value
    return settings
