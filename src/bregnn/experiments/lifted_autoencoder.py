"""``bregnn lifted-autoencoder``: sparse (denoising) autoencoders by lifted Bregman training
and backprop baselines (Wang & Benning, equations 26 and 27).

One invocation trains one or more methods on the same data and initialisation, each by
:func:`bregnn.lifted.fit` into its own run directory ``OUT/<method>`` (``OUT/<method>-lr<lr>``
for a learning-rate grid: ``metrics.csv`` with the training objective, reconstruction loss,
MSE and code sparsity on the training and validation sets, ``checkpoint.pt``,
``summary.json``, ``recon.pt``). ``OUT`` gets ``config.json``, ``summary.json`` (per method:
the best learning rate's last row), ``curves.png`` and ``reconstructions.png`` (original /
noisy / reconstructed validation images). More methods can be added to ``OUT`` later with
``--resume``.

Data-parallel training (model averaging, equation 23): ``--distributed`` under
``torchrun --nproc_per_node P -m bregnn lifted-autoencoder --distributed ...``.

Methods: every registered lifted solver and backprop baseline, and ``undercomplete``
(``sgd-bp`` on a ``784-W-70-W-784`` network without sparsity term). The options of the chosen
methods are their ``Config`` fields; this command's own defaults are the paper's MNIST-1K
sparse autoencoder (Section 6.2): centred images, ``L = 4`` layers of width 784 with the code
on ``x_2``, ``alpha = 0.09``, ``batch_size`` 20, ``tau_k = 1`` (equation 24) for the implicit
methods, learning rates 0.03 (SGD-BP) and 0.04 (GD-BP) on the batch-mean objective.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from bregnn import distributed
from bregnn.data.centering import CENTERINGS
from bregnn.experiments._lifted import add_method_options, chosen_methods, method_settings
from bregnn.experiments._summary import read_metrics
from bregnn.lifted import LiftedNetwork, evaluate_regression, fit
from bregnn.lifted.autoencoder import (
    AE_DATASETS,
    AEData,
    autoencoder_data,
    plot_curves,
    plot_reconstructions,
    sparse_autoencoder,
    undercomplete_autoencoder,
)
from bregnn.lifted.solvers import SOLVERS, config_fields
from bregnn.runs import MUTABLE_KEYS, prepare_run_ranks, write_json
from bregnn.utils import add_device_argument, default_data_dir, pick_device

__all__ = ["HELP", "METHODS", "NAME", "OVERRIDES", "add_arguments", "run"]

NAME = "lifted-autoencoder"
HELP = "Sparse (denoising) autoencoders: lifted Bregman training vs backprop (Wang & Benning)."

UNDERCOMPLETE = "undercomplete"
METHODS = (*SOLVERS.names(), UNDERCOMPLETE)
_MINI = {"batch_size": 20}
OVERRIDES = {
    "lbn-s": {**_MINI, "tau": 1.0, "step_rule": "alternating", "step_scale": 1.99},
    "lifted-quadratic": {**_MINI, "tau": 1.0},
    "mac-qp": {**_MINI, "tau": 1.0},
    "linbreg": _MINI,
    "sgd-bp": {**_MINI, "lr": 0.03},
    "gd-bp": {"lr": 0.04},
    "isgd-bp": {**_MINI, "tau": 1.0, "lr": 0.03},
}


def _settings_method(method: str) -> str:
    return "sgd-bp" if method == UNDERCOMPLETE else method


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    parser.add_argument("--dataset", default="mnist", choices=AE_DATASETS)
    parser.add_argument("--train-size", type=int, default=1000, help="training images (seeded)")
    parser.add_argument(
        "--val-size", type=int, default=None, help="validation images (default: all the rest)"
    )
    parser.add_argument(
        "--method", nargs="+", default=["lbn-s"], help=f"one or more of {list(METHODS)}"
    )
    parser.add_argument(
        "--center",
        default="pixel",
        choices=CENTERINGS,
        help="centre the images (the paper's pre-processing; see bregnn.data.centering)",
    )
    parser.add_argument(
        "--layers",
        type=int,
        default=4,
        help="affine layers of the sparse autoencoder (code in the middle)",
    )
    parser.add_argument("--alpha", type=float, default=0.09, help="weight of |code|_1")
    parser.add_argument(
        "--threshold", type=float, default=None, help="soft-threshold of the code (default alpha)"
    )
    parser.add_argument("--denoise", type=float, default=0.0, help="input noise std (0: off)")
    parser.add_argument("--width", type=int, default=784, help="hidden width")
    parser.add_argument("--code", type=int, default=70, help="code size of 'undercomplete'")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $BREGNN_DATA")
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue (or add methods to) OUT")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel model averaging (start with torchrun; rank 0 logs and saves)",
    )
    parser.add_argument(
        "--sync-every", type=int, default=None, help="--distributed: updates between averages"
    )
    parser.add_argument("--backend", default="auto", help="--distributed: auto|gloo|nccl")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    add_device_argument(parser, default="cpu")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    methods = [_settings_method(m) for m in chosen_methods(argv, ["lbn-s"]) if m != UNDERCOMPLETE]
    if UNDERCOMPLETE in argv:
        methods.append("sgd-bp")
    methods = list(dict.fromkeys(methods)) or ["lbn-s"]
    add_method_options(parser, methods, OVERRIDES, skip=("lr",))
    lrs = [f"{m}: {OVERRIDES.get(m, {}).get('lr')}" for m in methods if "lr" in _fields(m)]
    if lrs:
        parser.add_argument(
            "--lr",
            type=float,
            nargs="+",
            default=None,
            help=f"backprop learning rate(s); several: a grid, the best is reported [{'; '.join(lrs)}]",
        )


def _fields(method: str) -> set[str]:
    return set(config_fields(SOLVERS.get(method).Config))


def _validate(args: argparse.Namespace) -> None:
    for method in args.method:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid methods: {list(METHODS)}")
    if len(set(args.method)) != len(args.method):
        raise ValueError(f"--method lists a method twice: {args.method}")
    if args.layers < 3:
        raise ValueError(
            f"--layers must be >= 3 (a code between encoder and decoder); got {args.layers}"
        )
    for name in ("epochs", "train_size", "width", "code"):
        value = getattr(args, name)
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer; got {value}")
    lrs = getattr(args, "lr", None)
    if lrs is not None and not all(lr > 0 for lr in lrs):
        raise ValueError(f"--lr values must be positive; got {lrs}")
    if not args.alpha >= 0:
        raise ValueError(f"--alpha must be >= 0; got {args.alpha}")
    if not args.denoise >= 0:
        raise ValueError(f"--denoise (noise std) must be >= 0; got {args.denoise}")


def _network(method: str, args: argparse.Namespace, dim: int) -> tuple[LiftedNetwork, int]:
    """The network of ``method`` and its code layer (1-based hidden index)."""
    if method == UNDERCOMPLETE:
        return undercomplete_autoencoder(dim, args.width, args.code), 2
    net = sparse_autoencoder(args.alpha, dim, args.width, args.layers, threshold=args.threshold)
    return net, args.layers // 2


def run(args: argparse.Namespace) -> int:
    _validate(args)
    pick_device(args.device)  # a bad --device fails before any data is read
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = distributed.init_from_env(args.device, backend=args.backend) if args.distributed else None
    try:
        return _run(args, ctx or distributed.DistContext())
    finally:
        if ctx is not None:
            distributed.cleanup()


def _run(args: argparse.Namespace, ctx: distributed.DistContext) -> int:
    out = args.out or Path("runs") / NAME / f"{args.dataset}-{args.train_size}-seed{args.seed}"
    data = autoencoder_data(
        args.dataset,
        args.train_size,
        args.data_dir or default_data_dir(),
        args.seed,
        args.val_size,
        args.denoise,
        args.center,
    )
    # the data and network options; each method's settings are checked in its own run
    settings = {f for m in SOLVERS.names() for f in _fields(m)}
    config = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in settings}
    prepare_run_ranks(
        out,
        config,
        ctx,
        resume=args.resume,
        overwrite=args.overwrite,
        mutable=MUTABLE_KEYS | {"method", "distributed", "backend", "sync_every"},
    )
    summary_path = out / "summary.json"
    summary: dict[str, dict] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for method in args.method:
        solver_name = _settings_method(method)
        settings = method_settings(args, solver_name, OVERRIDES, skip=("lr",))
        grid = args.lr if ("lr" in _fields(solver_name) and getattr(args, "lr", None)) else [None]
        best = None
        for lr in grid:
            run_name = method
            if lr is not None:
                settings["lr"] = lr
                run_name = f"{method}-lr{lr:g}" if len(grid) > 1 else method
            network, code_layer = _network(method, args, data.train_input.shape[1])
            result = fit(
                network,
                data.train_input,
                data.train_target,
                method=solver_name,
                epochs=args.epochs,
                seed=args.seed,
                x_val=data.val_input,
                y_val=data.val_target,
                out=out / run_name,
                resume=args.resume,
                progress=not args.no_progress,
                evaluate=functools.partial(evaluate_regression, sparsity_layers=[code_layer]),
                sync_every=args.sync_every,
                device=ctx.device if args.distributed else args.device,
                run_config={"command": NAME, "dataset": args.dataset, "network_of": method},
                desc=run_name,
                **settings,
            )
            if not ctx.is_main:  # only rank 0 evaluates; it alone reports
                continue
            final = result.history[-1]["train_objective"]
            if best is None or final < best[0] or not math.isfinite(best[0]):
                best = (final, settings.get("lr"), run_name, result)
        if not ctx.is_main:
            continue
        _, lr, run_name, result = best
        with torch.no_grad():
            val8 = data.val_input[:8].to(result.params.weights[0].device)
            _, recon = result.network.forward(result.params, val8)
        torch.save(recon.cpu(), out / run_name / "recon.pt")
        last = result.history[-1]
        summary[method] = {"run": run_name, "lr": lr, **last}
        write_json(summary, summary_path)
        label = method if lr is None else f"{method} (lr {lr:g})"
        print(
            f"{label}: epochs {int(last['epoch'])}, train objective "
            f"{last['train_objective']:.5g}, val loss {last['val_loss']:.5g}, "
            f"code sparsity {last['train_sparsity']:.2f}%"
        )
    if ctx.is_main and not args.no_figures:
        from bregnn.plotting import figures_or_note

        if figures_or_note(NAME):
            make_figures(out, data, args)
    distributed.barrier(ctx)
    return 0


def make_figures(out: Path, data: AEData, args: argparse.Namespace) -> None:
    """``curves.png`` and ``reconstructions.png`` over every method in ``summary.json``
    (also those trained by earlier invocations into the same ``out``)."""
    summary = json.loads((out / "summary.json").read_text())
    histories, recons = {}, {}
    for method, entry in summary.items():
        run_dir = out / entry["run"]
        if not (run_dir / "metrics.csv").exists():
            continue
        label = method if entry.get("lr") is None else f"{method} (lr {entry['lr']:g})"
        histories[label] = read_metrics(run_dir / "metrics.csv")
        if (run_dir / "recon.pt").exists():
            recons[label] = torch.load(run_dir / "recon.pt", map_location="cpu", weights_only=True)
    title = f"{args.dataset}-{args.train_size}, alpha {args.alpha:g}" + (
        f", noise std {args.denoise:g}" if args.denoise > 0 else ""
    )
    plot_curves(
        histories, out / "curves.png", ("train_objective", "val_loss", "train_sparsity"), title
    )
    offset = data.val_offset
    if isinstance(offset, torch.Tensor) and offset.ndim and offset.shape[0] > 1:
        offset = offset[:8]
    rows_img = {"original": data.val_target[:8] + offset}
    if args.denoise > 0:
        rows_img["noisy"] = data.val_input[:8] + offset
    rows_img.update({k: v + offset for k, v in recons.items()})
    plot_reconstructions(rows_img, out / "reconstructions.png")
