r"""Depth study on MNIST: sigmoid MLPs of 2 and 9 hidden layers, Bregman vs standard
(Frecon et al., ICML 2022, Figure 5: the standard sigmoid MLP collapses at depth 9, the
Bregman one does not).

Every run trains ``MLP(784, [width] * depth, 10, activation, variant)`` with mini-batch
SGD (:func:`bregnn.train.fit`) on the flattened images, mapped by
:func:`bregnn.data.to_activation_range` from pixel space into the central 90% of the
activation's range (sigmoid: ``[0.05, 0.95]``), so the first Bregman layer's
:math:`\rho^{-1}(Mx)` is finite. A Bregman layer whose width differs from its input's
(784 -> width) learns the row-stochastic ``M`` (see :class:`bregnn.nn.BregmanLinear`).

The data come from :func:`bregnn.data.load_dataset`; on this project's machines MNIST is a
10k subset (8k train / 2k test), not the official 60k/10k split. ``--train-limit`` keeps
the first ``n`` training images (quick runs, tests). Runs live in
``out/<variant>-d<depth>-w<width>/seed<k>/`` and resume like the two-spiral grid
(:func:`bregnn.runs.prepare_run`; a resumed study may change the mutable settings and its
axes :data:`STUDY_AXES`, nothing else); the study writes ``config.json``, ``table.md`` /
``table.csv`` / ``results.json`` and ``depth-study.png`` (skipped with a note without
matplotlib).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from torch import Tensor

from bregnn.activations import activation, available_activations
from bregnn.data import dataset_spec, load_dataset, to_activation_range
from bregnn.experiments._summary import csv_text, markdown_table, summarize_seeds
from bregnn.functional import VARIANTS
from bregnn.models import MLP
from bregnn.plotting import figures_available, skip_figures_note
from bregnn.runs import (
    MUTABLE_KEYS,
    accumulated_seconds,
    atomic_save,
    atomic_write_text,
    prepare_run,
    write_json,
)
from bregnn.train import TrainConfig, evaluate, fit
from bregnn.utils import default_data_dir, seed_everything

__all__ = [
    "HELP",
    "NAME",
    "STUDY_AXES",
    "DepthStudy",
    "StudyOutcome",
    "add_arguments",
    "format_table",
    "load_images",
    "run",
    "run_study",
    "study_from_args",
    "summarize",
]

NAME = "depth-study"
HELP = "MNIST depth study: sigmoid MLPs of 2 and 9 hidden layers, Bregman vs standard (Fig. 5)."

STUDY_AXES = frozenset({"depths", "widths", "variants", "seeds"})
"""Settings that select which runs a study holds: a resumed study may change them."""


@dataclass
class DepthStudy:
    """Settings of the depth study (validated on construction)."""

    depths: Sequence[int] = (2, 9)
    widths: Sequence[int] = (16, 128, 1024)
    variants: Sequence[str] = ("bregman", "standard")
    activation: str = "sigmoid"
    dataset: str = "mnist"
    data_dir: Path | None = None
    lr: float = 0.1
    epochs: int = 5
    batch_size: int = 100
    momentum: float = 0.9
    seeds: int = 1
    train_limit: int | None = None
    out: Path = Path("runs/depth-study")
    figures: bool = True
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.depths = tuple(_positive_ints("depth", self.depths))
        self.widths = tuple(_positive_ints("width", self.widths))
        self.variants = tuple(self.variants)
        if not self.variants:
            raise ValueError("give at least one variant")
        for v in self.variants:
            if v not in VARIANTS:
                raise ValueError(f"unknown variant {v!r}; valid variants: {list(VARIANTS)}")
        act = activation(self.activation)  # ValueError listing the valid names
        if "bregman" in self.variants and not act.invertible:
            raise ValueError(
                f"the bregman variant needs an invertible activation; {self.activation!r} is "
                f"not. Invertible activations: {available_activations(invertible=True)}"
            )
        self.dataset = dataset_spec(self.dataset).name  # ValueError listing the datasets
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive and finite; got {self.lr}")
        for name in ("epochs", "batch_size", "seeds"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum}")
        if self.train_limit is not None and self.train_limit <= 0:
            raise ValueError(f"train_limit must be positive or None; got {self.train_limit}")
        self.out = Path(self.out)


class StudyOutcome(NamedTuple):
    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    table: str
    figures: list[Path]


def load_images(study: DepthStudy) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Train and test sets as flat float vectors in the activation's target interval."""
    data_dir = study.data_dir if study.data_dir is not None else default_data_dir()
    splits = []
    for split_name in ("train", "test"):
        images, labels = load_dataset(study.dataset, split_name, data_dir)
        if split_name == "train" and study.train_limit is not None:
            images, labels = images[: study.train_limit], labels[: study.train_limit]
        x = to_activation_range(images, study.activation).reshape(len(images), -1)
        splits.append((x, labels))
    return splits[0], splits[1]


def _run_dir(study: DepthStudy, variant: str, depth: int, width: int, seed: int) -> Path:
    return study.out / f"{variant}-d{depth}-w{width}" / f"seed{seed}"


