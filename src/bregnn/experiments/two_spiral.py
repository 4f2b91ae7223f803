r"""Two-spiral classification with narrow (Bregman) MLPs (Frecon et al., ICML 2022, Sec. 5.1).

Every run trains ``MLP(2, [width] * layers, 2, activation, variant, init)``: ``layers``
hidden layers of

.. math::

    z_{l+1} = \rho(\rho^{-1}(z_l) + W_l z_l + b_l) \;(\texttt{bregman}), \qquad
    z_{l+1} = \rho(W_l z_l + b_l) \;(\texttt{standard}),

then a linear head, by mini-batch SGD on the cross-entropy (:func:`bregnn.train.fit`).
The data are :func:`bregnn.data.two_spirals` (``n_points`` in all, cut 60/20/20 into
train / validation / test by :func:`bregnn.data.split`), rescaled per coordinate by a
:class:`bregnn.data.RangeScaler` fitted on the training set into the central 90% of the
activation's range, so the Bregman layers see inputs inside the domain of ``rho_inv``.

A grid runs every (activation, variant, init, lr, seed); the seed drives the weight
initialisation and the batch order (the data set is the same for every run). Each run
lives in ``out/<activation>-<variant>-<init>-lr<lr>/seed<k>/`` with ``metrics.csv``,
``checkpoint.pt`` (every :func:`checkpoint_interval` epochs), and once finished
``model.pt`` and ``result.json``.
The grid writes ``config.json`` first (:func:`bregnn.runs.prepare_run`: a second grid in
the same ``out`` is refused unless it resumes or overwrites the first), then
``table.md`` / ``table.csv`` / ``results.json`` (mean +- std over seeds, population std)
and PNG figures (dataset, per-layer representations, and for deep models the per-layer
parameter norms and steps :math:`|z_l - z_{l-1}|`); without matplotlib the figures are
skipped with a note.

A run whose loss becomes NaN or infinite stops the grid (``FloatingPointError``), unless
``keep_going``: then it is recorded with ``"diverged": true`` and scored as a model with NaN
weights (every prediction is class 0), as in the authors' training loop, and the grid goes on.

``resume`` skips finished runs and continues interrupted ones from their checkpoint. It
may change the mutable settings of :mod:`bregnn.runs` (``epochs`` continues finished runs
to the new count) and the grid's axes (:data:`GRID_AXES`: activations, variants, inits,
lrs, seeds add runs beside the existing ones); any other change is refused.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from bregnn.activations import activation, available_activations
from bregnn.data import RangeScaler, split, two_spirals
from bregnn.experiments._summary import csv_text, markdown_table, read_metrics, summarize_seeds
from bregnn.functional import VARIANTS
from bregnn.models import MLP
from bregnn.nn import INITS
from bregnn.plotting import figures_or_note
from bregnn.runs import (
    MUTABLE_KEYS,
    accumulated_seconds,
    atomic_save,
    atomic_write_text,
    prepare_run,
    write_json,
)
from bregnn.train import History, TrainConfig, evaluate, fit
from bregnn.utils import positive_int, seed_everything

__all__ = [
    "DEEP_LAYERS",
    "GRID_AXES",
    "HELP",
    "NAME",
    "GridOutcome",
    "SpiralData",
    "SpiralGrid",
    "add_arguments",
    "add_threads_option",
    "best_lr_rows",
    "checkpoint_interval",
    "config_dir",
    "format_table",
    "grid_from_args",
    "load_model",
    "load_spirals",
    "report",
    "run",
    "run_grid",
    "summarize",
]

NAME = "two-spiral"
HELP = "Two-spiral classification with narrow Bregman vs standard MLPs (paper Sec. 5.1)."

DEEP_LAYERS = 10
"""Models with at least this many hidden layers also get the Figure-3 diagnostics plot."""

GRID_AXES = frozenset({"activations", "variants", "inits", "lrs", "seeds"})
"""Settings that select which runs a grid holds (one directory each): a resumed grid may
change them; the other settings change what every run computes and may not."""


@dataclass
class SpiralGrid:
    """Settings of a two-spiral grid (validated on construction; bad values raise
    ``ValueError`` naming the value and the valid choices)."""

    activations: Sequence[str] = ("atan",)
    variants: Sequence[str] = ("bregman", "standard")
    inits: Sequence[str] = ("random",)
    lrs: Sequence[float] = (0.1,)
    layers: int = 3
    width: int = 2
    epochs: int = 300
    seeds: int = 5
    batch_size: int = 16
    momentum: float = 0.0
    patience: int | None = None
    keep_going: bool = False
    n_points: int = 1000
    turns: float = 1.0
    noise: float = 0.05
    data_seed: int = 0
    out: Path = Path("runs/two-spiral")
    figures: bool = True
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        self.activations = tuple(
            _check_activation(a) for a in _nonempty("activation", self.activations)
        )
        self.variants = tuple(
            _check_choice("variant", v, VARIANTS) for v in _nonempty("variant", self.variants)
        )
        self.inits = tuple(_check_choice("init", i, INITS) for i in _nonempty("init", self.inits))
        self.lrs = tuple(float(lr) for lr in _nonempty("lr", self.lrs))
        for lr in self.lrs:
            if not (lr > 0 and math.isfinite(lr)):
                raise ValueError(f"lr must be positive and finite; got {lr}")
        if "bregman" in self.variants:
            for name in self.activations:
                if not activation(name).invertible:
                    raise ValueError(
                        f"the bregman variant needs an invertible activation; {name!r} is not. "
                        f"Invertible activations: {available_activations(invertible=True)}"
                    )
        for name in ("layers", "width", "epochs", "seeds", "batch_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)}")
            setattr(self, name, int(getattr(self, name)))
        if self.n_points < 10:
            raise ValueError(f"n_points must be at least 10 (60/20/20 split); got {self.n_points}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum}")
        if self.patience is not None and self.patience <= 0:
            raise ValueError(f"patience must be a positive integer or None; got {self.patience}")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            raise ValueError(
                f"checkpoint_every must be a positive integer or None; got {self.checkpoint_every}"
            )
        if self.turns <= 0 or self.noise < 0:
            raise ValueError(
                f"need turns > 0 and noise >= 0; got turns={self.turns}, noise={self.noise}"
            )
        self.out = Path(self.out)


class SpiralData(NamedTuple):
    """Train / validation / test splits, already scaled into the activation's range."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


