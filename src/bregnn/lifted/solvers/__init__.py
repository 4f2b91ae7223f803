"""Lifted solvers and backprop baselines: the one registry :data:`SOLVERS`.

Every solver follows the contract of :mod:`bregnn.lifted.solvers.base`.
"""

from __future__ import annotations

from bregnn.lifted.solvers.backprop import SGD, FullBatchGD, ImplicitSGD
from bregnn.lifted.solvers.base import Solver, config_from, state_from_dict, state_to_dict
from bregnn.lifted.solvers.implicit import (
    ImplicitLiftedBregman,
    LiftedQuadratic,
    MACQuadraticPenalty,
)
from bregnn.lifted.solvers.proximal import ProximalGradientLifted

__all__ = [
    "SGD",
    "SOLVERS",
    "FullBatchGD",
    "ImplicitLiftedBregman",
    "ImplicitSGD",
    "LiftedQuadratic",
    "MACQuadraticPenalty",
    "ProximalGradientLifted",
    "Solver",
    "available_solvers",
    "config_from",
    "get_solver",
    "make_solver",
    "state_from_dict",
    "state_to_dict",
]

SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls
    for cls in (
        ImplicitLiftedBregman,
        ProximalGradientLifted,
        SGD,
        FullBatchGD,
        ImplicitSGD,
        LiftedQuadratic,
        MACQuadraticPenalty,
    )
}


def available_solvers() -> list[str]:
    """Registered solver names."""
    return list(SOLVERS)


def get_solver(name: str) -> type[Solver]:
    """The solver class called ``name``; ``ValueError`` lists the valid names."""
    if name not in SOLVERS:
        raise ValueError(f"unknown method {name!r}; valid methods: {list(SOLVERS)}")
    return SOLVERS[name]


def make_solver(name: str, network, **settings) -> Solver:
    """``get_solver(name)(network, Config(**known settings))``; unknown keys are ignored,
    so one set of command-line settings configures every method."""
    cls = get_solver(name)
    return cls(network, config_from(cls.Config, settings))


# Block coordinate descent, ADMM, the constrained formulation and LinBreg (same contract).
from bregnn.lifted.solvers.admm import LiftedADMM  # noqa: E402
from bregnn.lifted.solvers.bcd import BlockCoordinateDescent  # noqa: E402
from bregnn.lifted.solvers.constrained import ConstrainedLifted  # noqa: E402
from bregnn.lifted.solvers.linbreg import LinBreg  # noqa: E402

SOLVERS.update(
    {c.name: c for c in (BlockCoordinateDescent, LiftedADMM, ConstrainedLifted, LinBreg)}
)
