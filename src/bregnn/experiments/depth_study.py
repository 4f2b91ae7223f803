r"""MNIST depth study, Appendix E.1 of Frecon et al. (ICML 2022): sigmoid and scaled-tanh MLPs
of 2 and 9 hidden layers, Bregman vs standard (Figure 5; with depths 1-8 and widths 2-32,
Figure 7).

Every run trains ``MLP(784, [width] * depth, 10, activation, variant)`` behind an
:class:`~bregnn.data.InputScaling` that maps pixel space ``[0, 1]`` into the activation's
range, with :func:`bregnn.train.fit`. The training protocol (:class:`Protocol`) is the
paper's, line by line (Appendix E.1, quoted):

- "The 50k samples of the training set undergo random affine transformations keeping the
  center invariant ... random rotations between (-11.25, +11.25) degrees and a random
  scaling selected in (-0.825, +0.825)": :class:`~bregnn.data.RandomAffine` with
  ``degrees=11.25`` and zoom in ``(0.825, 1.175)``. The printed scaling interval is not a
  zoom range; Ciresan et al. (2010), whose setting E.1 follows, draw scaling factors of
  ``1 +- gamma`` with gamma 15-20%, and 0.825 = 1 - 0.175 is its middle, as 11.25 degrees is
  the middle of their 7.5-15 degree rotations. We read it as ``1 +- 0.175``.
- "The original un-deformed training dataset is then use as validation set to perform
  early stopping": a held-out part of the training images (``val_fraction`` = 1/6, the
  50k / 10k cut of the 60k official images, which the authors' ``demos/demo_mnist_mlp.py``
  makes with ``random_split(train_set_raw, [50000, 10000])``), never deformed; the split is
  drawn per seed ("repeated over 5 different data splits", E.2). Early stopping watches
  validation accuracy with patience 10 and restores the best weights, as the authors'
  ``demos/utils/optimization.py`` (``fit(..., patience=10)``, ``criterion='accuracy'``).
- "pre-processed so that the pixel intensity lie within the activation range": pixel
  ``p in [0, 1]`` maps affinely onto the activation's range less a margin of ``1e-5`` of
  its width at each end (``fill = 1 - 2e-5``), as the authors' ``affine_transformation``
  (``demos/utils/utils.py``: ``(cmin + eps) + (cmax - cmin - 2 eps) p``, ``eps = 1e-5``).
- "stochastic gradient descent with batch size 100 with a decreasing step learning
  linearly decreasing of a factor 10^-3 over 10^3 epochs": plain SGD (no momentum),
  batch 100, 1000 epochs at most, learning rate ``lr * (1 - (1 - 1e-3) e / 1000)`` in epoch
  ``e = 0, 1, ...`` (:class:`LinearDecayLoss`).
- "For sigmoid-based MLP (resp. scaled hyperbolic tangent), we have found the best value to
  be 10^-1 (resp. 10^-3)": :data:`PAPER_LR`.
- Initialisation: the paper does not state it; ``random`` (PyTorch's default, as the
  authors' ``bregmanet.MLP(init='random')``).

MNIST on this project's machines is a 10k subset (8k train / 2k test), not the official
60k / 10k split: the numbers are not comparable with the paper's. ``--train-limit`` keeps
the first ``n`` training images (quick runs, tests).

Runs live in ``out/<activation>-<variant>-d<depth>-w<width>/seed<k>/`` and resume like the
two-spiral grid (:func:`bregnn.runs.prepare_run`; a resumed study may change the mutable
settings and its axes :data:`STUDY_AXES`, nothing else); the study writes ``config.json``,
``table.md`` / ``table.csv`` / ``results.json`` and ``depth-study.png`` (skipped with a note
without matplotlib). :func:`train_classifier` is the one training step of every MNIST
reproduction (:mod:`bregnn.experiments.bregman_tables` uses it for other models too).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from bregnn.activations import activation, available_activations
from bregnn.data import InputScaling, RandomAffine, dataset_spec, load_dataset
from bregnn.experiments._summary import csv_text, markdown_table, summarize_seeds
from bregnn.experiments.image_classify import ToUnit, ToUnitAugment
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
from bregnn.train import TrainConfig, evaluate, fit, load_checkpoint
from bregnn.utils import default_data_dir, seed_everything

__all__ = [
    "HELP",
    "NAME",
    "PAPER_LR",
    "STUDY_AXES",
    "DepthStudy",
    "ImageSplits",
    "LinearDecayLoss",
    "Protocol",
    "StudyOutcome",
    "add_arguments",
    "format_table",
    "image_mlp",
    "load_images",
    "load_splits",
    "run",
    "run_dir",
    "run_study",
    "split_validation",
    "study_from_args",
    "summarize",
    "train_classifier",
]

NAME = "depth-study"
HELP = (
    "MNIST depth study (App. E.1): sigmoid / scaled-tanh MLPs of 2 and 9 hidden layers, "
    "Bregman vs standard (Fig. 5)."
)

PAPER_LR = {"sigmoid": 0.1, "scaled_tanh": 1e-3}
"""Appendix E.1: "For sigmoid-based MLP (resp. scaled hyperbolic tangent), we have found the
best value to be 10^-1 (resp. 10^-3)" (cross-validated over 10^-3, 10^-2, 10^-1)."""