class GridOutcome(NamedTuple):
    """What :func:`run_grid` produced: the per-configuration summary rows, the per-run
    results, the markdown table and the paths of the figures written."""

    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    table: str
    figures: list[Path]


def load_spirals(grid: SpiralGrid, act: str) -> SpiralData:
    """The grid's data set for activation ``act``: ``two_spirals`` + ``split`` + a
    :class:`RangeScaler` fitted on the training inputs and applied to all three splits."""
    x, y = two_spirals(grid.n_points, noise=grid.noise, turns=grid.turns, seed=grid.data_seed)
    train, val, test = split(x, y, seed=grid.data_seed)
    scaler = RangeScaler(act).fit(train[0])
    return SpiralData(*((scaler.transform(xs), ys) for xs, ys in (train, val, test)))


def config_dir(grid: SpiralGrid, act: str, variant: str, init: str, lr: float) -> Path:
    """The directory of one configuration of ``grid`` (its seeds in ``seed<k>/``)."""
    return grid.out / f"{act}-{variant}-{init}-lr{lr:g}"


def _run_dir(grid: SpiralGrid, act: str, variant: str, init: str, lr: float, seed: int) -> Path:
    return config_dir(grid, act, variant, init, lr) / f"seed{seed}"


def _build_model(grid: SpiralGrid, act: str, variant: str, init: str, seed: int) -> MLP:
    seed_everything(seed)
    return MLP(2, [grid.width] * grid.layers, 2, act, variant, init)


def load_model(grid: SpiralGrid, act: str, variant: str, init: str, lr: float, seed: int) -> MLP:
    """The trained model of one finished run of ``grid`` (its ``model.pt``)."""
    model = _build_model(grid, act, variant, init, seed)
    path = _run_dir(grid, act, variant, init, lr, seed) / "model.pt"
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