def _run_one(
    study: DepthStudy,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    variant: str,
    depth: int,
    width: int,
    seed: int,
    resume: bool,
) -> dict[str, Any]:
    run_dir = _run_dir(study, variant, depth, width, seed)
    result_path = run_dir / "result.json"
    if resume and result_path.exists():
        result = json.loads(result_path.read_text())
        if result.get("epochs") == study.epochs:  # else: continue it to the new epoch count
            return {**result, "skipped": True}
    seed_everything(seed)
    n_classes = dataset_spec(study.dataset).num_classes
    model = MLP(train[0].shape[1], [width] * depth, n_classes, study.activation, variant)
    config = TrainConfig(
        lr=study.lr,
        epochs=study.epochs,
        batch_size=study.batch_size,
        momentum=study.momentum,
        seed=seed,
        progress=study.progress,
        desc=f"{variant} depth {depth} width {width} seed {seed}",
    )
    history = fit(model, train, config, test=test, run_dir=run_dir, resume=resume)
    train_loss, train_acc = evaluate(model, *train)
    test_loss, test_acc = evaluate(model, *test)
    result = {
        "variant": variant,
        "depth": depth,
        "width": width,
        "seed": seed,
        "epochs": study.epochs,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "epochs_run": len(history.rows),
        "seconds": accumulated_seconds(history.rows, "time"),
    }
    atomic_save(model.state_dict(), run_dir / "model.pt")
    write_json(result, result_path)
    return {**result, "skipped": False}


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and population std over seeds, one row per (depth, width, variant)."""
    return summarize_seeds(runs, ("depth", "width", "variant"), means=("seconds",), sort=True)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`summarize` rows (accuracies in percent)."""
    columns = [("hidden layers", "{depth}"), ("width", "{width}"), ("variant", "{variant}")]
    return markdown_table(rows, columns)


def run_study(study: DepthStudy, echo: bool = True) -> StudyOutcome:
    """Train every (variant, depth, width, seed) of ``study``; write tables and the figure."""
    train, test = load_images(study)
    resumed = prepare_run(
        study.out,
        asdict(study),
        resume=study.resume,
        overwrite=study.overwrite,
        mutable=MUTABLE_KEYS | STUDY_AXES,
    )
    runs = []
    for depth in study.depths:
        for width in study.widths:
            for variant in study.variants:
                for seed in range(study.seeds):
                    r = _run_one(study, train, test, variant, depth, width, seed, resumed)
                    runs.append(r)
                    if echo:
                        state = "done before, skipped" if r["skipped"] else f"{r['seconds']:.0f}s"
                        print(
                            f"depth {depth} width {width} {variant} seed {seed}: "
                            f"train {100 * r['train_accuracy']:.1f}% "
                            f"test {100 * r['test_accuracy']:.1f}% ({state})",
                            flush=True,
                        )
    rows = summarize(runs)
    table = format_table(rows)
    atomic_write_text(table, study.out / "table.md")
    atomic_write_text(csv_text(rows), study.out / "table.csv")
    public = [{k: v for k, v in r.items() if k != "skipped"} for r in runs]
    write_json(
        {"settings": asdict(study), "rows": rows, "runs": public}, study.out / "results.json"
    )
    figures = []
    if study.figures and not figures_available():
        skip_figures_note()
    elif study.figures:
        from bregnn.plotting import plot_depth_study

        figures.append(
            plot_depth_study(
                rows,
                study.out / "depth-study.png",
                title=f"{study.dataset}: {len(train[1])} train / {len(test[1])} test images; "
                f"{study.activation}\nSGD lr {study.lr:g}, momentum {study.momentum:g}, "
                f"batch {study.batch_size}, {study.epochs} epochs",
            )
        )
    return StudyOutcome(rows, runs, table, figures)


def _positive_ints(name: str, values: Sequence[int]) -> list[int]:
    values = list(values)
    if not values:
        raise ValueError(f"give at least one {name}")
    for v in values:
        if int(v) <= 0:
            raise ValueError(f"{name} must be a positive integer; got {v}")
    return [int(v) for v in values]


# -- command line ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    parser.add_argument("--depths", nargs="+", type=int, default=[2, 9], help="hidden layers")
    parser.add_argument("--widths", nargs="+", type=int, default=[16, 128, 1024])
    parser.add_argument("--variant", nargs="+", default=["bregman", "standard"])
    parser.add_argument("--activation", default="sigmoid")
    parser.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default: $BREGNN_DATA, else ~/.cache/bregnn"
    )
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--train-limit", type=int, default=None, help="use the first n images")
    parser.add_argument("--out", type=Path, default=Path("runs/depth-study"))
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figure")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the study in --out: skip finished runs, continue interrupted ones",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no per-epoch progress (bar or lines)"
    )


def study_from_args(args: argparse.Namespace) -> DepthStudy:
    return DepthStudy(
        depths=args.depths,
        widths=args.widths,
        variants=args.variant,
        activation=args.activation,
        dataset=args.dataset,
        data_dir=args.data_dir,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        momentum=args.momentum,
        seeds=args.seeds,
        train_limit=args.train_limit,
        out=args.out,
        figures=not args.no_figures,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    study = study_from_args(args)
    outcome = run_study(study)
    print()
    print(outcome.table)
    print(
        f"tables: {study.out / 'table.md'}, {study.out / 'table.csv'}, {study.out / 'results.json'}"
    )
    for path in outcome.figures:
        print(f"figure: {path}")
    return 0