STUDY_AXES = frozenset({"depths", "widths", "variants", "activations", "seeds"})
"""Settings that select which runs a study holds: a resumed study may change them."""

AUTHORS_FILL = 1 - 2e-5
"""The share of the activation's range that pixel space maps onto: the authors'
``affine_transformation`` leaves ``eps = 1e-5`` at each end (``demos/utils/utils.py``)."""


# -- the training protocol -------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """How one image classifier is trained (defaults: Appendix E.1, see the module docstring).

    ``lr_end_factor`` / ``schedule_epochs``: the learning rate falls linearly from ``lr`` to
    ``lr * lr_end_factor`` over ``schedule_epochs`` epochs (``lr_end_factor = 1``: constant).
    ``epochs`` may stop a run earlier than ``schedule_epochs``: it is then the first
    ``epochs`` epochs of the paper's run, not a compressed schedule. ``patience``: early
    stopping on validation accuracy (``None``: off, the last weights are kept).
    ``val_fraction``: the share of the training images held out, undeformed, for validation.
    ``augment``: random rotations of ``+-degrees`` and zooms in ``scale``. ``fill``: pixel
    space ``[0, 1]`` maps onto this central share of the activation's range.
    """

    lr: float = 0.1
    epochs: int = 1000
    batch_size: int = 100
    momentum: float = 0.0
    lr_end_factor: float = 1e-3
    schedule_epochs: int = 1000
    patience: int | None = 10
    val_fraction: float = 1 / 6
    augment: bool = True
    degrees: float = 11.25
    scale: tuple[float, float] = (0.825, 1.175)
    fill: float = AUTHORS_FILL

    def __post_init__(self) -> None:
        _check_protocol(self)


def _check_protocol(p: Any) -> None:
    if p.lr is not None and not (p.lr > 0 and math.isfinite(p.lr)):
        raise ValueError(f"lr must be positive and finite; got {p.lr}")
    for name in ("epochs", "batch_size", "schedule_epochs"):
        if int(getattr(p, name)) <= 0:
            raise ValueError(f"{name} must be a positive integer; got {getattr(p, name)}")
    if not 0 <= p.momentum < 1:
        raise ValueError(f"momentum must be in [0, 1); got {p.momentum}")
    if not 0 < p.lr_end_factor <= 1:
        raise ValueError(f"lr_end_factor must be in (0, 1]; got {p.lr_end_factor}")
    if p.lr_end_factor < 1 and p.momentum != 0:
        raise ValueError(
            "the linear learning-rate decay (lr_end_factor < 1) is implemented for plain SGD "
            f"only (momentum 0, as Appendix E.1); got momentum {p.momentum}"
        )
    if p.patience is not None and p.patience <= 0:
        raise ValueError(f"patience must be a positive integer or None; got {p.patience}")
    if not 0 < p.val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1); got {p.val_fraction}")
    if p.degrees < 0 or not 0 < p.scale[0] <= p.scale[1]:
        raise ValueError(
            f"need degrees >= 0 and 0 < scale[0] <= scale[1]; got {p.degrees}, {p.scale}"
        )
    if not 0 < p.fill < 1:
        raise ValueError(f"fill must be in (0, 1); got {p.fill}")


@dataclass
class LinearDecayLoss:
    r"""Cross-entropy whose *gradient* carries the linear learning-rate factor of epoch ``e``,

    .. math::

        c_e = 1 - (1 - \text{end\_factor}) \min(e, E) / E, \qquad E = \text{schedule\_epochs},

    while its value stays the plain cross-entropy: it returns
    ``ce.detach() + c_e * (ce - ce.detach())``. For plain SGD (no momentum, no weight decay)
    the step ``lr * grad(c_e ce)`` is exactly the step of learning rate ``lr * c_e`` (the
    schedule of ``torch.optim.lr_scheduler.LinearLR(start_factor=1, end_factor, E)``), which
    :func:`bregnn.train.fit` has no option for. The epoch is counted from the calls:
    ``batches_per_epoch`` calls per epoch, from epoch ``start_epoch`` (the epochs a resumed
    run has done). Picklable (no closures).
    """

    batches_per_epoch: int
    schedule_epochs: int = 1000
    end_factor: float = 1e-3
    start_epoch: int = 0
    calls: int = 0

    def factor(self, epoch: int) -> float:
        """:math:`c_e` of the 0-based ``epoch``."""
        t = min(epoch, self.schedule_epochs) / self.schedule_epochs
        return 1.0 - (1.0 - self.end_factor) * t

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        loss = nn.functional.cross_entropy(logits, labels)
        epoch = self.start_epoch + self.calls // self.batches_per_epoch
        self.calls += 1
        c = self.factor(epoch)
        if c == 1.0:
            return loss
        frozen = loss.detach()
        return frozen + c * (loss - frozen)


# -- data ------------------------------------------------------------------------------------------
class ImageSplits(NamedTuple):
    """``uint8`` images ``(N, C, H, W)`` and ``int64`` labels: train, validation, test."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