def _run_one(
    grid: SpiralGrid,
    data: SpiralData,
    act: str,
    variant: str,
    init: str,
    lr: float,
    seed: int,
    resume: bool,
) -> dict[str, Any]:
    run_dir = _run_dir(grid, act, variant, init, lr, seed)
    result_path = run_dir / "result.json"
    if resume and result_path.exists():
        result = json.loads(result_path.read_text())
        if result.get("epochs") == grid.epochs:  # else: continue it to the new epoch count
            return {**result, "skipped": True}
    model = _build_model(grid, act, variant, init, seed)
    config = TrainConfig(
        lr=lr,
        epochs=grid.epochs,
        batch_size=grid.batch_size,
        momentum=grid.momentum,
        patience=grid.patience,
        seed=seed,
        progress=grid.progress,
        desc=f"{act}/{variant}/{init}/lr={lr:g}/seed {seed}",
        checkpoint_every=checkpoint_interval(grid),
    )
    diverged = False
    try:
        history = fit(model, data.train, config, data.val, data.test, run_dir, resume=resume)
    except FloatingPointError:
        if not grid.keep_going:
            raise
        # the grid keeps going: the run is recorded as diverged and its weights set to NaN,
        # the state in which the authors' fit() (demos/utils/optimization.py: the step is
        # taken before the NaN check) leaves such a model; argmax of NaN logits is class 0
        diverged = True
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(math.nan)
        metrics = run_dir / "metrics.csv"
        history = History(read_metrics(metrics) if metrics.exists() else [], 0, math.nan, False)
    train_loss, train_acc = evaluate(model, *data.train)
    _, val_acc = evaluate(model, *data.val)
    test_loss, test_acc = evaluate(model, *data.test)
    result = {
        "activation": act,
        "variant": variant,
        "init": init,
        "lr": lr,
        "seed": seed,
        "epochs": grid.epochs,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "val_accuracy": val_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "epochs_run": len(history.rows),
        "best_epoch": history.best_epoch,
        "stopped_early": history.stopped_early,
        "diverged": diverged,
        "seconds": accumulated_seconds(history.rows, "time"),
    }
    atomic_save(model.state_dict(), run_dir / "model.pt")
    write_json(result, result_path)
    return {**result, "skipped": False}


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and (population) std over seeds of train / test accuracy and epochs run, one row
    per (activation, variant, init, lr), in the order the configurations first appear."""
    return summarize_seeds(runs, ("activation", "variant", "init", "lr"), means=("epochs_run",))


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of :func:`summarize` rows (accuracies in percent)."""
    columns = [("activation", "{activation}"), ("variant", "{variant}"), ("init", "{init}")]
    columns.append(("lr", "{lr:g}"))
    return markdown_table(rows, columns, trailing=[("epochs run", "{epochs_run_mean:.0f}")])


def checkpoint_interval(grid: SpiralGrid) -> int:
    """Epochs between a run's checkpoints: ``grid.checkpoint_every``, by default
    ``max(1, epochs // 100)`` (at most about 100 checkpoints per run: a checkpoint holds
    every epoch's metrics, so one per epoch made a 10^4-epoch run take twice its training
    time; every 100 epochs, 1.09 times)."""
    if grid.checkpoint_every is not None:
        return grid.checkpoint_every
    return max(1, grid.epochs // 100)


def grid_config(grid: SpiralGrid) -> dict[str, Any]:
    """The grid's resolved settings as stored in ``config.json``."""
    return asdict(grid)


def run_grid(grid: SpiralGrid, echo: bool = True) -> GridOutcome:
    """Train every (activation, variant, init, lr, seed) of ``grid``, write the tables (and
    figures unless ``grid.figures`` is false) under ``grid.out``; see the module docstring."""
    resumed = prepare_run(
        grid.out,
        grid_config(grid),
        resume=grid.resume,
        overwrite=grid.overwrite,
        mutable=MUTABLE_KEYS | GRID_AXES | {"keep_going"},
    )
    runs: list[dict[str, Any]] = []
    datasets: dict[str, SpiralData] = {}
    for act in grid.activations:
        datasets[act] = data = load_spirals(grid, act)
        for variant in grid.variants:
            for init in grid.inits:
                for lr in grid.lrs:
                    for seed in range(grid.seeds):
                        r = _run_one(grid, data, act, variant, init, lr, seed, resumed)
                        runs.append(r)
                        if echo:
                            state = (
                                "done before, skipped" if r["skipped"] else f"{r['seconds']:.1f}s"
                            )
                            print(
                                f"{act} {variant} init={init} lr={lr:g} seed {seed}: "
                                f"train {100 * r['train_accuracy']:.1f}% "
                                f"test {100 * r['test_accuracy']:.1f}% "
                                f"({r['epochs_run']} epochs, {state})",
                                flush=True,
                            )
    rows = summarize(runs)
    table = format_table(rows)
    atomic_write_text(table, grid.out / "table.md")
    atomic_write_text(csv_text(rows), grid.out / "table.csv")
    write_json(
        {"settings": grid_config(grid), "rows": rows, "runs": [_public(r) for r in runs]},
        grid.out / "results.json",
    )
    figures: list[Path] = []
    if grid.figures and figures_or_note():
        figures = _make_figures(grid, rows, datasets)
    return GridOutcome(rows, runs, table, figures)


def _public(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "skipped"}


def best_lr_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each (activation, variant, init), the row of the lr with the best mean test
    accuracy (the first such lr on ties)."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["activation"], r["variant"], r["init"])
        if key not in best or r["test_mean"] > best[key]["test_mean"]:
            best[key] = r
    return list(best.values())


def _make_figures(
    grid: SpiralGrid, rows: Sequence[dict[str, Any]], datasets: dict[str, SpiralData]
) -> list[Path]:
    from bregnn.plotting import plot_dataset, plot_layer_diagnostics, plot_layer_outputs

    fig_dir = grid.out / "figures"
    paths = []
    first = datasets[grid.activations[0]]
    paths.append(
        plot_dataset(
            *first.train,
            fig_dir / "dataset.png",
            title=f"two spirals: {len(first.train[1])} training points\n"
            f"(scaled into the range of {grid.activations[0]})",
        )
    )
    best = best_lr_rows(rows)
    for act in grid.activations:
        x, y = datasets[act].train
        for init in grid.inits:
            outputs, diagnostics = {}, {}
            for r in best:
                if r["activation"] != act or r["init"] != init:
                    continue
                variant, lr = r["variant"], r["lr"]
                model = load_model(grid, act, variant, init, lr, seed=0)
                diag = model.diagnostics(x)
                _, test_acc = evaluate(model, *datasets[act].test)
                label = f"{variant}, lr={lr:g}\n(seed 0: test {100 * test_acc:.1f}%)"
                outputs[label] = diag.outputs
                diagnostics[f"{variant}, lr={lr:g}"] = diag
            if not outputs:
                continue
            depth = f"{grid.layers} layers x {grid.width} neurons, {act}, init={init}"
            paths.append(
                plot_layer_outputs(
                    outputs,
                    y,
                    fig_dir / f"layers-{act}-{init}.png",
                    title=f"hidden representations of the training points ({depth})",
                )
            )
            if grid.layers >= DEEP_LAYERS:
                paths.append(
                    plot_layer_diagnostics(
                        diagnostics,
                        fig_dir / f"diagnostics-{act}-{init}.png",
                        title=f"per-layer norms, seed 0 ({depth})",
                    )
                )
    return paths


# -- command line ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Options of ``bregnn two-spiral`` (several activations / variants / inits / lrs run
    as one grid)."""
    parser.add_argument("--layers", type=int, default=3, help="number of hidden layers")
    parser.add_argument("--width", type=int, default=2, help="neurons per hidden layer")
    parser.add_argument("--activation", nargs="+", default=["atan"], help="activation name(s)")
    parser.add_argument(
        "--variant", nargs="+", default=["bregman", "standard"], help=f"any of {list(VARIANTS)}"
    )
    parser.add_argument("--init", nargs="+", default=["random"], help=f"any of {list(INITS)}")
    parser.add_argument("--lr", nargs="+", type=float, default=[0.1], help="learning rate(s)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5, help="runs per configuration")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument(
        "--patience", type=int, default=None, help="early stopping on validation accuracy"
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="record a diverging run (NaN loss) and go on with the grid instead of stopping",
    )
    parser.add_argument("--n-points", type=int, default=1000, help="points (60/20/20 split)")
    parser.add_argument("--turns", type=float, default=1.0, help="turns of each spiral")
    parser.add_argument("--noise", type=float, default=0.05, help="Gaussian noise std")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the data set")
    parser.add_argument("--out", type=Path, default=Path("runs/two-spiral"))
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the grid in --out: skip finished runs, continue interrupted ones",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no per-epoch progress (bar or lines)"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=None,
        metavar="N",
        help="epochs between checkpoints (default: epochs // 100, at least 1)",
    )
    add_threads_option(parser)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads`` defaulting to 1: these models are so small that more intra-op threads
    only add synchronisation (ten times slower on a busy two-core machine)."""
    parser.add_argument(
        "--threads", type=positive_int, default=1, metavar="N", help="torch intra-op threads"
    )


