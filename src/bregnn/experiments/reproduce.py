"""``bregnn reproduce NAME``: one command per table or figure of the papers.

Every entry of :data:`REPRODUCTIONS` runs at the paper's settings (each setting traceable to
a line of the paper, named in the entry's docstring), prints our table beside the paper's
numbers, writes ``OUT/summary.json`` (per run: the final metrics and the paper's values)
and its figures, and resumes with ``--resume``. ``--quick`` runs a tiny version (the test
suite runs every one); ``--list`` names every entry with its paper reference.

A resume may change ``--methods`` and ``--seeds``: both select which runs the entry holds
(each run keeps its own directory and settings, checked when it resumes), so a resume with
more seeds adds runs beside the finished ones, and one with fewer reports over the first
seeds only; every summary row names its seed count.

An entry is a :class:`Reproduction`: ``run(options) -> list[dict]`` returns one summary row
per run. Entries register themselves with :func:`register` in their own modules.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bregnn.registry import Registry
from bregnn.runs import MUTABLE_KEYS, prepare_run, write_json
from bregnn.utils import add_device_argument, default_data_dir, pick_device

__all__ = [
    "HELP",
    "NAME",
    "REPRODUCTIONS",
    "Options",
    "Reproduction",
    "add_arguments",
    "format_table",
    "register",
    "run",
]

NAME = "reproduce"
HELP = "Reproduce a table or figure of the papers at their settings (--list names them)."


@dataclasses.dataclass(frozen=True)
class Options:
    """What a reproduction is asked to do (from the command line)."""

    out: Path
    data_dir: Path
    methods: tuple[str, ...] | None
    epochs: int | None
    quick: bool
    resume: bool
    overwrite: bool
    progress: bool
    device: str = "cpu"
    seeds: int | None = None


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """A named reproduction: ``paper`` (the reference), ``methods`` (what ``--methods``
    chooses from), ``run(options) -> rows``; ``any_device``: it trains on
    ``options.device`` (the lifted entries), else on the CPU only; ``seeded``: it averages
    every configuration over seeds, and ``--seeds`` changes how many."""

    name: str
    paper: str
    methods: tuple[str, ...]
    run: Callable[[Options], list[dict[str, Any]]]
    any_device: bool = False
    seeded: bool = False


REPRODUCTIONS: Registry[Reproduction] = Registry("reproduction")


def register(
    name: str,
    paper: str,
    methods: Sequence[str],
    *,
    any_device: bool = False,
    seeded: bool = False,
):
    """Decorator: register ``run`` as the reproduction ``name`` (``any_device``: it honours
    ``--device``; ``seeded``: it honours ``--seeds``)."""

    def decorator(run: Callable[[Options], list[dict[str, Any]]]):
        entry = Reproduction(name, paper, tuple(methods), run, any_device, seeded)
        REPRODUCTIONS.register(name, entry)
        return run

    return decorator


def _load_entries() -> None:
    # the modules that define reproductions register them on import
    from bregnn.experiments import bregman_tables, lifted_cnn, lifted_tables, robustness_tables  # noqa: F401


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    parser.add_argument("name", nargs="?", help="the reproduction (see --list)")
    parser.add_argument("--list", action="store_true", help="list every reproduction")
    parser.add_argument("--methods", nargs="+", default=None, help="a subset of its methods")
    parser.add_argument("--epochs", type=int, default=None, help="shorten (or lengthen) every run")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="seeds per configuration, for the entries that average over "
                             "seeds (default: the paper's)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a tiny version (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/reproduce/NAME")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $BREGNN_DATA")
    parser.add_argument("--resume", action="store_true", help="continue the runs in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the runs in --out")
    parser.add_argument("--no-progress", action="store_true")
    add_device_argument(parser, default="cpu")


def run(args: argparse.Namespace) -> int:
    _load_entries()
    if args.list or not args.name:
        width = max(len(n) for n in REPRODUCTIONS.names())
        for name, entry in REPRODUCTIONS.items():
            print(f"{name:<{width}}  {entry.paper}")
        return 0
    entry = REPRODUCTIONS.get(args.name)
    if args.methods:
        unknown = [m for m in args.methods if m not in entry.methods]
        if unknown:
            raise ValueError(
                f"{entry.name} has no method {unknown[0]!r}; valid methods: {list(entry.methods)}"
            )
    if args.epochs is not None and args.epochs <= 0:
        raise ValueError(f"--epochs must be positive; got {args.epochs}")
    if args.seeds is not None and args.seeds <= 0:
        raise ValueError(f"--seeds must be positive; got {args.seeds}")
    if args.seeds is not None and not entry.seeded:
        on = [n for n, e in REPRODUCTIONS.items() if e.seeded]
        raise ValueError(f"{entry.name} runs one seed per configuration; --seeds applies to {on}")
    device = pick_device(args.device)
    if device.type != "cpu" and not entry.any_device:
        on = [n for n, e in REPRODUCTIONS.items() if e.any_device]
        raise ValueError(
            f"{entry.name} runs on the CPU only; --device {args.device!r} applies to {on}"
        )
    suffix = "-quick" if args.quick else ""
    out = args.out or Path("runs") / NAME / f"{entry.name}{suffix}"
    config = {
        "reproduction": entry.name,
        "quick": args.quick,
        "epochs": args.epochs,
        "device": str(device),
        **({"seeds": args.seeds} if args.seeds is not None else {}),
    }
    prepare_run(
        out,
        config,
        resume=args.resume,
        overwrite=args.overwrite,
        mutable=MUTABLE_KEYS | {"methods", "seeds"},
    )
    options = Options(
        out=out,
        data_dir=args.data_dir or default_data_dir(),
        methods=tuple(args.methods) if args.methods else None,
        epochs=args.epochs,
        quick=args.quick,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        device=str(device),
        seeds=args.seeds,
    )
    rows = entry.run(options)
    write_json(
        {"reproduction": entry.name, "paper": entry.paper, "runs": rows}, out / "summary.json"
    )
    print(f"{entry.name} ({entry.paper}); runs in {out}")
    print(format_table(rows))
    return 0


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of summary rows: ``ours`` and ``paper`` columns side by side."""
    if not rows:
        return "(no runs)"
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)
