"""Thin ``nn.Module`` shells over :mod:`bregnn.functional`."""

from bregnn.nn.linear import INITS, BregmanLinear, SimplexRows

__all__ = ["INITS", "BregmanLinear", "SimplexRows"]
