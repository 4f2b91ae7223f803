r"""Data-parallel lifted training by model averaging over ``torch.distributed``.

Each of :math:`P` processes (ranks) holds a disjoint shard :math:`D_p` of the training set
and runs any solver on it; every ``sync_every`` local updates the parameters are replaced
by their average over the ranks (the paper's equation 23),

.. math::

    \Theta^{k+1} = \frac1P \sum_{p=1}^{P} \Theta_p^{k+1},
    \qquad \Theta_p^{k+1} = \mathcal S(\Theta^{k}; D_p),

where :math:`\mathcal S` is a number of the solver's updates on the rank's own batches.
Auxiliary variables :math:`X` stay local (they belong to the rank's samples). Averaging is
one ``all_reduce`` (sum) of all parameters flattened into one buffer, divided by :math:`P`.

Processes are started by ``torchrun`` (``init_distributed()`` reads ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` from the environment) or, in tests, by
``torch.multiprocessing.spawn`` with an explicit ``init_method`` (``file://...`` or
``tcp://127.0.0.1:PORT``). The backend is ``gloo`` on CPU and ``nccl`` on CUDA.

A solver is usable here when its state is a ``NamedTuple`` whose parameter fields
(default ``("weights", "biases")``, each a tuple of tensors) hold :math:`\Theta`; see
:func:`theta_of` / :func:`with_theta`.

Example (two processes on one machine)::

    torchrun --nproc_per_node 2 -m bregnn.cli lifted-autoencoder --distributed --backend gloo ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from bregnn.utils import atomic_save

__all__ = [
    "BACKENDS",
    "DistContext",
    "average_parameters",
    "barrier",
    "broadcast_parameters",
    "data_parallel_epoch",
    "destroy_distributed",
    "init_distributed",
    "main_print",
    "save_on_main",
    "shard",
    "shard_indices",
    "theta_of",
    "with_theta",
]

BACKENDS = ("auto", "gloo", "nccl")
THETA_FIELDS = ("weights", "biases")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``; ``initialized`` is false for
    a plain single process (then every collective is the identity)."""

    rank: int = 0
    world_size: int = 1
    backend: str = "none"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 does the logging and checkpointing."""
        return self.rank == 0


def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {list(BACKENDS)}")
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend 'nccl' needs CUDA, which is not available; use 'gloo'")
    return backend


def init_distributed(
    backend: str = "auto",
    init_method: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> DistContext:
    """Join (or create) the process group and return this process's :class:`DistContext`.

    Without ``init_method`` the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ...) is
    used; when it is absent too, this is a single process and no group is created. With
    ``init_method`` (``file://`` or ``tcp://``), ``rank`` and ``world_size`` are required.
    On NCCL each rank uses ``cuda:LOCAL_RANK``.
    """
    if init_method is None and "WORLD_SIZE" not in os.environ:
        if world_size not in (None, 1):
            raise ValueError(
                f"world_size={world_size} needs an init_method or a torchrun environment "
                "(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)"
            )
        return DistContext()
    if init_method is not None and (rank is None or world_size is None):
        raise ValueError(f"init_method {init_method!r} needs rank and world_size")
    if rank is None:
        rank = int(os.environ["RANK"])
    if world_size is None:
        world_size = int(os.environ["WORLD_SIZE"])
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}); got rank={rank}")
    backend = _resolve_backend(backend)
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend, init_method=init_method or "env://", rank=rank, world_size=world_size
        )
    return DistContext(rank, world_size, backend, device, True)


def destroy_distributed(ctx: DistContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if ctx.initialized and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for a single process)."""
    if ctx.initialized:
        dist.barrier()


def shard_indices(n: int, rank: int, world_size: int, equal: bool = True) -> Tensor:
    """Indices ``rank, rank + P, rank + 2P, ...`` of ``range(n)`` for rank ``rank`` of
    ``P = world_size``: the shards are disjoint and cover ``range(n)``. With ``equal`` the
    last ``n mod P`` samples are dropped so that every shard has ``n // P`` samples (equal
    weights in the average are then exact)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size; got rank={rank}, world_size={world_size}")
    if n < world_size:
        raise ValueError(f"cannot shard {n} samples over {world_size} ranks")
    stop = n - n % world_size if equal else n
    return torch.arange(rank, stop, world_size)


def shard(tensors: Sequence[Tensor], ctx: DistContext, equal: bool = True) -> tuple[Tensor, ...]:
    """This rank's shard of in-memory tensors with the same first dimension (one batched
    index each; see :func:`shard_indices`)."""
    if not tensors:
        raise ValueError("shard needs at least one tensor")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"tensors to shard differ in length: {[t.shape[0] for t in tensors]}")
    idx = shard_indices(n, ctx.rank, ctx.world_size, equal)
    return tuple(t[idx.to(t.device)] for t in tensors)


def average_parameters(params: Sequence[Tensor], ctx: DistContext) -> list[Tensor]:
    r""":math:`\frac1P\sum_p \Theta_p` for every tensor in ``params`` (new tensors; the
    inputs are not modified). One ``all_reduce`` over a flat buffer of all of them."""
    params = list(params)
    if not ctx.initialized or ctx.world_size == 1:
        return [p.clone() for p in params]
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    out, start = [], 0
    for p in params:
        out.append(flat[start : start + p.numel()].view_as(p).clone())
        start += p.numel()
    return out


def broadcast_parameters(params: Sequence[Tensor], ctx: DistContext, src: int = 0) -> list[Tensor]:
    """Rank ``src``'s copy of ``params`` on every rank (so all ranks start equal)."""
    params = list(params)
    if not ctx.initialized or ctx.world_size == 1:
        return [p.clone() for p in params]
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    dist.broadcast(flat, src=src)
    out, start = [], 0
    for p in params:
        out.append(flat[start : start + p.numel()].view_as(p).clone())
        start += p.numel()
    return out


