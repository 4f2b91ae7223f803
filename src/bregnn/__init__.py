"""bregnn: Bregman neural networks and lifted Bregman training in PyTorch."""

from bregnn.activations import Activation, activation, available_activations

__version__ = "0.1.0"

__all__ = ["Activation", "__version__", "activation", "available_activations"]