def load_images(
    dataset: str, data_dir: Path | None, train_limit: int | None = None
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The training images (the first ``train_limit`` of them) and the test images."""
    root = data_dir if data_dir is not None else default_data_dir()
    images, labels = load_dataset(dataset, "train", root)
    if train_limit is not None:
        images, labels = images[:train_limit], labels[:train_limit]
    return (images, labels), load_dataset(dataset, "test", root)


def split_validation(
    train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], val_fraction: float, seed: int
) -> ImageSplits:
    """``train`` cut at random (generator seeded with ``seed``) into training images and a
    validation share ``val_fraction``; ``test`` unchanged."""
    images, labels = train
    n_val = max(1, round(val_fraction * len(images)))
    if n_val >= len(images):
        raise ValueError(
            f"{len(images)} training images leave none for training with val_fraction "
            f"{val_fraction}"
        )
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    val, kept = order[:n_val], order[n_val:]
    return ImageSplits((images[kept], labels[kept]), (images[val], labels[val]), test)


def load_splits(
    dataset: str,
    data_dir: Path | None,
    val_fraction: float,
    seed: int,
    train_limit: int | None = None,
) -> ImageSplits:
    """:func:`load_images` then :func:`split_validation`."""
    train, test = load_images(dataset, data_dir, train_limit)
    return split_validation(train, test, val_fraction, seed)


def image_mlp(
    dataset: str, hidden: Sequence[int], act: str, variant: str, init: str, fill: float
) -> nn.Sequential:
    """``Sequential(InputScaling, Flatten, MLP(C*H*W, hidden, classes))`` for pixel-space
    images of ``dataset``."""
    spec = dataset_spec(dataset)
    c, h, w = spec.shape
    mlp = MLP(c * h * w, list(hidden), spec.num_classes, act, variant, init)
    return nn.Sequential(InputScaling.for_activation(act, fill), nn.Flatten(), mlp)


# -- one run ---------------------------------------------------------------------------------------
def train_classifier(
    model: nn.Module,
    splits: ImageSplits,
    protocol: Protocol,
    seed: int,
    run_path: Path,
    resume: bool = False,
    progress: bool = True,
    desc: str = "train",
) -> dict[str, Any]:
    """Train ``model`` (pixel-space input) by ``protocol`` with :func:`bregnn.train.fit` into
    ``run_path``; returns the final metrics (train accuracy on the undeformed training
    images; with early stopping, of the best-validation weights), and ``model`` holds the
    trained weights. ``model.pt`` and ``result.json`` are written; a run whose
    ``result.json`` holds the same epoch count is not trained again when ``resume`` is true
    (its ``model.pt`` is loaded; ``"skipped": True``)."""
    result_path = run_path / "result.json"
    if resume and result_path.exists():
        result = json.loads(result_path.read_text())
        if result.get("epochs") == protocol.epochs:  # else: continue it to the new epoch count
            model.load_state_dict(torch.load(run_path / "model.pt", weights_only=True))
            return {**result, "skipped": True}
    x_train = splits.train[0]
    done = 0
    if resume and (run_path / "checkpoint.pt").exists():
        done = int(load_checkpoint(run_path / "checkpoint.pt")["epoch"])
    loss_fn = LinearDecayLoss(
        batches_per_epoch=math.ceil(len(x_train) / protocol.batch_size),
        schedule_epochs=protocol.schedule_epochs,
        end_factor=protocol.lr_end_factor,
        start_epoch=done,
    )
    config = TrainConfig(
        lr=protocol.lr,
        epochs=protocol.epochs,
        batch_size=protocol.batch_size,
        momentum=protocol.momentum,
        patience=protocol.patience,
        seed=seed,
        progress=progress,
        desc=desc,
    )
    augment = None
    if protocol.augment:
        augment = RandomAffine(degrees=protocol.degrees, scale=tuple(protocol.scale))
    history = fit(model, splits.train, config, splits.val, splits.test, run_path, resume=resume,
                  train_transform=ToUnitAugment(augment), eval_transform=ToUnit(),
                  loss_fn=loss_fn)  # fmt: skip
    scores = {}
    for name, (x, y) in zip(("train", "val", "test"), splits):
        scores[f"{name}_loss"], scores[f"{name}_accuracy"] = evaluate(
            model, x, y, transform=ToUnit()
        )
    result = {
        "epochs": protocol.epochs,
        **scores,
        "epochs_run": len(history.rows),
        "best_epoch": history.best_epoch,
        "stopped_early": history.stopped_early,
        "final_lr": protocol.lr * loss_fn.factor(max(len(history.rows) - 1, 0)),
        "seconds": accumulated_seconds(history.rows, "time"),
    }
    atomic_save(model.state_dict(), run_path / "model.pt")
    write_json(result, result_path)
    return {**result, "skipped": False}


# -- the study -------------------------------------------------------------------------------------
@dataclass
class DepthStudy:
    """Settings of the depth study (validated on construction). The grid: ``depths`` x
    ``widths`` x ``variants`` x ``activations`` x ``seeds``; the rest is the
    :class:`Protocol` (``lr=None``: :data:`PAPER_LR` of each activation)."""

    depths: Sequence[int] = (2, 9)
    widths: Sequence[int] = (16, 128, 1024)
    variants: Sequence[str] = ("bregman", "standard")
    activations: Sequence[str] = ("sigmoid", "scaled_tanh")
    dataset: str = "mnist"
    data_dir: Path | None = None
    init: str = "random"
    lr: float | None = None
    epochs: int = Protocol.epochs
    batch_size: int = Protocol.batch_size
    momentum: float = Protocol.momentum
    lr_end_factor: float = Protocol.lr_end_factor
    schedule_epochs: int = Protocol.schedule_epochs
    patience: int | None = Protocol.patience
    val_fraction: float = Protocol.val_fraction
    augment: bool = Protocol.augment
    degrees: float = Protocol.degrees
    scale: tuple[float, float] = Protocol.scale
    fill: float = Protocol.fill
    seeds: int = 5
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
        self.activations = tuple(self.activations)
        if not self.variants:
            raise ValueError("give at least one variant")
        if not self.activations:
            raise ValueError("give at least one activation")
        for v in self.variants:
            if v not in VARIANTS:
                raise ValueError(f"unknown variant {v!r}; valid variants: {list(VARIANTS)}")
        for name in self.activations:
            act = activation(name)  # ValueError listing the valid names
            if "bregman" in self.variants and not act.invertible:
                raise ValueError(
                    f"the bregman variant needs an invertible activation; {name!r} is not. "
                    f"Invertible activations: {available_activations(invertible=True)}"
                )
            if self.lr is None and name not in PAPER_LR:
                raise ValueError(
                    f"the paper gives no learning rate for {name!r} (only for "
                    f"{sorted(PAPER_LR)}); pass lr"
                )
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; valid inits: {list(INITS)}")
        self.dataset = dataset_spec(self.dataset).name  # ValueError listing the datasets
        self.scale = tuple(float(s) for s in self.scale)
        _check_protocol(self)
        if int(self.seeds) <= 0:
            raise ValueError(f"seeds must be a positive integer; got {self.seeds}")
        if self.train_limit is not None and self.train_limit <= 0:
            raise ValueError(f"train_limit must be positive or None; got {self.train_limit}")
        self.out = Path(self.out)

    def protocol(self, act: str) -> Protocol:
        """The training protocol of activation ``act``."""
        names = {f.name for f in dataclasses.fields(Protocol)}
        values = {k: v for k, v in asdict(self).items() if k in names}
        values["lr"] = self.lr if self.lr is not None else PAPER_LR[act]
        return Protocol(**values)


class StudyOutcome(NamedTuple):
    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    table: str
    figures: list[Path]


def run_dir(study: DepthStudy, act: str, variant: str, depth: int, width: int) -> Path:
    """The directory of one configuration (its seeds in ``seed<k>/``)."""
    return study.out / f"{act}-{variant}-d{depth}-w{width}"


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and population std over seeds, one row per (activation, depth, width, variant)."""
    keys = ("activation", "depth", "width", "variant")
    return summarize_seeds(runs, keys, means=("epochs_run", "seconds"), sort=True)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`summarize` rows (accuracies in percent)."""
    columns = [("activation", "{activation}"), ("hidden layers", "{depth}"),
               ("width", "{width}"), ("variant", "{variant}")]  # fmt: skip
    return markdown_table(rows, columns, trailing=[("epochs run", "{epochs_run_mean:.0f}")])


def run_study(study: DepthStudy, echo: bool = True) -> StudyOutcome:
    """Train every (activation, depth, width, variant, seed) of ``study``; write the tables
    and the figure."""
    train, test = load_images(study.dataset, study.data_dir, study.train_limit)
    resumed = prepare_run(
        study.out,
        asdict(study),
        resume=study.resume,
        overwrite=study.overwrite,
        mutable=MUTABLE_KEYS | STUDY_AXES,
    )
    runs = []
    sizes = (0, 0, 0)
    for seed in range(study.seeds):
        splits = split_validation(train, test, study.val_fraction, seed)
        sizes = tuple(len(s[1]) for s in splits)
        for act in study.activations:
            protocol = study.protocol(act)
            for depth in study.depths:
                for width in study.widths:
                    for variant in study.variants:
                        seed_everything(seed)
                        model = image_mlp(study.dataset, [width] * depth, act, variant,
                                          study.init, study.fill)  # fmt: skip
                        path = run_dir(study, act, variant, depth, width) / f"seed{seed}"
                        desc = f"{act} {variant} depth {depth} width {width} seed {seed}"
                        r = train_classifier(model, splits, protocol, seed, path, resumed,
                                             study.progress, desc)  # fmt: skip
                        r = {"activation": act, "variant": variant, "depth": depth,
                             "width": width, "seed": seed, "lr": protocol.lr, **r}  # fmt: skip
                        runs.append(r)
                        if echo:
                            state = (
                                "done before, skipped" if r["skipped"] else f"{r['seconds']:.0f}s"
                            )
                            print(
                                f"{desc}: train {100 * r['train_accuracy']:.1f}% "
                                f"test {100 * r['test_accuracy']:.1f}% "
                                f"({r['epochs_run']} epochs, {state})",
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
    if study.figures and figures_or_note():
        from bregnn.plotting import plot_depth_panels

        lrs = ", ".join(f"{a} {study.protocol(a).lr:g}" for a in study.activations)
        figures.append(
            plot_depth_panels(
                rows,
                study.out / "depth-study.png",
                title=f"{study.dataset}: {sizes[0]} train / {sizes[1]} validation / "
                f"{sizes[2]} test images\nSGD lr {lrs}, batch {study.batch_size}, "
                f"at most {study.epochs} epochs, {study.seeds} seed(s)",
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
    parser.add_argument("--activation", nargs="+", default=["sigmoid", "scaled_tanh"])
    parser.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default: $BREGNN_DATA, else ~/.cache/bregnn"
    )
    parser.add_argument("--init", default="random", help=f"one of {list(INITS)}")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="default: the paper's (sigmoid 0.1, scaled_tanh 1e-3)",
    )
    parser.add_argument(
        "--epochs", type=int, default=Protocol.epochs, help="at most (early stopping)"
    )
    parser.add_argument("--batch-size", type=int, default=Protocol.batch_size)
    parser.add_argument("--momentum", type=float, default=Protocol.momentum)
    parser.add_argument("--lr-end-factor", type=float, default=Protocol.lr_end_factor,
                        help="the lr falls linearly to lr * this over --schedule-epochs (1: constant)")  # fmt: skip
    parser.add_argument("--schedule-epochs", type=int, default=Protocol.schedule_epochs)
    parser.add_argument(
        "--patience", type=int, default=Protocol.patience, help="early stopping (0: off)"
    )
    parser.add_argument("--val-fraction", type=float, default=Protocol.val_fraction,
                        help="share of the training images held out for validation")  # fmt: skip
    parser.add_argument("--no-augment", action="store_true", help="no random rotations / zooms")
    parser.add_argument("--seeds", type=int, default=5, help="data splits and initialisations")
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
        activations=args.activation,
        dataset=args.dataset,
        data_dir=args.data_dir,
        init=args.init,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        momentum=args.momentum,
        lr_end_factor=args.lr_end_factor,
        schedule_epochs=args.schedule_epochs,
        patience=args.patience or None,
        val_fraction=args.val_fraction,
        augment=not args.no_augment,
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
