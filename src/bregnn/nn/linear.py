"""Bregman fully connected layers."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bregnn import functional as F
from bregnn.activations import Activation, activation, available_activations

__all__ = ["INITS", "MIXINGS", "BregmanLinear", "SimplexRows", "project_constraints_"]

INITS = ("random", "identity")
#: How :class:`BregmanLinear` keeps the rows of ``M`` on the simplex.
MIXINGS = ("softmax", "projected")


class SimplexRows(nn.Module):
    r"""Parametrization keeping every row of a matrix on the probability simplex.

    ``forward`` maps free logits :math:`V` to :math:`M = \mathrm{softmax}(V, \text{dim}=1)`;
    ``right_inverse`` maps a row-stochastic matrix back to logits :math:`\log M` (entries are
    floored at ``finfo.tiny`` so exact zeros are representable as very negative logits).
    It also works with ``torch.nn.utils.parametrize.register_parametrization``; any torch
    optimizer then trains the logits and ``M`` stays feasible.
    """

    def forward(self, logits: Tensor) -> Tensor:
        return torch.softmax(logits, dim=1)

    def right_inverse(self, matrix: Tensor) -> Tensor:
        _check_row_stochastic(matrix)
        return torch.log(matrix.clamp(min=torch.finfo(matrix.dtype).tiny))


class BregmanLinear(nn.Module):
    r"""A fully connected (Bregman) layer, see :func:`bregnn.functional.bregman_linear`.

    .. math::

        z^+ = \rho(\rho^{-1}(Mz) + Wz + b) \quad(\texttt{bregman}),\qquad
        \rho(Mz + Wz + b) \quad(\texttt{euclidean}),\qquad \rho(Wz + b)\quad(\texttt{standard}).

    Args:
        in_features, out_features: sizes.
        activation: a registered name or an :class:`~bregnn.activations.Activation`.
        variant: ``bregman`` (default), ``euclidean`` or ``standard``.
        init: ``random`` (PyTorch's default ``nn.Linear`` initialisation) or ``identity``
            (the non-informative initialisation: ``W = 0, b = 0`` for bregman/euclidean, so
            the layer is ``z -> Mz``, exactly the identity when ``in == out``; ``W = I, b = 0``
            for standard).
        bias: learn ``b``.
        mixing: how ``M`` stays row-stochastic, ``softmax`` (default) or ``projected``.

    When ``in != out`` (bregman/euclidean), ``M`` is learned and kept row-stochastic.

    - ``mixing="softmax"``: by the :class:`SimplexRows` map: the Parameter is
      ``layer.mixing_logits`` and ``layer.mixing`` is ``softmax(mixing_logits, dim=1)``
      (assigning ``layer.mixing = M`` goes through ``right_inverse``). This is
      ``torch.nn.utils.parametrize`` by hand: a registered parametrization would make
      ``torch.save(model)`` fail, which users expect to work. Its logits start as ``N(0, 1)``
      draws, or for ``identity`` init as one-hot-like rows pointing at input
      ``i mod in_features``. Entries of ``M`` are never exactly 0.
    - ``mixing="projected"``: the paper's projected gradient (Frecon et al., App. B: "we do
      learn them in the same way we learn the weights {W_l}. The only difference is that we
      further need to project them into Delta"): the Parameter ``layer.mixing_weight`` *is*
      ``M``, and :meth:`project_` replaces each row by its Euclidean projection onto the
      simplex (:func:`bregnn.functional.project_simplex`, exact, so entries become exactly 0).
      :func:`bregnn.train.fit` calls it after every optimizer step (see
      :func:`project_constraints_` for your own loop). ``M`` starts as the projection of an
      ``nn.Linear``-like draw ``U(-1/sqrt(in), 1/sqrt(in))`` (bregmanet's
      ``utils/weight.py``, ``linear_with_init(init='simplex')``), or for ``identity`` init as
      exact one-hot rows pointing at input ``i mod in_features``.

    Shape: input ``(*, in_features)``, output ``(*, out_features)``. For ``bregman`` the
    input must lie in the range of ``rho`` (see :class:`bregnn.data.RangeScaler`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str | Activation = "sigmoid",
        variant: str = "bregman",
        init: str = "random",
        bias: bool = True,
        mixing: str = "softmax",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.variant = F.check_variant(variant)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; valid inits: {list(INITS)}")
        if mixing not in MIXINGS:
            raise ValueError(f"unknown mixing {mixing!r}; valid mixings: {list(MIXINGS)}")
        self.init, self.mixing_mode = init, mixing
        self.act = _activation_for(activation, variant)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.has_mixing = variant != "standard" and self.in_features != self.out_features
        shape = (self.out_features, self.in_features)
        if self.has_mixing and mixing == "softmax":
            self.simplex = SimplexRows()
            self.mixing_logits = nn.Parameter(torch.empty(shape))
        elif self.has_mixing:
            self.mixing_weight = nn.Parameter(torch.empty(shape))
        self.reset_parameters()

    @property
    def projected(self) -> bool:
        """Whether ``M`` is a Parameter kept on the simplex by :meth:`project_`."""
        return self.has_mixing and self.mixing_mode == "projected"

    @property
    def mixing(self) -> Tensor | None:
        """``M`` (row-stochastic), or ``None`` when the layer has no mixing matrix."""
        if not self.has_mixing:
            return None
        return self.mixing_weight if self.projected else self.simplex(self.mixing_logits)

    @mixing.setter
    def mixing(self, matrix: Tensor) -> None:
        if not self.has_mixing:
            raise ValueError("this layer has no mixing matrix M (in == out or standard variant)")
        with torch.no_grad():
            if self.projected:
                _check_row_stochastic(matrix)
                self.mixing_weight.copy_(matrix)
            else:
                self.mixing_logits.copy_(self.simplex.right_inverse(matrix))

    @torch.no_grad()
    def project_(self) -> None:
        """Project every row of ``M`` onto the probability simplex, in place (``projected``
        mixing; nothing to do otherwise). Call it after each optimizer step."""
        if self.projected:
            self.mixing_weight.copy_(F.project_simplex(self.mixing_weight, dim=1))

    def reset_parameters(self) -> None:
        if self.init == "identity":
            with torch.no_grad():
                if self.variant == "standard":
                    self.weight.copy_(torch.eye(self.out_features, self.in_features))
                else:
                    self.weight.zero_()
                if self.bias is not None:
                    self.bias.zero_()
        else:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                bound = 1 / math.sqrt(self.in_features)
                nn.init.uniform_(self.bias, -bound, bound)
        if self.projected:
            with torch.no_grad():
                self.mixing_weight.copy_(self._initial_projected_mixing())
        elif self.has_mixing:
            logits = self._initial_mixing_logits()
            with torch.no_grad():
                self.mixing_logits.copy_(logits)

    def _initial_projected_mixing(self) -> Tensor:
        if self.init == "identity":
            rows = torch.arange(self.out_features)
            return nn.functional.one_hot(rows % self.in_features, self.in_features).float()
        bound = 1 / math.sqrt(self.in_features)
        draw = torch.empty(self.out_features, self.in_features).uniform_(-bound, bound)
        return F.project_simplex(draw, dim=1)

    def _initial_mixing_logits(self) -> Tensor:
        if self.init == "identity":
            logits = torch.zeros(self.out_features, self.in_features)
            rows = torch.arange(self.out_features)
            logits[rows, rows % self.in_features] = 10.0
            return logits
        return torch.randn(self.out_features, self.in_features)

    def _check_width(self, z: Tensor) -> None:
        if z.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects inputs with last dimension "
                f"in_features={self.in_features}; got shape {tuple(z.shape)}"
            )

    @property
    def takes_rho_inv_z(self) -> bool:
        """Whether :meth:`preactivation` uses a given ``rho_inv_z`` (a bregman layer
        without ``M``); other layers ignore it."""
        return self.variant == "bregman" and not self.has_mixing

    def forward(self, z: Tensor) -> Tensor:
        self._check_width(z)
        return F.bregman_linear(z, self.weight, self.bias, self.act, self.variant, self.mixing)

    def preactivation(self, z: Tensor, rho_inv_z: Tensor | None = None) -> Tensor:
        """``u`` with ``self(z) == self.act.rho(u)``; see
        :func:`bregnn.functional.bregman_preactivation` for ``rho_inv_z``."""
        self._check_width(z)
        return F.bregman_preactivation(
            z, self.weight, self.bias, self.act, self.variant, self.mixing, rho_inv_z
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"variant={self.variant!r}, init={self.init!r}, bias={self.bias is not None}"
            + (f", mixing={self.mixing_mode!r}" if self.has_mixing else "")
        )


def _check_row_stochastic(matrix: Tensor) -> None:
    if (matrix < 0).any() or not torch.allclose(
        matrix.sum(1), torch.ones_like(matrix[:, 0]), atol=1e-4
    ):
        raise ValueError("M must have nonnegative rows summing to 1")


def project_constraints_(model: nn.Module) -> int:
    """Call ``project_()`` on every submodule of ``model`` that has one (the ``projected``
    mixing matrices of :class:`BregmanLinear`); returns how many have one. The training
    loop :func:`bregnn.train.fit` does this after every optimizer step::

        optimizer.step()
        project_constraints_(model)
    """
    count = 0
    for module in model.modules():
        project = getattr(module, "project_", None)
        if callable(project):
            project()
            count += 1
    return count


@torch.no_grad()
def mixing_zero_share(model: nn.Module) -> float | None:
    """The share of exactly-zero entries over every mixing matrix ``M`` of ``model``'s
    :class:`BregmanLinear` layers, or ``None`` when it has none. Projected mixing (the
    paper's) produces exact zeros; the softmax parametrisation never does."""
    mixings = [m.mixing for m in model.modules() if isinstance(m, BregmanLinear) and m.has_mixing]
    if not mixings:
        return None
    zeros = sum(int((m == 0).sum()) for m in mixings)
    return zeros / sum(m.numel() for m in mixings)


def _activation_for(spec: str | Activation, variant: str) -> Activation:
    act = activation(spec)
    if variant == "bregman" and not act.invertible:
        raise ValueError(
            f"the bregman variant needs an invertible activation; {act.name!r} is not. "
            f"Invertible activations: {available_activations(invertible=True)}"
        )
    return act
