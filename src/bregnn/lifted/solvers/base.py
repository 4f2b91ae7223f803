r"""The solver contract shared by every lifted solver and backprop baseline.

A solver class has

- ``full_batch``: whether one :meth:`update` sees all data;
- ``Config``: a settings dataclass made with :func:`solver_config`: an unknown setting raises
  ``ValueError`` naming it and listing the valid ones, a bad value raises ``ValueError``
  naming it (``__post_init__``);
- ``State``: a ``NamedTuple`` whose first field ``params`` is the network's
  :class:`~bregnn.lifted.network.Params` and whose other fields are tensors or tuples of
  tensors (so a state is checkpointed with ``torch.save`` and loaded with
  ``weights_only=True``, see :func:`state_to_dict`); ``state.metrics`` is a 1-D tensor
  whose entries :meth:`Solver.metric_names` names (read them with :meth:`Solver.metrics`);
- ``init_state(params, x0, y) -> State``; ``update(state, x0, y) -> State`` (one outer step
  on a mini-batch, or on the full data for full-batch solvers), a pure function of its
  inputs; ``objective(state, x0, y)`` (the quantity the solver decreases, per sample);
  ``metric_names()``.

Like jaxopt's solvers, the penalty and the objective are constructor arguments, not
subclasses: ``Solver(network, config, penalty="quadratic")`` is the classical lifted network
trained by the scheme of ``Solver``. One pass over the data is
:func:`bregnn.lifted.fit.run_epoch` (:meth:`Solver.epoch` calls it).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from bregnn.lifted.network import LiftedNetwork, Params, forward_objective
from bregnn.lifted.penalties import Penalty, get_penalty

__all__ = [
    "Solver",
    "check_positive",
    "config_fields",
    "move_state",
    "power_step",
    "power_step_augmented",
    "solver_config",
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


def solver_config(cls: type) -> type:
    """Make ``cls`` a frozen settings dataclass whose constructor rejects unknown settings
    with a ``ValueError`` naming them and listing the valid ones (a plain dataclass raises
    ``TypeError``), and checks the type of every value (``int`` settings take integers,
    ``float`` settings take numbers, ``bool`` settings take booleans)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    init = cls.__init__
    hints = typing.get_type_hints(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise ValueError(
                f"unknown setting{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))} for {cls.__name__}; valid settings: {names}"
            )
        for key, value in kwargs.items():
            _check_type(cls.__name__, key, value, hints.get(key))
        init(self, *args, **kwargs)

    __init__.__doc__ = init.__doc__
    cls.__init__ = __init__
    return cls


def _check_type(owner: str, key: str, value: Any, hint: Any) -> None:
    ok = True
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"{owner}: setting {key!r} must be {hint.__name__}; got {value!r}")


def config_fields(config_cls: type) -> dict[str, tuple[type, Any, str]]:
    """``{setting: (type, default, help)}`` of a :func:`solver_config` class; the help text
    is the setting's entry in the ``Args:`` section of the class docstring."""
    hints = typing.get_type_hints(config_cls)
    docs = _arg_docs(config_cls.__doc__ or "")
    return {
        f.name: (hints[f.name], f.default, docs.get(f.name, ""))
        for f in dataclasses.fields(config_cls)
    }


def _arg_docs(doc: str) -> dict[str, str]:
    """``name: text`` entries of a Google-style ``Args:`` section (continuation lines
    joined)."""
    out: dict[str, str] = {}
    lines = doc.expandtabs().splitlines()
    inside, indent, current = False, None, None
    for line in lines:
        stripped = line.strip()
        if stripped == "Args:":
            inside, indent, current = True, None, None
            continue
        if not inside:
            continue
        if not stripped:
            continue
        level = len(line) - len(line.lstrip())
        if indent is None:
            indent = level
        if level < indent:
            break
        if level == indent and ":" in stripped:
            current, text = stripped.split(":", 1)
            out[current] = text.strip()
        elif current is not None:
            out[current] += " " + stripped
    return {k: " ".join(v.replace("``", "").split()) for k, v in out.items()}


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


def _encode(value: Any) -> Any:
    if isinstance(value, Params):
        return {"weights": list(value.weights), "biases": list(value.biases)}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, Mapping) and set(value) == {"weights", "biases"}:
        return Params(tuple(value["weights"]), tuple(value["biases"]))
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


def state_to_dict(state: NamedTuple) -> dict[str, Any]:
    """A ``weights_only``-loadable dict of a state (tuples become lists, ``Params`` a dict)."""
    return {k: _encode(v) for k, v in state._asdict().items()}


def state_from_dict(state_cls: type, data: Mapping[str, Any]) -> Any:
    """Inverse of :func:`state_to_dict`; ``ValueError`` when the fields do not match."""
    fields = tuple(state_cls._fields)
    if tuple(data) != fields:
        raise ValueError(
            f"saved solver state has fields {list(data)}, {state_cls.__name__} has {list(fields)}"
        )
    return state_cls(**{k: _decode(v) for k, v in data.items()})


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, tuple):  # Params and plain tuples of tensors
        moved = [_move(v, device) for v in value]
        return type(value)(*moved) if hasattr(value, "_fields") else tuple(moved)
    return value


