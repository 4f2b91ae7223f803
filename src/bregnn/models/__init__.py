"""Network architectures built from :mod:`bregnn.nn` layers."""

from bregnn.models.mlp import MLP, LayerDiagnostics

__all__ = ["MLP", "LayerDiagnostics"]
