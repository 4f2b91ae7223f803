"""The short two-spiral demonstration: Bregman vs standard 3-layer, 2-neuron atan MLPs.

It runs :func:`bregnn.experiments.two_spiral.run_grid` with :data:`SETTINGS` (3 seeds per
variant, one learning rate), prints the table of mean +- std train / test accuracy and
the paths of the figures (the data set and each hidden layer's 2-D representation).
It takes about 40 s on two CPU cores (one intra-op thread, see ``--threads``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bregnn.experiments.two_spiral import SpiralGrid, add_threads_option, report, run_grid

__all__ = ["HELP", "NAME", "SETTINGS", "add_arguments", "run"]

NAME = "demo"
HELP = "Quick demo (~40 s on 2 CPU cores): Bregman vs standard 3x2 atan MLPs on two spirals."

SETTINGS: dict[str, Any] = {
    "activations": ("atan",),
    "variants": ("bregman", "standard"),
    "inits": ("random",),
    "lrs": (0.1,),
    "layers": 3,
    "width": 2,
    "epochs": 200,
    "seeds": 3,
    "batch_size": 16,
    "n_points": 1000,
}
"""The demo's grid (see :class:`~bregnn.experiments.two_spiral.SpiralGrid`)."""


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument(
        "--resume", action="store_true", help="continue the demo in --out (finished runs kept)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no per-epoch progress (bar or lines)"
    )
    add_threads_option(parser)


def run(args: argparse.Namespace) -> int:
    grid = SpiralGrid(
        **SETTINGS,
        out=args.out,
        figures=not args.no_figures,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(
        f"two spirals, {grid.n_points} points; {grid.layers} hidden layers x {grid.width} "
        f"neurons, {', '.join(grid.activations)}; {' vs '.join(grid.variants)}; "
        f"lr {grid.lrs[0]:g}, {grid.epochs} epochs, batch {grid.batch_size}, {grid.seeds} seeds",
        flush=True,
    )
    outcome = run_grid(grid)
    report(outcome, grid.out)
    return 0
