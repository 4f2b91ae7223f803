r"""Lifted Bregman training (Wang & Benning): feed-forward networks trained without
back-propagation.

Pieces:

- :mod:`~bregnn.lifted.losses`: :func:`bregman_loss` :math:`B_\Psi(x, z)` and its gradients;
- :mod:`~bregnn.lifted.penalties`: coupling penalties (Bregman, classical quadratic, MAC)
  and regularisers on auxiliary layers (:class:`L1`, folded into the prox);
- :mod:`~bregnn.lifted.network`: :class:`LiftedNetwork`, the energy
  :math:`E = H(\Theta, X) + G(X)`, closed-form gradients of :math:`H`, the prox of
  :math:`G`, diagnostics and :meth:`LiftedNetwork.to_module`;
- :mod:`~bregnn.lifted.solvers`: one registry :data:`SOLVERS` of solvers and baselines.

Train your own network with :func:`fit`::

    model = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    result = bregnn.lifted.fit(model, x, labels, method="lbn-s", epochs=5)
    result.module  # the trained nn.Sequential

Solver contract (every entry of :data:`SOLVERS`; a future solver plugs in the same way):
see :mod:`bregnn.lifted.solvers.base`. ``make_solver(name, network, **settings)`` builds a
solver and rejects unknown settings.
"""

from bregnn.lifted.fit import LiftedResult, evaluate_classifier, evaluate_regression, fit, run_epoch
from bregnn.lifted.layers import AffineLayer, Conv, Dense
from bregnn.lifted.losses import bregman_loss, bregman_loss_grad_x, bregman_loss_grad_z
from bregnn.lifted.network import EnergyParts, LiftedNetwork, Params, forward_objective, one_hot
from bregnn.lifted.penalties import (
    L1,
    PENALTIES,
    BregmanPenalty,
    MACPenalty,
    Penalty,
    QuadraticPenalty,
    Regulariser,
    get_penalty,
)
from bregnn.lifted.solvers import SOLVERS, Solver, available_solvers, get_solver, make_solver

__all__ = [
    "L1",
    "PENALTIES",
    "SOLVERS",
    "AffineLayer",
    "BregmanPenalty",
    "Conv",
    "Dense",
    "EnergyParts",
    "LiftedNetwork",
    "LiftedResult",
    "MACPenalty",
    "Params",
    "Penalty",
    "QuadraticPenalty",
    "Regulariser",
    "Solver",
    "available_solvers",
    "bregman_loss",
    "bregman_loss_grad_x",
    "bregman_loss_grad_z",
    "evaluate_classifier",
    "evaluate_regression",
    "fit",
    "forward_objective",
    "get_penalty",
    "get_solver",
    "make_solver",
    "one_hot",
    "run_epoch",
]
