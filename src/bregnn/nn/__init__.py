"""Thin ``nn.Module`` shells over :mod:`bregnn.functional`."""

from bregnn.nn.linear import INITS, MIXINGS, BregmanLinear, SimplexRows, project_constraints_

__all__ = ["INITS", "MIXINGS", "BregmanLinear", "SimplexRows", "project_constraints_"]
