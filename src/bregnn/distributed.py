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

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from bregnn.train import History, TrainConfig, evaluate, fit

__all__ = [
    "DistContext",
    "all_sum",
    "barrier",
    "cleanup",
    "evaluate_sharded",
    "fit_distributed",
    "init_from_env",
    "init_process",
    "shard",
    "wrap_model",
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


def all_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum each of ``values`` over all ranks (float64 all-reduce)."""
    if ctx.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def evaluate_sharded(
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
    loss_sum, correct, n = all_sum([loss * n_local, acc * n_local, float(n_local)], ctx)
    return loss_sum / max(n, 1.0), correct / max(n, 1.0)


def barrier() -> None:
    """Wait for every rank."""
    dist.barrier()


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Move ``model`` to ``ctx.device`` (``SyncBatchNorm`` on CUDA) and wrap it in
    ``DistributedDataParallel`` when there are several ranks; ``model`` keeps the weights."""
    model.to(ctx.device)
    if ctx.device.type == "cuda" and ctx.world_size > 1:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if ctx.world_size == 1:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


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
    resumed augmented multi-process run is not bit-identical to an uninterrupted one).
    """
    return fit(
        model,
        train,
        config,
        val=val,
        test=test,
        run_dir=run_dir,
        resume=resume,
        train_transform=train_transform,
        eval_transform=eval_transform,
        ctx=ctx,
    )
