"""``bregnn lifted-autoencoder``: sparse (denoising) autoencoders by lifted Bregman training
and backprop baselines (Wang & Benning, equations 26 and 27).

One invocation trains one or more methods on the same data and initialisation. Each run
(``OUT/<method>`` or ``OUT/<method>-lr<lr>`` for a learning-rate grid) writes
``metrics.csv`` (one row per epoch: training objective, reconstruction loss, MSE and code
sparsity on the training and validation sets), ``checkpoint.pt`` (atomic, every epoch;
``--resume`` continues from it) and ``final.json``; ``OUT`` gets ``config.json``,
``summary.json`` (the best learning rate of each backprop method), ``curves.png`` and
``reconstructions.png`` (original / noisy / reconstructed validation images).

Data-parallel training (model averaging, equation 23): ``--distributed`` under
``torchrun --nproc_per_node P -m bregnn.cli lifted-autoencoder --distributed ...``; each
rank trains on its shard and the parameters are averaged every ``--sync-every`` batches;
rank 0 evaluates on all the data, logs, checkpoints and draws the figures.

Methods: ``gd-bp``, ``sgd-bp``, ``isgd-bp`` (backprop on the whole objective), ``undercomplete``
(``sgd-bp`` on a ``784-W-70-W-784`` network without sparsity term) and every lifted solver of
the registry (``lbn-s``, ``lbn-d``, ``bcd``, ``admm``, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from bregnn.lifted.autoencoder import (
    AE_DATASETS,
    BP_SOLVERS,
    AEData,
    autoencoder_data,
    evaluate_autoencoder,
    plot_curves,
    plot_reconstructions,
    sparse_autoencoder,
    undercomplete_autoencoder,
)
from bregnn.lifted.distributed import (
    DistContext,
    barrier,
    data_parallel_epoch,
    destroy_distributed,
    init_distributed,
    shard,
)
from bregnn.lifted.network import LiftedNetwork
from bregnn.lifted.solvers import SOLVERS, config_from, state_from_dict, state_to_dict
from bregnn.utils import (
    CSVLogger,
    atomic_save,
    default_data_dir,
    progress,
    seed_everything,
    write_json,
)

__all__ = ["HELP", "METHODS", "NAME", "add_arguments", "run", "train_method"]

NAME = "lifted-autoencoder"
HELP = "Sparse (denoising) autoencoders: lifted Bregman training vs backprop (Wang & Benning)."

UNDERCOMPLETE = "undercomplete"
SETTINGS = ("batch_size", "inner_iters", "tau", "lr", "step_scale", "momentum", "acceleration")


def _lifted_methods() -> list[str]:
    return [name for name in SOLVERS if name not in BP_SOLVERS]


METHODS = (*BP_SOLVERS, UNDERCOMPLETE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="mnist", help=f"one of {list(AE_DATASETS)}")
    parser.add_argument("--train-size", type=int, default=1000, help="training images (seeded)")
    parser.add_argument(
        "--val-size", type=int, default=None, help="validation images (default: all the rest)"
    )
    parser.add_argument(
        "--method",
        nargs="+",
        default=["lbn-s"],
        help=f"one or more of {[*_lifted_methods(), *METHODS]}",
    )
    parser.add_argument("--alpha", type=float, default=0.1, help="weight of |code|_1")
    parser.add_argument(
        "--threshold", type=float, default=None, help="soft-threshold of the code (default alpha)"
    )
    parser.add_argument("--denoise", type=float, default=0.0, help="input noise std (0: off)")
    parser.add_argument("--width", type=int, default=784, help="hidden width")
    parser.add_argument("--code", type=int, default=70, help="code size of 'undercomplete'")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--inner-iters", type=int, default=15, help="N")
    parser.add_argument("--tau", type=float, default=1.0, help="tau_k of LBN-S / ISGD-BP")
    parser.add_argument(
        "--lr",
        type=float,
        nargs="+",
        default=None,
        help="backprop learning rate(s); several values: a grid, the best is reported",
    )
    parser.add_argument("--step-scale", type=float, default=None, help="lifted step scale")
    parser.add_argument("--momentum", type=float, default=None)
    parser.add_argument("--acceleration", default=None, help="lbn-d: none|nesterov|heavy-ball")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $BREGNN_DATA")
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoints")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel model averaging (start with torchrun; rank 0 logs and saves)",
    )
    parser.add_argument(
        "--sync-every", type=int, default=1, help="--distributed: batches between averages"
    )
    parser.add_argument("--backend", default="auto", help="--distributed: auto|gloo|nccl")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--no-progress", action="store_true")


def _validate(args: argparse.Namespace) -> None:
    valid = [*_lifted_methods(), *METHODS]
    for method in args.method:
        if method not in valid:
            raise ValueError(f"unknown method {method!r}; valid methods: {valid}")
    if len(set(args.method)) != len(args.method):
        raise ValueError(f"--method lists a method twice: {args.method}")
    if args.dataset not in AE_DATASETS:
        raise ValueError(f"unknown dataset {args.dataset!r}; valid datasets: {list(AE_DATASETS)}")
    for name in ("epochs", "batch_size", "inner_iters", "train_size", "width", "code"):
        value = getattr(args, name)
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer; got {value}")
    for name in ("tau", "step_scale"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive; got {value}")
    if args.lr is not None and not all(lr > 0 for lr in args.lr):
        raise ValueError(f"--lr values must be positive; got {args.lr}")
    if not args.alpha >= 0:
        raise ValueError(f"--alpha must be >= 0; got {args.alpha}")
    if not args.denoise >= 0:
        raise ValueError(f"--denoise (noise std) must be >= 0; got {args.denoise}")
    if args.distributed and args.resume:
        raise ValueError("--resume is not supported with --distributed (per-rank batch order)")
    if not args.sync_every >= 1:
        raise ValueError(f"--sync-every must be a positive integer; got {args.sync_every}")


def _network(method: str, args: argparse.Namespace, dim: int) -> tuple[LiftedNetwork, int]:
    """The network of ``method`` and its code layer (1-based hidden index)."""
    if method == UNDERCOMPLETE:
        return undercomplete_autoencoder(dim, args.width, args.code), 2
    return sparse_autoencoder(args.alpha, dim, args.width, threshold=args.threshold), 3


def _solver(method: str, network: LiftedNetwork, settings: dict):
    cls = BP_SOLVERS["sgd-bp"] if method == UNDERCOMPLETE else BP_SOLVERS.get(method)
    if cls is None:
        cls = SOLVERS[method]
    return cls(network, config_from(cls.Config, settings))


def train_method(
    method: str,
    run_name: str,
    data: AEData,
    args: argparse.Namespace,
    settings: dict,
    out: Path,
    ctx: DistContext | None = None,
) -> tuple[list[dict], dict]:
    """Train one run; returns its per-epoch rows and its reconstructions of the first
    validation images (``{"recon": tensor}``). With a distributed ``ctx`` every rank trains
    on its shard with model averaging (:func:`~bregnn.lifted.distributed.data_parallel_epoch`)
    and rank 0 evaluates on all the data, logs and checkpoints."""
    ctx = ctx or DistContext()
    network, code_layer = _network(method, args, data.train_input.shape[1])
    solver = _solver(method, network, settings)
    run_dir = out / run_name
    generator = seed_everything(args.seed + ctx.rank)
    x_fit, y_fit = data.train_input, data.train_target
    if ctx.initialized:
        x_fit, y_fit = shard([x_fit, y_fit], ctx)
    ckpt_path = run_dir / "checkpoint.pt"
    start = 0
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        state = state_from_dict(solver.State, ckpt["state"])
        generator.set_state(ckpt["generator"])
        start = int(ckpt["epoch"])
    else:
        params = network.init_params(torch.Generator().manual_seed(args.seed))
        state = solver.init_state(params, x_fit, y_fit)
    main = ctx.is_main
    logger = (
        CSVLogger(run_dir / "metrics.csv", resume=args.resume, keep_rows=start) if main else None
    )
    rows: list[dict] = []
    if start > 0:
        rows = _read_rows(run_dir / "metrics.csv")
    enable = main and not args.no_progress
    bar = progress(range(start, args.epochs), desc=run_name, enable=enable)
    for epoch in bar:
        tic = time.perf_counter()
        if ctx.initialized:
            state, _ = data_parallel_epoch(
                solver, state, x_fit, y_fit, generator, ctx, sync_every=args.sync_every
            )
            metrics = dict(zip(solver.metric_names(), state.metrics.tolist(), strict=True))
        else:
            state, metrics = solver.epoch(state, x_fit, y_fit, generator)
        elapsed = time.perf_counter() - tic
        if not main:
            continue
        params = solver.params(state)
        train = evaluate_autoencoder(
            network, params, data.train_input, data.train_target, code_layer
        )
        val = evaluate_autoencoder(network, params, data.val_input, data.val_target, code_layer)
        row = {"epoch": epoch + 1}
        row.update({f"train_{k}": v for k, v in train.items()})
        row.update({f"val_{k}": v for k, v in val.items()})
        row.update({f"batch_{k}": v for k, v in metrics.items()})
        row["epoch_time_s"] = elapsed
        logger.log(row)  # type: ignore[union-attr]
        rows.append(row)
        atomic_save(
            {
                "epoch": epoch + 1,
                "method": method,
                "state": state_to_dict(state),
                "generator": generator.get_state(),
            },
            ckpt_path,
        )
        bar.set_postfix_str(
            f"obj {train['objective']:.4g} val {val['loss']:.4g} sparse {train['sparsity']:.1f}%"
        )
        if not math.isfinite(train["objective"]):
            print(f"{run_name}: objective is not finite at epoch {epoch + 1}; stopping this run")
            break
    params = solver.params(state)
    with torch.no_grad():
        _, recon = network.forward(params, data.val_input[:8])
    if not main:
        return rows, {"recon": recon}
    atomic_save(recon, run_dir / "recon.pt")
    if rows:
        write_json({**rows[-1], "method": method, "solver": repr(solver)}, run_dir / "final.json")
    return rows, {"recon": recon}


def _read_rows(path: Path) -> list[dict]:
    import csv

    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


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
        histories[label] = _read_rows(run_dir / "metrics.csv")
        if (run_dir / "recon.pt").exists():
            recons[label] = torch.load(run_dir / "recon.pt", weights_only=True)
    title = f"{args.dataset}-{args.train_size}, alpha {args.alpha:g}" + (
        f", noise std {args.denoise:g}" if args.denoise > 0 else ""
    )
    plot_curves(
        histories, out / "curves.png", ("train_objective", "val_loss", "train_sparsity"), title
    )
    rows_img = {"original": data.val_target[:8]}
    if args.denoise > 0:
        rows_img["noisy"] = data.val_input[:8]
    rows_img.update(recons)
    plot_reconstructions(rows_img, out / "reconstructions.png")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = init_distributed(args.backend) if args.distributed else DistContext()
    try:
        return _run(args, ctx)
    finally:
        destroy_distributed(ctx)


def _run(args: argparse.Namespace, ctx: DistContext) -> int:
    out = args.out or Path("runs") / NAME / f"{args.dataset}-{args.train_size}-seed{args.seed}"
    data = autoencoder_data(
        args.dataset,
        args.train_size,
        args.data_dir or default_data_dir(),
        args.seed,
        args.val_size,
        args.denoise,
    )
    main = ctx.is_main
    if main:
        write_json(
            {
                **{k: v for k, v in vars(args).items() if k != "resume" and not k.startswith("_")},
                "train_samples": int(data.train_input.shape[0]),
                "val_samples": int(data.val_input.shape[0]),
                "torch_threads": torch.get_num_threads(),
                "world_size": ctx.world_size,
            },
            out / "config.json",
        )
    summary_path = out / "summary.json"
    summary: dict[str, dict] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for method in args.method:
        is_bp = method in BP_SOLVERS or method == UNDERCOMPLETE
        grid = args.lr if (is_bp and args.lr) else [None]
        best = None
        for lr in grid:
            settings = {k: getattr(args, k) for k in SETTINGS if k != "lr"}
            run_name = method
            if lr is not None:
                settings["lr"] = lr
                run_name = f"{method}-lr{lr:g}" if len(grid) > 1 else method
            rows, extra = train_method(method, run_name, data, args, settings, out, ctx)
            final = rows[-1]["train_objective"] if rows else math.inf
            if best is None or final < best[0] or not math.isfinite(best[0]):
                best = (final, lr, run_name, rows, extra["recon"])
        final, lr, run_name, rows, recon = best
        if not main:
            continue
        label = method if lr is None else f"{method} (lr {lr:g})"
        summary[method] = {"run": run_name, "lr": lr, **(rows[-1] if rows else {})}
        write_json(summary, summary_path)
        if rows:
            last = rows[-1]
            print(
                f"{label}: epochs {int(last['epoch'])}, train objective "
                f"{last['train_objective']:.5g}, val loss {last['val_loss']:.5g}, "
                f"code sparsity {last['train_sparsity']:.2f}%"
            )
    if main and not args.no_figures:
        make_figures(out, data, args)
    barrier(ctx)
    return 0
