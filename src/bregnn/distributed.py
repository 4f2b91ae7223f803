r"""Multi-process data-parallel training with ``torch.distributed`` and DDP.

Start one process per device with ``torchrun`` (gloo on CPU, NCCL on GPU)::

    torchrun --standalone --nproc_per_node 2 -m bregnn.cli image-classify --distributed ...

Every process holds the whole (in-memory) training set. All ranks draw the *same* permutation
each epoch (one generator seeded from ``config.seed``), cut it into global batches of
``config.batch_size`` exactly as :func:`bregnn.train.fit` does, and rank ``r`` takes the
``r``-th of ``world_size`` contiguous parts of each global batch (:func:`shard`; the batched
equivalent of ``DistributedSampler``). Each rank's loss is

.. math::

    \ell_r = \frac{W}{|B|}\sum_{i \in B_r} \mathrm{CE}(f(x_i), y_i),

and DDP averages gradients over the :math:`W` ranks, so the update uses
:math:`\frac1{|B|}\sum_{i\in B}\nabla\mathrm{CE}_i`: the gradient of the global batch's mean
loss, even when the parts are unequal (the last batch). Without batch normalisation the
parameters therefore follow single-process :func:`~bregnn.train.fit` step for step (a test
checks it); with BN each rank normalises with its own part's statistics unless the model
uses ``SyncBatchNorm`` (converted automatically on CUDA).

Only rank 0 writes ``metrics.csv``, ``config.json`` and the checkpoint, in the format of
:func:`~bregnn.train.fit` (unwrapped ``state_dict``), so :func:`~bregnn.train.load_checkpoint`
and ``resume`` work across single- and multi-process runs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from bregnn.train import History, TrainConfig, _load_model_state, evaluate, load_checkpoint
from bregnn.utils import CSVLogger, atomic_save, progress, write_json

__all__ = [
    "DistContext",
    "cleanup",
    "fit_distributed",
    "init_from_env",
    "init_process",
    "shard",
]


class DistContext(NamedTuple):
    """This process's place in the group: ``rank`` of ``world_size``, its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes files."""
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ValueError(
            f"environment variable {name} is not set: start distributed runs with torchrun "
            "(e.g. `torchrun --standalone --nproc_per_node 2 -m bregnn.cli ...`)"
        )
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_process(
    rank: int,
    world_size: int,
    init_method: str = "env://",
    backend: str | None = None,
    device: str | torch.device = "cpu",
    local_rank: int | None = None,
) -> DistContext:
    """Join a process group: ``backend`` defaults to ``nccl`` for CUDA, ``gloo`` otherwise;
    CUDA processes use device ``cuda:local_rank``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, world_size={world_size})")
    local_rank = rank if local_rank is None else local_rank
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"unknown backend {backend!r}; valid backends: ['gloo', 'nccl']")
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, dev)


def init_from_env(device: str = "auto", backend: str | None = None) -> DistContext:
    """Join the group described by torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
    (``MASTER_ADDR``/``MASTER_PORT`` are read by ``env://``); ``auto`` picks CUDA when
    available."""
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return init_process(rank, world_size, "env://", backend, device, local_rank)


def cleanup() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s contiguous part of ``batch`` (``torch.tensor_split`` into
    ``world_size`` parts whose sizes differ by at most one)."""
    return torch.tensor_split(batch, world_size)[rank]


def _all_sum(values: list[float], ctx: DistContext) -> list[float]:
    if ctx.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def _evaluate_sharded(
    model: nn.Module,
    split: tuple[Tensor, Tensor],
    ctx: DistContext,
    transform: Callable[[Tensor], Tensor] | None,
) -> tuple[float, float]:
    """Global mean loss and accuracy; each rank evaluates its part of the split."""
    x, y = split
    idx = shard(torch.arange(len(x)), ctx.rank, ctx.world_size)
    n_local = len(idx)
    if n_local:
        loss, acc = evaluate(model, x[idx], y[idx], transform=transform)
    else:
        loss, acc = 0.0, 0.0
    loss_sum, correct, n = _all_sum([loss * n_local, acc * n_local, float(n_local)], ctx)
    return loss_sum / max(n, 1.0), correct / max(n, 1.0)


def _barrier(ctx: DistContext) -> None:
    if ctx.world_size > 1:
        dist.barrier()


def fit_distributed(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    config: TrainConfig,
    ctx: DistContext,
    val: tuple[Tensor, Tensor] | None = None,
    test: tuple[Tensor, Tensor] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    train_transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    eval_transform: Callable[[Tensor], Tensor] | None = None,
) -> History:
    """Data-parallel :func:`bregnn.train.fit` (cross-entropy loss); see the module docstring.

    ``model`` is moved to ``ctx.device`` and wrapped in ``DistributedDataParallel`` (when
    ``ctx.world_size > 1``); ``model`` itself holds the trained weights afterwards. Every rank
    must call this with the same arguments. Augmentation draws from a per-rank generator
    (seed ``config.seed + 1 + rank``); ``resume`` restores weights, optimizer, schedule and
    the batch order, but restarts these augmentation generators from their seeds (so a
    resumed augmented run is not bit-identical to an uninterrupted one).
    """
    x_train, y_train = train
    if len(x_train) != len(y_train):
        raise ValueError(f"{len(x_train)} inputs but {len(y_train)} labels")
    if config.batch_size < ctx.world_size:
        raise ValueError(
            f"batch_size {config.batch_size} is smaller than world_size {ctx.world_size}"
        )
    model.to(ctx.device)
    if ctx.device.type == "cuda" and ctx.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    wrapped: nn.Module = model
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(config.milestones), gamma=config.gamma
    )
    generator = torch.Generator().manual_seed(config.seed)
    aug_generator = torch.Generator(device=ctx.device).manual_seed(config.seed + 1 + ctx.rank)
    run_path = Path(run_dir) if run_dir is not None else None
    start_epoch, rows = 1, []
    best_acc, best_epoch, best_state, bad_epochs = -math.inf, 0, None, 0
    ckpt_path = run_path / "checkpoint.pt" if run_path is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        _load_model_state(model, ckpt["model"], ckpt_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        generator.set_state(ckpt["generator"])
        start_epoch = int(ckpt["epoch"]) + 1
        best_acc, best_epoch = float(ckpt["best_acc"]), int(ckpt["best_epoch"])
        best_state, bad_epochs = ckpt["best_state"], int(ckpt["bad_epochs"])
        rows = [dict(r) for r in ckpt["rows"]]
    logger = None
    if run_path is not None and ctx.is_main:
        logger = CSVLogger(run_path / "metrics.csv", resume=resume, keep_rows=len(rows))
        write_json(
            {"config": asdict(config), "model": repr(model), "world_size": ctx.world_size},
            run_path / "config.json",
        )
    stopped_early = False
    wrapped.train()
    epochs = progress(
        range(start_epoch, config.epochs + 1),
        desc=config.desc,
        enable=config.progress and ctx.is_main,
    )
    n = len(x_train)
    for epoch in epochs:
        if config.patience is not None and bad_epochs >= config.patience:
            stopped_early = True
            break
        tic = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        loss_sum, correct = 0.0, 0.0
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            idx = shard(batch, ctx.rank, ctx.world_size)
            xb = x_train[idx].to(ctx.device, non_blocking=True)
            yb = y_train[idx].to(ctx.device, non_blocking=True)
            if train_transform is not None:
                xb = train_transform(xb, aug_generator)
            out = wrapped(xb)
            loss_local = nn.functional.cross_entropy(out, yb, reduction="sum")
            loss = loss_local * (ctx.world_size / len(batch))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip is not None:
                nn.utils.clip_grad_norm_(params, config.clip)
            optimizer.step()
            loss_sum += loss_local.item()
            correct += (out.argmax(-1) == yb).sum().item()
        loss_sum, correct = _all_sum([loss_sum, correct], ctx)
        row = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / n,
            "train_accuracy": correct / n,
        }
        scheduler.step()
        for name, split in (("val", val), ("test", test)):
            if split is not None:
                row[f"{name}_loss"], row[f"{name}_accuracy"] = _evaluate_sharded(
                    model, split, ctx, eval_transform
                )
        wrapped.train()
        row["time"] = time.perf_counter() - tic
        watched = row.get("val_accuracy", row["train_accuracy"])
        if watched > best_acc:
            best_acc, best_epoch, bad_epochs = watched, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        rows.append(row)
        if logger is not None:
            logger.log(row)
        if hasattr(epochs, "set_postfix_str"):
            epochs.set_postfix_str(f"loss {row['train_loss']:.4f} acc {watched:.3f}")
        if ckpt_path is not None and ctx.is_main:
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "aug_generator": aug_generator.get_state(),
                    "epoch": epoch,
                    "best_acc": best_acc,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                    "bad_epochs": bad_epochs,
                    "rows": rows,
                    "world_size": ctx.world_size,
                },
                ckpt_path,
            )
        _barrier(ctx)
    if config.patience is not None and best_state is not None:
        model.load_state_dict(best_state)
    return History(rows, best_epoch, best_acc, stopped_early)
