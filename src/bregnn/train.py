"""A classification training loop: mini-batch SGD over in-memory tensors.

Features: momentum / Nesterov / weight decay, step learning-rate milestones, early stopping
on validation accuracy (the best weights are restored), a per-batch ``transform`` (e.g. the
batched augmentation of :mod:`bregnn.data`), per-epoch metrics in ``metrics.csv``, an atomic
checkpoint every epoch (``checkpoint.pt``, loadable with ``torch.load(weights_only=True)``)
and ``resume`` that continues bit-for-bit where an interrupted run stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from bregnn.utils import CSVLogger, atomic_save, progress, write_json

if TYPE_CHECKING:
    from bregnn.distributed import DistContext

__all__ = ["History", "TrainConfig", "evaluate", "fit", "load_checkpoint"]

Transform = Callable[[Tensor, torch.Generator], Tensor]


@dataclass
class TrainConfig:
    """Settings of :func:`fit`. ``patience`` (epochs without a better validation accuracy)
    enables early stopping; ``milestones``/``gamma`` multiply the learning rate at those
    epochs; ``clip`` bounds the gradient norm (``None``: off)."""

    lr: float = 0.1
    epochs: int = 100
    batch_size: int = 128
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    milestones: Sequence[int] = field(default_factory=tuple)
    gamma: float = 0.1
    patience: int | None = None
    clip: float | None = None
    seed: int = 0
    progress: bool = True
    desc: str = "train"

    def __post_init__(self) -> None:
        for name in ("lr", "batch_size", "epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}")
        if self.patience is not None and self.patience <= 0:
            raise ValueError(f"patience must be positive or None; got {self.patience}")


@dataclass
class History:
    """Per-epoch metrics and the outcome of :func:`fit`."""

    rows: list[dict[str, float]]
    best_epoch: int
    best_val_accuracy: float
    stopped_early: bool

    def final(self) -> dict[str, float]:
        return self.rows[self.best_epoch - 1] if self.rows else {}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    batch_size: int = 1024,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``(x, y)``, in batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        yb = y[start : start + batch_size].to(device, non_blocking=True)
        if transform is not None:
            xb = transform(xb)
        out = model(xb)
        loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum").item()
        correct += (out.argmax(-1) == yb).sum().item()
    model.train(was_training)
    n = max(len(x), 1)
    return loss_sum / n, correct / n


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`fit` with ``weights_only=True``; clear errors for
    missing or damaged files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise ValueError(f"checkpoint {path} is damaged or not a bregnn checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"checkpoint {path} is not a bregnn training checkpoint")
    return ckpt


def _load_model_state(model: nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} was written for a different model: {err}") from None


def fit(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    config: TrainConfig,
    val: tuple[Tensor, Tensor] | None = None,
    test: tuple[Tensor, Tensor] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    train_transform: Transform | None = None,
    eval_transform: Callable[[Tensor], Tensor] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy,
    ctx: DistContext | None = None,
) -> History:
    """Train ``model`` with mini-batch SGD on in-memory tensors; see the module docstring.

    Each epoch shuffles with a generator seeded from ``config.seed`` (so a resumed run draws
    the same batches), logs ``epoch, lr, train_loss, train_accuracy, val_*, test_*, time``,
    and with ``run_dir`` checkpoints atomically. Early stopping watches validation accuracy
    (training accuracy when no validation set is given). ``loss_fn`` must average over the
    batch.

    With ``ctx`` (a :class:`bregnn.distributed.DistContext`) this is data-parallel training:
    see :mod:`bregnn.distributed` for how global batches are sharded; only rank 0 writes files.
    """
    x_train, y_train = train
    if len(x_train) != len(y_train):
        raise ValueError(f"{len(x_train)} inputs but {len(y_train)} labels")
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    net = model
    if ctx is not None:
        from bregnn import distributed  # deferred: bregnn.distributed builds on this module

        if config.batch_size < world:
            raise ValueError(f"batch_size {config.batch_size} is smaller than world_size {world}")
        net = distributed.wrap_model(model, ctx)
    device = next(model.parameters()).device
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
    aug_generator = torch.Generator(device=device).manual_seed(config.seed + 1 + rank)
    run_path = Path(run_dir) if run_dir is not None else None
    ckpt_path = run_path / "checkpoint.pt" if run_path is not None else None
    start_epoch, rows = 1, []
    best_acc, best_epoch, best_state, bad_epochs = -math.inf, 0, None, 0
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        _load_model_state(model, ckpt["model"], ckpt_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        generator.set_state(ckpt["generator"])
        if world == 1:  # with several ranks the augmentation restarts from its seeds
            aug_generator.set_state(ckpt["aug_generator"].to(aug_generator.get_state().device))
        start_epoch = int(ckpt["epoch"]) + 1
        best_acc, best_epoch = float(ckpt["best_acc"]), int(ckpt["best_epoch"])
        best_state, bad_epochs = ckpt["best_state"], int(ckpt["bad_epochs"])
        rows = [dict(r) for r in ckpt["rows"]]
    logger = None
    if run_path is not None and rank == 0:
        logger = CSVLogger(run_path / "metrics.csv", resume=resume, keep_rows=len(rows))
        write_json(
            {"config": asdict(config), "model": repr(model), "world_size": world},
            run_path / "config.json",
        )

    stopped_early = False
    net.train()
    epochs = progress(
        range(start_epoch, config.epochs + 1),
        desc=config.desc,
        enable=config.progress and rank == 0,
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
            idx = batch if world == 1 else distributed.shard(batch, rank, world)
            xb = x_train[idx].to(device, non_blocking=True)
            yb = y_train[idx].to(device, non_blocking=True)
            if train_transform is not None:
                xb = train_transform(xb, aug_generator)
            out = net(xb)
            loss = loss_fn(out, yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss at epoch {epoch}: {loss.item()}"
                )
            optimizer.zero_grad(set_to_none=True)
            if world == 1:
                loss.backward()
            else:  # DDP averages over ranks: weight each part by its share of the global batch
                (loss * (len(idx) * world / len(batch))).backward()
            if config.clip is not None:
                nn.utils.clip_grad_norm_(params, config.clip)
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(-1) == yb).sum().item()
        if world > 1:
            loss_sum, correct = distributed.all_sum([loss_sum, correct], ctx)
        row = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / n,
            "train_accuracy": correct / n,
        }
        scheduler.step()
        for name, split in (("val", val), ("test", test)):
            if split is None:
                continue
            if world == 1:
                scores = evaluate(model, *split, transform=eval_transform)
            else:
                scores = distributed.evaluate_sharded(model, split, ctx, eval_transform)
            row[f"{name}_loss"], row[f"{name}_accuracy"] = scores
        net.train()
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
        if ckpt_path is not None and rank == 0:
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
                    "world_size": world,
                },
                ckpt_path,
            )
        if world > 1:
            distributed.barrier()
    if config.patience is not None and best_state is not None:
        model.load_state_dict(best_state)
    return History(rows, best_epoch, best_acc, stopped_early)
