r"""The solver contract shared by every lifted solver and backprop baseline.

A solver class has

- ``name``: its registry name; ``full_batch``: whether one :meth:`update` sees all data;
- ``Config``: a dataclass of settings, validated in ``__post_init__`` (``ValueError`` naming
  the bad value); ``State``: a ``NamedTuple`` whose fields are tensors or tuples of tensors
  (so a state is checkpointed with ``torch.save`` and loaded with ``weights_only=True``);
- ``init_state(params, x0, y) -> State``; ``update(state, x0, y) -> State`` (one outer step
  on a mini-batch, or on the full data for full-batch solvers), a pure function of its
  inputs; ``epoch(state, x0, y, generator)``; ``run(state, x0, y, epochs, generator)``;
- ``params(state) -> Params``; ``objective(state, x0, y)`` (the quantity the solver
  decreases, per sample); ``metric_names()`` naming the entries of ``state.metrics``
  (per-sample averages of the last update).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from bregnn.lifted.network import LiftedNetwork, Params
from bregnn.lifted.penalties import Penalty, penalty

__all__ = [
    "Solver",
    "check_positive",
    "config_from",
    "power_step",
    "power_step_augmented",
    "state_from_dict",
    "state_to_dict",
]


def check_positive(name: str, value: float, *, integer: bool = False, upper: float | None = None):
    """``ValueError`` naming ``name`` unless ``0 < value (< upper)``."""
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if not value > 0 or (upper is not None and not value < upper):
        bound = f" and < {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be > 0{bound}; got {value!r}")


def power_step(w: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    r"""One warm-started power iteration for :math:`|W|_2^2`: returns
    :math:`|W^\top W v|` (for unit ``v``, a lower bound on :math:`|W|_2^2` at least the
    Rayleigh quotient :math:`|Wv|^2`) and the next unit vector."""
    u = w.T @ (w @ v)
    norm = u.norm()
    safe = norm.clamp(min=torch.finfo(w.dtype).tiny)
    return norm, torch.where(norm > 0, u / safe, v)


def power_step_augmented(x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    r"""Power step for :math:`|[X, \mathbf 1]|_2^2` (rows are samples) without forming the
    augmented matrix; the estimate is clamped below by :math:`m = |\mathbf 1|^2`, a true
    lower bound of the squared norm."""
    u = torch.addmv(v[-1:].expand(x.shape[0]), x, v[:-1])
    nxt = torch.cat([x.T @ u, u.sum().reshape(1)])
    norm = nxt.norm()
    safe = norm.clamp(min=torch.finfo(x.dtype).tiny)
    return norm.clamp(min=float(x.shape[0])), torch.where(norm > 0, nxt / safe, v)


def config_from(config_cls: type, values: Mapping[str, Any]) -> Any:
    """Build ``config_cls`` from the entries of ``values`` that name one of its fields."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in values.items() if k in names and v is not None})


def state_to_dict(state: NamedTuple) -> dict[str, Any]:
    """A ``weights_only``-loadable dict of a state (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in state._asdict().items()}


def state_from_dict(state_cls: type, data: Mapping[str, Any]) -> Any:
    """Inverse of :func:`state_to_dict`."""
    return state_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class Solver:
    """Base class (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    full_batch: ClassVar[bool] = False
    penalty_name: ClassVar[str] = "bregman"
    Config: ClassVar[type]
    State: ClassVar[type]

    def __init__(self, network: LiftedNetwork, config: Any | None = None) -> None:
        self.network = network
        self.config = self.Config() if config is None else config
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{self.name}: config must be {self.Config.__name__}")
        self.penalty: Penalty = penalty(self.penalty_name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    # -- to implement ----------------------------------------------------------------------
    def init_state(self, params: Params, x0: Tensor, y: Tensor) -> NamedTuple:
        raise NotImplementedError

    def update(self, state: NamedTuple, x0: Tensor, y: Tensor) -> NamedTuple:
        raise NotImplementedError

    def objective(self, state: NamedTuple, x0: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def metric_names(self) -> list[str]:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def params(self, state: NamedTuple) -> Params:
        return Params(tuple(state.weights), tuple(state.biases))

    def batches(self, n: int, generator: torch.Generator) -> list[Tensor]:
        """Index sets of one epoch: a fresh permutation cut into ``batch_size`` pieces
        (the last one may be smaller); the full range for full-batch solvers."""
        if self.full_batch:
            return [torch.arange(n)]
        perm = torch.randperm(n, generator=generator)
        return list(perm.split(self.config.batch_size))

    def epoch(
        self, state: NamedTuple, x0: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[NamedTuple, dict[str, float]]:
        """One pass over the data; returns the state and the sample-weighted mean metrics."""
        self.network.check_data(x0, y)
        names = self.metric_names()
        total = torch.zeros(len(names), dtype=torch.float64)
        count = 0
        if self.full_batch:
            for _ in range(self.config.inner_iters):
                state = self.update(state, x0, y)
            total += state.metrics.double() * x0.shape[0]
            count = x0.shape[0]
        else:
            for idx in self.batches(x0.shape[0], generator):
                state = self.update(state, x0[idx], y[idx])
                total += state.metrics.double() * idx.numel()
                count += idx.numel()
        return state, dict(zip(names, (total / max(count, 1)).tolist(), strict=True))

    def run(
        self, state: NamedTuple, x0: Tensor, y: Tensor, epochs: int, generator: torch.Generator
    ) -> NamedTuple:
        """``epochs`` calls of :meth:`epoch`."""
        check_positive("epochs", epochs, integer=True)
        for _ in range(epochs):
            state, _ = self.epoch(state, x0, y, generator)
        return state
