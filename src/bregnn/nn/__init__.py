"""Thin ``nn.Module`` shells over :mod:`bregnn.functional`."""

from bregnn.nn.linear import (
    INITS,
    MIXINGS,
    BregmanLinear,
    SimplexRows,
    mixing_zero_share,
    project_constraints_,
)

__all__ = [
    "INITS",
    "MIXINGS",
    "BregmanLinear",
    "SimplexRows",
    "mixing_zero_share",
    "project_constraints_",
]