def move_state(state: NamedTuple, device: str | torch.device) -> Any:
    """``state`` with every tensor on ``device`` (the same numbers: a copy across devices
    is exact); a state already there is returned with the same tensors."""
    return _move(state, torch.device(device))


Objective = Callable[[LiftedNetwork, Params, Tensor, Tensor], Tensor]


class Solver:
    """Base class (see the module docstring for the contract).

    Args:
        network: the lifted network.
        config: the solver's ``Config`` (default settings when ``None``).
        penalty: the coupling penalty (a name of :data:`~bregnn.lifted.penalties.PENALTIES`
            or a :class:`~bregnn.lifted.penalties.Penalty`); default ``default_penalty``.
        objective: per-sample training objective ``objective(network, params, x0, y)`` of
            the backprop baselines (default :func:`~bregnn.lifted.network.forward_objective`,
            the lifted energy at the forward pass); the lifted solvers minimise the energy.
        name: the registry name (set by :func:`~bregnn.lifted.solvers.make_solver`).
    """

    full_batch: ClassVar[bool] = False
    default_penalty: ClassVar[str] = "bregman"
    penalties: ClassVar[tuple[str, ...]] = ("bregman",)
    divergence_setting: ClassVar[str] = "step_scale"
    Config: ClassVar[type]
    State: ClassVar[type]

    def __init__(
        self,
        network: LiftedNetwork,
        config: Any | None = None,
        *,
        penalty: str | Penalty | None = None,
        objective: Objective | None = None,
        name: str | None = None,
    ) -> None:
        self.network = network
        self.config = self.Config() if config is None else config
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__}: config must be {self.Config.__name__}")
        self.penalty: Penalty = get_penalty(penalty or self.default_penalty)
        if self.penalty.name not in self.penalties:
            raise ValueError(
                f"{type(self).__name__} does not support the {self.penalty.name!r} penalty; "
                f"supported: {list(self.penalties)}"
            )
        self.objective_fn: Objective = objective or forward_objective
        self.name = name or type(self).__name__

    def __repr__(self) -> str:
        return f"{self.name}: {type(self).__name__}({self.config}, penalty={self.penalty.name})"

    # -- to implement ----------------------------------------------------------------------
    def init_state(self, params: Params, x0: Tensor, y: Tensor) -> NamedTuple:
        raise NotImplementedError

    def update(self, state: NamedTuple, x0: Tensor, y: Tensor) -> NamedTuple:
        raise NotImplementedError

    def objective(self, state: NamedTuple, x0: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def metric_names(self) -> list[str]:
        raise NotImplementedError

    def start_epoch(self, state: NamedTuple, x0: Tensor, y: Tensor) -> NamedTuple:
        """Called by :func:`~bregnn.lifted.fit.run_epoch` before an epoch's updates, with
        this rank's data (default: the state unchanged)."""
        return state

    # -- shared ------------------------------------------------------------------------------
    def params(self, state: NamedTuple) -> Params:
        """The network parameters of ``state``."""
        return state.params

    def metrics(self, state: NamedTuple) -> dict[str, float]:
        """``state.metrics`` by name."""
        return dict(zip(self.metric_names(), state.metrics.tolist(), strict=True))

    def batches(self, n: int, generator: torch.Generator, batch_size: int | None = None):
        """Index sets of one epoch: a fresh permutation cut into pieces of ``batch_size``
        (default ``config.batch_size``; the last one may be smaller); the full range for
        full-batch solvers."""
        if self.full_batch:
            return [torch.arange(n)]
        perm = torch.randperm(n, generator=generator)
        return list(perm.split(batch_size or self.config.batch_size))

    def updates_per_batch(self) -> int:
        """How often :func:`~bregnn.lifted.fit.run_epoch` calls :meth:`update` per batch:
        ``inner_iters`` for full-batch solvers, else 1."""
        return int(self.config.inner_iters) if self.full_batch else 1

    def epoch(
        self, state: NamedTuple, x0: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[NamedTuple, dict[str, float]]:
        """One pass over the data (:func:`bregnn.lifted.fit.run_epoch`); returns the state
        and the sample-weighted mean metrics."""
        from bregnn.lifted.fit import run_epoch

        return run_epoch(self, state, x0, y, generator)

    def run(
        self, state: NamedTuple, x0: Tensor, y: Tensor, epochs: int, generator: torch.Generator
    ) -> NamedTuple:
        """``epochs`` calls of :meth:`epoch`."""
        check_positive("epochs", epochs, integer=True)
        for _ in range(epochs):
            state, _ = self.epoch(state, x0, y, generator)
        return state
