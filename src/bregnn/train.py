r"""A classification training loop: mini-batch SGD over in-memory tensors.

Features: momentum / Nesterov / weight decay, step learning-rate milestones, constrained
weights projected after every optimizer step (every submodule with a ``project_()`` method,
e.g. :class:`~bregnn.nn.BregmanLinear` with ``mixing="projected"``), early stopping
on validation accuracy (the best weights are restored), a per-batch ``transform`` (e.g. the
batched augmentation of :mod:`bregnn.data`), per-epoch metrics in ``metrics.csv``, an atomic
checkpoint every epoch or every ``checkpoint_every`` epochs (``checkpoint.pt``, loadable
with ``torch.load(weights_only=True)``)
and ``resume`` that continues bit-for-bit where an interrupted run stopped.

Data-parallel training (``ctx``, a :class:`bregnn.distributed.DistContext` with several
ranks, started by ``torchrun``): every process holds the whole (in-memory) training set.
All ranks draw the *same* permutation each epoch (one generator seeded from
``config.seed``), cut it into global batches of ``config.batch_size`` as one process
does, and rank ``r`` takes its contiguous part of each global batch
(:func:`bregnn.distributed.shard`). Each rank's loss is

.. math::

    \ell_r = \frac{W}{|B|}\sum_{i \in B_r} \mathrm{CE}(f(x_i), y_i),

and DDP averages gradients over the :math:`W` ranks, so the update uses
:math:`\frac1{|B|}\sum_{i\in B}\nabla\mathrm{CE}_i`: the gradient of the global batch's mean
loss, even when the parts are unequal (the last batch). Without batch normalisation the
parameters follow single-process training step for step (a test checks it); with BN each
rank normalises with its own part's statistics unless the model uses ``SyncBatchNorm``
(converted automatically on CUDA). Only rank 0 writes ``metrics.csv`` and the checkpoint,
in the single-process format (unwrapped ``state_dict``), so ``resume`` works across
single- and multi-process runs. Augmentation draws from a per-rank generator (seed
``config.seed + 1 + rank``); a multi-process resume restarts these generators from their
seeds, so a resumed augmented multi-process run is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from bregnn import runs
from bregnn.distributed import DistContext, all_sum, barrier, shard, wrap_model
from bregnn.runs import CSVLogger, RunError
from bregnn.utils import progress

__all__ = [
    "CHECKPOINT_KIND",
    "History",
    "TrainConfig",
    "evaluate",
    "evaluate_sharded",
    "fit",
    "load_checkpoint",
    "topk_accuracy",
]

CHECKPOINT_KIND = "train"
"""The ``format`` entry of :func:`fit`'s checkpoints (see :func:`bregnn.runs.save_checkpoint`)."""

RESUMABLE = runs.MUTABLE_KEYS | {"desc"}
""":class:`TrainConfig` fields a resumed :func:`fit` may change (``epochs``, ``progress``,
``desc``, ``checkpoint_every``); any other difference from the checkpoint's settings is a
``RunError``."""

Transform = Callable[[Tensor, torch.Generator], Tensor]


@dataclass
class TrainConfig:
    """Settings of :func:`fit`. ``patience`` (epochs without a better validation accuracy)
    enables early stopping; ``milestones``/``gamma`` multiply the learning rate at those
    epochs; ``clip`` bounds the gradient norm (``None``: off). With a ``run_dir``, the
    checkpoint is written every ``checkpoint_every`` epochs and after the last one; it holds
    every epoch's metrics, so on runs of thousands of short epochs writing it each epoch
    costs as much as the training (a resume repeats at most ``checkpoint_every - 1``
    epochs, bit for bit)."""

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
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        for name in ("lr", "batch_size", "epochs", "checkpoint_every"):
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


