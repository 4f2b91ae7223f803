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

Solver contract (every entry of :data:`SOLVERS`; a future solver plugs in the same way):

1. a class attribute ``name`` (its registry key), ``full_batch`` and ``penalty_name``;
2. ``Config``: a frozen dataclass validated in ``__post_init__`` (bad values raise
   ``ValueError`` naming them); ``State``: a ``NamedTuple`` of tensors / tuples of tensors
   with at least ``weights``, ``biases``, ``step`` and ``metrics``;
3. ``init_state(params, x0, y)``, ``update(state, x0, y)`` (one outer step, pure),
   ``objective(state, x0, y)``, ``metric_names()``; ``epoch`` and ``run`` come from
   :class:`~bregnn.lifted.solvers.base.Solver`.

Extending: block-coordinate descent or ADMM variants are new ``update`` rules over the same
:class:`LiftedNetwork` (its ``smooth_grads``, ``prox_g`` and ``energy`` are per block);
constrained variants (dual ascent on :math:`\lambda`) keep :math:`\lambda` in their state
and pass it through ``LiftedNetwork.lambdas``; autoencoders are networks whose target is
the input, with :class:`L1` on the code layer.
"""

from bregnn.lifted.losses import bregman_loss, bregman_loss_grad_x, bregman_loss_grad_z
from bregnn.lifted.network import EnergyParts, LiftedNetwork, Params, one_hot
from bregnn.lifted.penalties import (
    L1,
    BregmanPenalty,
    MACPenalty,
    Penalty,
    QuadraticPenalty,
    Regulariser,
)
from bregnn.lifted.solvers import SOLVERS, Solver, available_solvers, get_solver, make_solver

__all__ = [
    "L1",
    "SOLVERS",
    "BregmanPenalty",
    "EnergyParts",
    "LiftedNetwork",
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
    "get_solver",
    "make_solver",
    "one_hot",
]
