"""``bregnn lifted-classify``: classification with lifted Bregman training and baselines.

Reproduces the classification experiment of Wang & Benning, "Lifted Bregman Training of
Neural Networks" (Fashion-MNIST, 784-64-64-10 ReLU, MSE on one-hot targets, Glorot
initialisation, batch 100, N = 15 inner iterations, tau = 100). Writes ``config.json``,
``metrics.csv`` (one row per epoch), ``checkpoint.pt`` (atomic, every epoch; ``--resume``
continues from it with results identical to an uninterrupted run) and ``final.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bregnn.activations import ACTIVATIONS
from bregnn.data import load_vectors
from bregnn.lifted.network import LiftedNetwork, one_hot
from bregnn.lifted.solvers import SOLVERS, get_solver, make_solver, state_from_dict, state_to_dict
from bregnn.utils import (
    CSVLogger,
    atomic_save,
    default_data_dir,
    progress,
    seed_everything,
    write_json,
)

__all__ = ["DATASETS", "HELP", "NAME", "add_arguments", "run"]

DATASETS = ("fashion-mnist", "mnist")

NAME = "lifted-classify"
HELP = "Train an MLP classifier by lifted Bregman training or a baseline (Wang & Benning)."

SETTINGS = (
    "batch_size",
    "inner_iters",
    "tau",
    "lr",
    "step_scale",
    "alternating",
    "acceleration",
    "momentum",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="fashion-mnist", help=f"one of {list(DATASETS)}")
    parser.add_argument("--layers", type=int, nargs="+", default=[784, 64, 64, 10])
    parser.add_argument("--activation", default="relu", help="hidden activation (registry name)")
    parser.add_argument("--output", default="identity", help="identity (MSE) or softmax")
    parser.add_argument("--method", default="lbn-s", help=f"one of {list(SOLVERS)}")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--inner-iters", type=int, default=15)
    parser.add_argument("--tau", type=float, default=100.0)
    parser.add_argument("--lr", type=float, default=None, help="backprop learning rate")
    parser.add_argument("--step-scale", type=float, default=None, help="lifted step scale")
    parser.add_argument(
        "--alternating",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lbn-s: Gauss-Seidel sweeps (Theta, then X) instead of simultaneous steps",
    )
    parser.add_argument("--acceleration", default=None, help="lbn-d: none|nesterov|heavy-ball")
    parser.add_argument("--momentum", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=None, help="first N training samples")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $BREGNN_DATA")
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-progress", action="store_true")


def _validate(args: argparse.Namespace) -> None:
    get_solver(args.method)
    if args.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {args.dataset!r}; valid: {list(DATASETS)}")
    if args.activation.strip().lower().replace("-", "_") not in ACTIVATIONS:
        raise ValueError(f"unknown activation {args.activation!r}; valid: {sorted(ACTIVATIONS)}")
    if args.epochs <= 0:
        raise ValueError(f"--epochs must be positive; got {args.epochs}")
    if args.train_size is not None and args.train_size <= 0:
        raise ValueError(f"--train-size must be positive; got {args.train_size}")
    for name in ("tau", "lr", "step_scale", "batch_size", "inner_iters"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive; got {value}")


def _checkpoint(state, generator: torch.Generator, epoch: int, args, path: Path) -> None:
    atomic_save(
        {
            "epoch": epoch,
            "method": args.method,
            "state": state_to_dict(state),
            "generator": generator.get_state(),
        },
        path,
    )


def run(args: argparse.Namespace) -> int:
    _validate(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = args.data_dir or default_data_dir()
    out = args.out or Path("runs") / NAME / f"{args.dataset}-{args.method}-seed{args.seed}"
    x_train, l_train = load_vectors(args.dataset, "train", data_dir)
    x_test, l_test = load_vectors(args.dataset, "test", data_dir)
    if args.train_size is not None:
        x_train, l_train = x_train[: args.train_size], l_train[: args.train_size]
    n_classes = args.layers[-1]
    if int(l_train.max()) >= n_classes:
        raise ValueError(
            f"last layer size {n_classes} is too small for {int(l_train.max()) + 1} classes "
            f"(layers {args.layers})"
        )
    y_train = one_hot(l_train, n_classes)

    network = LiftedNetwork(args.layers, args.activation, output=args.output)
    network.check_data(x_train, y_train)
    settings = {k: getattr(args, k) for k in SETTINGS}
    solver = make_solver(args.method, network, **settings)

    generator = seed_everything(args.seed)
    init_gen = torch.Generator().manual_seed(args.seed)
    ckpt_path = out / "checkpoint.pt"
    start = 0
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        if ckpt["method"] != args.method:
            raise ValueError(
                f"checkpoint {ckpt_path} is for {ckpt['method']!r}, not {args.method!r}"
            )
        state = state_from_dict(solver.State, ckpt["state"])
        generator.set_state(ckpt["generator"])
        start = int(ckpt["epoch"])
    else:
        state = solver.init_state(network.init_params(init_gen), x_train, y_train)
    config = {
        **{k: v for k, v in vars(args).items() if k not in ("resume",)},
        "solver": repr(solver),
        "network": repr(network),
        "train_samples": int(x_train.shape[0]),
        "test_samples": int(x_test.shape[0]),
        "torch_threads": torch.get_num_threads(),
    }
    write_json(config, out / "config.json")
    logger = CSVLogger(out / "metrics.csv", resume=args.resume, keep_rows=start)

    bar = progress(range(start, args.epochs), desc=f"{args.method}", enable=not args.no_progress)
    row: dict = {}
    for epoch in bar:
        tic = time.perf_counter()
        try:
            state, metrics = solver.epoch(state, x_train, y_train, generator)
        except FloatingPointError as err:
            raise ValueError(f"epoch {epoch + 1}: {err}") from None
        train_time = time.perf_counter() - tic
        params = solver.params(state)
        train_eval = network.evaluate(params, x_train, l_train)
        test_eval = network.evaluate(params, x_test, l_test)
        row = {"epoch": epoch + 1, **metrics}
        row["train_acc"] = train_eval["accuracy"]
        row["test_acc"] = test_eval["accuracy"]
        for l, frac in enumerate(train_eval["linear"], start=1):
            row[f"linear_{l}"] = frac
        row["epoch_time_s"] = train_time
        logger.log(row)
        _checkpoint(state, generator, epoch + 1, args, ckpt_path)
        bar.set_postfix_str(
            f"train {row['train_acc']:.4f} test {row['test_acc']:.4f} {train_time:.1f}s"
        )
    if not row:
        print(f"{out}: already trained for {start} epochs")
        return 0
    model = network.to_module(solver.params(state))
    atomic_save(model.state_dict(), out / "model.pt")
    write_json({**row, "epochs_run": args.epochs}, out / "final.json")
    print(
        f"{args.method}: epochs {args.epochs}, train acc {row['train_acc']:.4f}, "
        f"test acc {row['test_acc']:.4f}, linear units "
        f"{[round(v, 4) for k, v in row.items() if k.startswith('linear_')]}"
    )
    return 0