@torch.no_grad()
def topk_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    ks: Sequence[int] = (1, 2),
    batch_size: int = 1024,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> dict[int, float]:
    """Top-``k`` accuracy for each ``k`` of ``ks``: the fraction of samples whose label is
    among the ``k`` largest outputs (ties broken by ``torch.topk``). Frecon et al. report the
    top-2 accuracy of the CIFAR-10 ResNet20s beside the top-1 (Sec. 5.2.1)."""
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive integers; got {list(ks)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hits = dict.fromkeys((int(k) for k in ks), 0)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        yb = y[start : start + batch_size].to(device, non_blocking=True)
        if transform is not None:
            xb = transform(xb)
        out = model(xb)
        k_max = min(max(hits), out.shape[-1])
        ranked = out.topk(k_max, dim=-1).indices == yb.reshape(-1, 1)
        for k in hits:
            hits[k] += int(ranked[:, :k].any(-1).sum())
    model.train(was_training)
    n = max(len(x), 1)
    return {k: count / n for k, count in hits.items()}


@torch.no_grad()
def evaluate_sharded(
    model: nn.Module,
    split: tuple[Tensor, Tensor],
    ctx: DistContext,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[float, float]:
    """Global mean loss and accuracy over ``split``; each rank evaluates its
    :func:`~bregnn.distributed.shard` of it (one process: :func:`evaluate`)."""
    x, y = split
    idx = shard(torch.arange(len(x)), ctx.rank, ctx.world_size)
    n_local = len(idx)
    loss, acc = evaluate(model, x[idx], y[idx], transform=transform) if n_local else (0.0, 0.0)
    loss_sum, correct, n = all_sum([loss * n_local, acc * n_local, float(n_local)], ctx)
    return loss_sum / max(n, 1.0), correct / max(n, 1.0)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by :func:`fit` (``torch.load(weights_only=True)``);
    :class:`~bregnn.runs.RunError` for a missing, damaged or foreign file."""
    return runs.load_checkpoint(path, kind=CHECKPOINT_KIND)


def _load_model_state(model: nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        reason = runs._first_line(err)
        raise RunError(
            f"checkpoint {path} was written for a different model ({reason}); "
            "start a new run with another --out, or --overwrite"
        ) from None


def _check_finite(name: str, x: Tensor) -> None:
    if x.is_floating_point() or x.is_complex():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(
                f"{name} inputs contain {bad} non-finite values (NaN or inf): "
                "a data problem; fix the data before training"
            )


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
    the same batches), logs ``epoch, lr, train_loss, train_accuracy, val_*, test_*, time``
    (seconds), and with ``run_dir`` appends the row to ``metrics.csv`` and checkpoints
    atomically (every ``config.checkpoint_every`` epochs and after the last; a resume
    restarts from the checkpoint and rewrites ``metrics.csv`` to its epochs). Early
    stopping watches validation accuracy (training accuracy when no validation set is
    given). ``loss_fn`` must average over the batch. After every
    optimizer step, ``project_()`` of every submodule that has one is called (the
    ``projected`` mixing matrices of :class:`~bregnn.nn.BregmanLinear`; see
    :func:`bregnn.nn.project_constraints_`).

    ``run_dir`` must not hold another run's ``metrics.csv`` or ``checkpoint.pt`` unless
    ``resume`` is true (prepare it with :func:`bregnn.runs.prepare_run`); ``resume``
    continues from its checkpoint (if any) and refuses one whose settings differ from
    ``config`` in anything but ``epochs``, ``progress`` and ``desc``.

    With ``ctx`` (a :class:`bregnn.distributed.DistContext`) this is data-parallel training:
    see the module docstring; every rank calls it with the same arguments and only rank 0
    writes files. ``model`` itself holds the trained weights afterwards.

    Raises:
        ValueError: mismatched lengths, non-finite inputs, a batch smaller than the world.
        RunError: ``run_dir`` holds a run and ``resume`` is false; an unreadable checkpoint,
            or one written with other settings or for another model.
        FloatingPointError: the training loss became NaN or infinite (lower the lr).
    """
    x_train, y_train = train
    projectors = [m for m in model.modules() if callable(getattr(m, "project_", None))]
    if len(x_train) != len(y_train):
        raise ValueError(f"{len(x_train)} inputs but {len(y_train)} labels")
    for name, split in (("training", train), ("validation", val), ("test", test)):
        if split is not None:
            _check_finite(name, split[0])
    ctx = ctx if ctx is not None else DistContext()
    rank, world = ctx.rank, ctx.world_size
    if config.batch_size < world:
        raise ValueError(f"batch_size {config.batch_size} is smaller than world_size {world}")
    net = wrap_model(model, ctx) if world > 1 else model
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
    settings = asdict(config)
    if run_path is not None and not resume and ctx.is_main:
        if ckpt_path.exists() or (run_path / "metrics.csv").exists():
            raise RunError(
                f"run directory {run_path} already holds a run; "
                "pass --resume to continue it or --overwrite to replace it"
            )
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        differences = runs.config_differences(ckpt.get("config", {}), settings, RESUMABLE)
        if differences:
            raise RunError(
                f"cannot resume {ckpt_path}: settings differ from the saved run: "
                f"{'; '.join(differences)} (start a new run with another --out, or --overwrite)"
            )
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
    if run_path is not None and ctx.is_main:
        logger = CSVLogger(run_path / "metrics.csv", rows=rows)

    stopped_early = False
    net.train()
    epochs = progress(
        range(start_epoch, config.epochs + 1),
        total=config.epochs,
        desc=config.desc,
        enable=config.progress and ctx.is_main,
        initial=start_epoch - 1,
    )
    n = len(x_train)

    def patience_spent() -> bool:
        return config.patience is not None and bad_epochs >= config.patience

    for epoch in epochs:
        if patience_spent():
            stopped_early = True
            break
        tic = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        loss_sum, correct = 0.0, 0.0
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            idx = shard(batch, rank, world)
            xb = x_train[idx].to(device, non_blocking=True)
            yb = y_train[idx].to(device, non_blocking=True)
            if train_transform is not None:
                xb = train_transform(xb, aug_generator)
            out = net(xb)
            loss = loss_fn(out, yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch}: the loss is {loss.item()} "
                    f"(SGD, lr {optimizer.param_groups[0]['lr']:g}); lower the learning rate "
                    "(--lr)"
                )
            optimizer.zero_grad(set_to_none=True)
            if world == 1:
                loss.backward()
            else:  # DDP averages over ranks: weight each part by its share of the global batch
                (loss * (len(idx) * world / len(batch))).backward()
            if config.clip is not None:
                nn.utils.clip_grad_norm_(params, config.clip)
            optimizer.step()
            for module in projectors:  # e.g. M of BregmanLinear(mixing="projected")
                module.project_()
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(-1) == yb).sum().item()
        if world > 1:
            loss_sum, correct = all_sum([loss_sum, correct], ctx)
        row = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / n,
            "train_accuracy": correct / n,
        }
        scheduler.step()
        for name, split in (("val", val), ("test", test)):
            if split is not None:
                scores = evaluate_sharded(model, split, ctx, eval_transform)
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
        epochs.set_postfix_str(_epoch_text(row))
        last = epoch == config.epochs or patience_spent()
        if ckpt_path is not None and ctx.is_main and (last or epoch % config.checkpoint_every == 0):
            runs.save_checkpoint(
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
                    "config": runs.jsonable(settings),
                },
                ckpt_path,
                kind=CHECKPOINT_KIND,
            )
        barrier(ctx)
    if config.patience is not None and best_state is not None:
        model.load_state_dict(best_state)
    return History(rows, best_epoch, best_acc, stopped_early)


def _epoch_text(row: dict[str, float]) -> str:
    """The per-epoch progress text: losses, accuracies and seconds of ``row``."""
    parts = [f"loss {row['train_loss']:.4f}", f"acc {row['train_accuracy']:.3f}"]
    for name in ("val", "test"):
        if f"{name}_accuracy" in row:
            parts.append(f"{name}_acc {row[f'{name}_accuracy']:.3f}")
    parts.append(f"{row['time']:.2f}s")
    return " ".join(parts)
