r"""Process groups, sharding and collectives on ``torch.distributed`` (a leaf: torch only).

Start one process per device with ``torchrun`` (gloo on CPU, NCCL on GPU)::

    torchrun --standalone --nproc_per_node 2 -m bregnn image-classify --distributed ...

Each process joins the group with :func:`init_from_env` (or :func:`init_process`) and gets
a :class:`DistContext`; code that runs both ways takes a context, and the default
``DistContext()`` is one process on the CPU, for which every collective here is the
identity (no process group needed).

**Sharding.** :func:`shard` is the one policy: rank ``r`` of ``W`` takes the ``r``-th of
``W`` contiguous parts of a sequence (``torch.tensor_split``: part sizes differ by at most
one). :func:`bregnn.train.fit` applies it to each global batch of a permutation that every
rank draws identically, the batched equivalent of ``DistributedSampler``; the lifted
trainers apply it to the training set.

**Collectives.** :func:`all_sum` adds Python floats over ranks (float64), :func:`average`
averages tensors over ranks with one all-reduce over a flat buffer (model averaging),
:func:`barrier` waits for every rank, and :func:`wrap_model` wraps a model in
``DistributedDataParallel`` (``SyncBatchNorm`` on CUDA).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "BACKENDS",
    "DistContext",
    "all_sum",
    "average",
    "barrier",
    "cleanup",
    "context",
    "init_from_env",
    "init_process",
    "shard",
    "wrap_model",
]

BACKENDS = ("auto", "gloo", "nccl")
"""Valid ``backend`` values: ``auto`` is NCCL for CUDA devices, gloo otherwise."""


class DistContext(NamedTuple):
    """This process's place in the group: ``rank`` of ``world_size``, its ``device``.

    The default, ``DistContext()``, is a single process on the CPU.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes files."""
        return self.rank == 0

    @property
    def initialized(self) -> bool:
        """Whether collectives go through a process group (several ranks, or a group of one
        that has been joined)."""
        return self.world_size > 1 or _group_ready()


def _group_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def context() -> DistContext:
    """The context of the process group this process has joined (``LOCAL_RANK`` from the
    environment, else the rank; device ``cuda:local_rank`` under NCCL, else the CPU), or
    ``DistContext()`` when it has joined none."""
    if not _group_ready():
        return DistContext()
    rank, world_size = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", local_rank) if nccl else torch.device("cpu")
    return DistContext(rank, world_size, local_rank, device)


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ValueError(
            f"environment variable {name} is not set: start distributed runs with torchrun "
            "(e.g. `torchrun --standalone --nproc_per_node 2 -m bregnn ...`)"
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
    """Join a process group as ``rank`` of ``world_size``.

    ``device``: ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``, ``"auto"``; see
    :func:`bregnn.utils.pick_device`); CUDA processes use device ``cuda:local_rank``
    (``local_rank`` defaults to ``rank``; under torchrun it is ``LOCAL_RANK``), made the
    current device. ``backend`` ``None`` or ``"auto"`` is ``nccl`` for CUDA and ``gloo``
    otherwise; ``nccl`` on the CPU is refused (NCCL communicates GPU tensors only).
    """
    from bregnn.utils import pick_device  # bregnn.utils imports torch and bregnn.runs only

    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, world_size={world_size})")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {list(BACKENDS)}")
    local_rank = rank if local_rank is None else local_rank
    dev = pick_device(str(device))
    if dev.type == "cuda":
        dev = pick_device(f"cuda:{local_rank}")
        torch.cuda.set_device(dev)
    if backend in (None, "auto"):
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError(
            "backend 'nccl' needs CUDA devices (NCCL communicates GPU tensors only); "
            "use backend 'gloo' on the CPU, or device 'cuda'"
        )
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, dev)


def init_from_env(device: str = "auto", backend: str | None = None) -> DistContext:
    """Join the group described by torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
    (``MASTER_ADDR``/``MASTER_PORT`` are read by ``env://``); ``device="auto"`` picks CUDA
    when available. On CUDA the process uses GPU ``LOCAL_RANK`` and NCCL (by default)."""
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return init_process(rank, world_size, "env://", backend, device, local_rank)


def cleanup() -> None:
    """Leave the process group (no-op when none was joined).

    Unreachable objects that still hold the group (a finished ``DistributedDataParallel``
    wrapper sits in a reference cycle) are collected first: left to the interpreter's
    exit, their gloo threads abort the process (SIGABRT) after its work is done: 10 of 55
    two-process test runs on a busy two-core machine (load 3-4), none of 32 with the
    collection."""
    if _group_ready():
        gc.collect()
        dist.destroy_process_group()


def barrier(ctx: DistContext | None = None) -> None:
    """Wait for every rank (no-op without a process group)."""
    if not _group_ready():
        return
    if ctx is not None and ctx.device.type == "cuda" and dist.get_backend() == "nccl":
        dist.barrier(device_ids=[ctx.device.index])
    else:
        dist.barrier()


def shard(items: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s contiguous part of ``items`` (``torch.tensor_split`` into
    ``world_size`` parts whose sizes differ by at most one; the first parts are larger).

    >>> [shard(torch.arange(7), r, 3).tolist() for r in range(3)]
    [[0, 1, 2], [3, 4], [5, 6]]
    """
    return torch.tensor_split(items, world_size)[rank]


def all_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Each of ``values`` summed over all ranks (a float64 all-reduce; the identity for one
    process)."""
    if not ctx.initialized:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def average(tensors: Sequence[Tensor], ctx: DistContext) -> list[Tensor]:
    """The mean over ranks of every tensor in ``tensors``, as new tensors (clones for one
    process).

    One all-reduce over a flat buffer per dtype (one in all for the usual all-float32
    parameters); integer tensors get the floor of their mean. The tensors must have the same
    shapes on every rank and live on ``ctx.device``.
    """
    if not ctx.initialized:
        return [t.detach().clone() for t in tensors]
    result: list[Tensor | None] = [None] * len(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for dtype, indices in by_dtype.items():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in indices])
        dist.all_reduce(flat)
        if dtype.is_floating_point or dtype.is_complex:
            flat /= ctx.world_size
        else:
            flat = torch.div(flat, ctx.world_size, rounding_mode="floor")
        offset = 0
        for i in indices:
            n = tensors[i].numel()
            result[i] = flat[offset : offset + n].view_as(tensors[i]).clone()
            offset += n
    return result  # type: ignore[return-value]


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Move ``model`` to ``ctx.device`` (``SyncBatchNorm`` on CUDA) and wrap it in
    ``DistributedDataParallel`` when there are several ranks; ``model`` keeps the weights."""
    model.to(ctx.device)
    if ctx.world_size == 1:
        return model
    if ctx.device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)