def theta_of(state: NamedTuple, fields: Sequence[str] = THETA_FIELDS) -> list[Tensor]:
    """The parameter tensors of a solver state, flattened in field order."""
    out: list[Tensor] = []
    for name in fields:
        if name not in state._fields:
            raise ValueError(
                f"state {type(state).__name__} has no field {name!r}; fields: {state._fields}"
            )
        value = getattr(state, name)
        out.extend(value if isinstance(value, (tuple, list)) else (value,))
    return out


def with_theta(
    state: NamedTuple, theta: Sequence[Tensor], fields: Sequence[str] = THETA_FIELDS
) -> NamedTuple:
    """``state`` with its parameter fields replaced by ``theta`` (inverse of :func:`theta_of`)."""
    theta = list(theta)
    replace: dict[str, Any] = {}
    start = 0
    for name in fields:
        value = getattr(state, name)
        if isinstance(value, (tuple, list)):
            replace[name] = tuple(theta[start : start + len(value)])
            start += len(value)
        else:
            replace[name] = theta[start]
            start += 1
    if start != len(theta):
        raise ValueError(f"got {len(theta)} parameter tensors, the state holds {start}")
    return state._replace(**replace)


def data_parallel_epoch(
    solver: Any,
    state: NamedTuple,
    x0: Tensor,
    y: Tensor,
    generator: torch.Generator,
    ctx: DistContext,
    sync_every: int | None = None,
    fields: Sequence[str] = THETA_FIELDS,
) -> tuple[NamedTuple, int]:
    """One epoch of ``solver`` on this rank's data ``(x0, y)`` with model averaging.

    The rank's batches come from ``solver.batches(n, generator)`` (each rank should use
    its own generator seed; a full-batch solver repeats its one batch
    ``config.inner_iters`` times); after every ``sync_every`` updates (``None``: once, at the end
    of the epoch) the parameters are averaged over the ranks. Every rank must make the same
    number of updates (equal shards guarantee it). Returns the state and the number of
    averaging rounds.
    """
    if sync_every is not None and sync_every < 1:
        raise ValueError(f"sync_every must be a positive integer or None; got {sync_every}")
    batches = list(solver.batches(x0.shape[0], generator))
    if getattr(solver, "full_batch", False):
        batches = batches * int(getattr(solver.config, "inner_iters", 1))
    rounds = 0
    for step, idx in enumerate(batches, start=1):
        state = solver.update(state, x0[idx], y[idx])
        if sync_every is not None and step % sync_every == 0:
            state = with_theta(state, average_parameters(theta_of(state, fields), ctx), fields)
            rounds += 1
    if sync_every is None or len(batches) % sync_every != 0:
        state = with_theta(state, average_parameters(theta_of(state, fields), ctx), fields)
        rounds += 1
    return state, rounds


def main_print(ctx: DistContext, *args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only."""
    if ctx.is_main:
        print(*args, **kwargs)


def save_on_main(
    ctx: DistContext,
    obj: Any,
    path: str | os.PathLike,
    saver: Callable[[Any, Path], None] | None = None,
) -> None:
    """Rank 0 saves ``obj`` atomically (``saver`` defaults to :func:`bregnn.utils.atomic_save`);
    every rank then waits, so no rank reads a checkpoint before it exists."""
    if ctx.is_main:
        (saver or atomic_save)(obj, Path(path))
    barrier(ctx)