def grid_from_args(args: argparse.Namespace) -> SpiralGrid:
    """The :class:`SpiralGrid` described by parsed command-line ``args``."""
    return SpiralGrid(
        activations=args.activation,
        variants=args.variant,
        inits=args.init,
        lrs=args.lr,
        layers=args.layers,
        width=args.width,
        epochs=args.epochs,
        seeds=args.seeds,
        batch_size=args.batch_size,
        momentum=args.momentum,
        patience=args.patience,
        keep_going=args.keep_going,
        n_points=args.n_points,
        turns=args.turns,
        noise=args.noise,
        data_seed=args.data_seed,
        out=args.out,
        figures=not args.no_figures,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        checkpoint_every=args.checkpoint_every,
    )


def report(outcome: GridOutcome, out: Path) -> None:
    """Print the table and where the outputs are."""
    print()
    print(outcome.table)
    print(f"tables: {out / 'table.md'}, {out / 'table.csv'}, {out / 'results.json'}")
    for path in outcome.figures:
        print(f"figure: {path}")


def run(args: argparse.Namespace) -> int:
    grid = grid_from_args(args)
    outcome = run_grid(grid)
    report(outcome, grid.out)
    return 0


def _nonempty(name: str, values: Sequence[Any]) -> Sequence[Any]:
    if isinstance(values, str):
        values = (values,)
    if len(values) == 0:
        raise ValueError(f"give at least one {name}")
    return values


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid {name}s: {list(choices)}")
    return value


def _check_activation(name: str) -> str:
    act = activation(name)  # ValueError listing the valid names
    if not isinstance(name, str):
        return act.name
    return name
