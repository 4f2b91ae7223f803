"""Lifted solvers and backprop baselines: the one registry :data:`SOLVERS`.

Every entry is a :class:`Method`: a solver class (see :mod:`bregnn.lifted.solvers.base` for
the contract) and the coupling penalty it is run with. ``make_solver(name, network,
**settings)`` builds one; an unknown setting raises ``ValueError`` listing the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bregnn.lifted.network import LiftedNetwork
from bregnn.lifted.solvers.admm import LiftedADMM
from bregnn.lifted.solvers.backprop import SGD, FullBatchGD, ImplicitSGD
from bregnn.lifted.solvers.base import (
    Solver,
    config_fields,
    move_state,
    solver_config,
    state_from_dict,
    state_to_dict,
)
from bregnn.lifted.solvers.bcd import BlockCoordinateDescent
from bregnn.lifted.solvers.constrained import ConstrainedLifted
from bregnn.lifted.solvers.implicit import ImplicitLiftedBregman
from bregnn.lifted.solvers.linbreg import LinBreg
from bregnn.lifted.solvers.proximal import ProximalGradientLifted
from bregnn.registry import Registry

__all__ = [
    "SGD",
    "SOLVERS",
    "BlockCoordinateDescent",
    "ConstrainedLifted",
    "FullBatchGD",
    "ImplicitLiftedBregman",
    "ImplicitSGD",
    "LiftedADMM",
    "LinBreg",
    "Method",
    "ProximalGradientLifted",
    "Solver",
    "available_solvers",
    "config_fields",
    "get_solver",
    "make_solver",
    "move_state",
    "solver_config",
    "state_from_dict",
    "state_to_dict",
]


@dataclass(frozen=True)
class Method:
    """A registered method: ``solver`` (a :class:`Solver` class) run with ``penalty``."""

    solver: type[Solver]
    penalty: str
    description: str

    @property
    def Config(self) -> type:
        return self.solver.Config

    @property
    def backprop(self) -> bool:
        """Whether this is a backpropagation baseline."""
        return issubclass(self.solver, SGD)


SOLVERS: Registry[Method] = Registry("method")
for _name, _solver, _penalty, _text in (
    ("lbn-s", ImplicitLiftedBregman, "bregman", "implicit stochastic lifted Bregman (Algorithm 1)"),
    ("lbn-d", ProximalGradientLifted, "bregman", "full-batch proximal gradient, lifted Bregman"),
    ("sgd-bp", SGD, "bregman", "mini-batch SGD with backpropagation"),
    ("gd-bp", FullBatchGD, "bregman", "full-batch gradient descent with backpropagation"),
    ("isgd-bp", ImplicitSGD, "bregman", "implicit SGD with backpropagation"),
    ("lifted-quadratic", ImplicitLiftedBregman, "quadratic", "classical lifted network"),
    ("mac-qp", ImplicitLiftedBregman, "mac", "method of auxiliary coordinates, quadratic"),
    ("bcd", BlockCoordinateDescent, "bregman", "block coordinate descent, lifted Bregman"),
    ("admm", LiftedADMM, "bregman", "block coordinate descent with ADMM blocks"),
    ("constrained", ConstrainedLifted, "bregman", "constrained lifted Bregman, dual ascent"),
    ("linbreg", LinBreg, "bregman", "lifted Bregman with linearised Bregman (sparse) weights"),
):
    SOLVERS.register(_name, Method(_solver, _penalty, _text))


def available_solvers() -> list[str]:
    """Registered method names."""
    return SOLVERS.names()


def get_solver(name: str) -> Method:
    """The method called ``name``; ``ValueError`` lists the valid names."""
    return SOLVERS.get(name)


def make_solver(name: str, network: LiftedNetwork, **settings: Any) -> Solver:
    """The solver of method ``name`` for ``network`` with ``settings`` (fields of its
    ``Config``; an unknown one raises ``ValueError`` naming it and the valid ones)."""
    method = SOLVERS.get(name)
    return method.solver(
        network, method.Config(**settings), penalty=method.penalty, name=SOLVERS.key(name)
    )
