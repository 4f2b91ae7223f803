"""``bregnn lifted-classify``: classification with lifted Bregman training and baselines.

Reproduces the classification experiment of Wang & Benning, "Lifted Bregman Training of
Neural Networks" (Fashion-MNIST, centred images, 784-64-64-10 ReLU, MSE on one-hot
targets, Glorot initialisation, batch 100, N = 15 inner iterations, tau_k = 100). A thin shell over
:func:`bregnn.lifted.fit`: the run directory holds ``config.json``, ``metrics.csv`` (one row
per epoch: training and test accuracy and linear units per hidden layer, the batch
metrics, the epoch's training time), ``checkpoint.pt`` (``--resume``), ``model.pt``,
``summary.json`` and ``curves.png``. The options of ``--method`` are its ``Config`` fields
(``bregnn lifted-classify --method bcd --help``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from bregnn import distributed
from bregnn.activations import ACTIVATIONS
from bregnn.data import load_vectors
from bregnn.data.centering import CENTERINGS, center
from bregnn.experiments._lifted import add_method_options, chosen_methods, method_settings
from bregnn.experiments.lifted_tables import plot_linear_units
from bregnn.experiments.reproduce import format_table
from bregnn.lifted import LiftedNetwork, fit
from bregnn.lifted.autoencoder import plot_curves
from bregnn.lifted.solvers import SOLVERS
from bregnn.plotting import figures_or_note
from bregnn.utils import add_device_argument, default_data_dir, pick_device

__all__ = ["DATASETS", "HELP", "NAME", "add_arguments", "run"]

DATASETS = ("fashion-mnist", "mnist")
NAME = "lifted-classify"
HELP = "Train an MLP classifier by lifted Bregman training or a baseline (Wang & Benning)."


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    parser.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    parser.add_argument(
        "--center",
        default="pixel",
        choices=CENTERINGS,
        help="centre the images (the paper's pre-processing): by the training set's "
        "per-pixel mean, by each image's mean, or not",
    )
    parser.add_argument("--layers", type=int, nargs="+", default=[784, 64, 64, 10])
    parser.add_argument("--activation", default="relu", help="hidden activation (registry name)")
    parser.add_argument("--output", default="identity", help="identity (MSE) or softmax")
    parser.add_argument("--method", default="lbn-s", help=f"one of {SOLVERS.names()}")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=None, help="first N training samples")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $BREGNN_DATA")
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-progress", action="store_true")
    add_device_argument(parser, default="cpu")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="join the torchrun process group: data-parallel model averaging, or with "
        "--layer-groups a layer-parallel (x data-parallel) grid",
    )
    parser.add_argument(
        "--layer-groups", type=int, default=1, help="--distributed: layer groups (one per rank)"
    )
    parser.add_argument("--backend", default="auto", help="--distributed: auto|gloo|nccl")
    add_method_options(parser, chosen_methods(argv, ["lbn-s"])[:1])


def run(args: argparse.Namespace) -> int:
    if args.layer_groups > 1 and not args.distributed:
        raise ValueError("--layer-groups needs --distributed (start with torchrun)")
    pick_device(args.device)  # a bad --device fails before any data is read
    if not args.distributed:
        return _run(args)
    ctx = distributed.init_from_env(
        args.device, backend=None if args.backend == "auto" else args.backend
    )
    try:
        return _run(args, ctx)
    finally:
        distributed.cleanup()


def _run(args: argparse.Namespace, ctx: distributed.DistContext | None = None) -> int:
    SOLVERS.get(args.method)
    if args.threads:
        torch.set_num_threads(args.threads)
    ACTIVATIONS.get(args.activation)
    for name in ("epochs", "train_size"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive; got {value}")
    network = LiftedNetwork(args.layers, args.activation, output=args.output)
    data_dir = args.data_dir or default_data_dir()
    x_train, l_train = load_vectors(args.dataset, "train", data_dir)
    x_test, l_test = load_vectors(args.dataset, "test", data_dir)
    if args.train_size is not None:
        x_train, l_train = x_train[: args.train_size], l_train[: args.train_size]
    (x_train, x_test), _ = center(x_train, [x_test], args.center)
    out = args.out or Path("runs") / NAME / f"{args.dataset}-{args.method}-seed{args.seed}"
    result = fit(
        network,
        x_train,
        l_train,
        method=args.method,
        epochs=args.epochs,
        seed=args.seed,
        x_val=x_test,
        y_val=l_test,
        val_name="test",
        out=out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        layer_groups=args.layer_groups,
        device=ctx.device if ctx is not None else args.device,
        run_config={"dataset": args.dataset, "train_size": args.train_size, "center": args.center},
        **method_settings(args, args.method),
    )
    if ctx is not None and not ctx.is_main:
        return 0
    last = result.history[-1]
    linear = [100 * v for k, v in last.items() if k.startswith("train_linear_")]
    if figures_or_note(NAME):
        plot_curves(
            {args.method: result.history}, out / "curves.png",
            ("train_accuracy", "test_accuracy", "batch_energy"), f"{args.dataset}: {args.method}",
        )  # fmt: skip
        plot_linear_units({args.method: linear}, out / "linear_units.png")
    row = {
        "method": args.method,
        "layers": "-".join(map(str, network.sizes)),
        "epochs": int(last["epoch"]),
        "train acc %": 100 * last["train_accuracy"],
        "test acc %": 100 * last["test_accuracy"],
        "linear units %": " / ".join(f"{v:.1f}" for v in linear),
        "train s": sum(r["epoch_time_s"] for r in result.history),
    }
    print(format_table([row]))
    return 0
