r"""A small convolutional network with a (Bregman) fully connected head for 28x28 images.

The "CNN + FFNN" setting of Frecon et al. (ICML 2022, Table 2): two blocks
``conv 5x5 (no padding) -> rho -> max-pool 2x2`` followed by an :class:`~bregnn.models.MLP`
head whose hidden layers are standard, euclidean or Bregman layers
(:class:`~bregnn.nn.BregmanLinear`) and a linear classifier. With 28x28 inputs the feature
map is ``channels[1] x 4 x 4``.

The features that enter the head are outputs of ``rho`` (max-pooling keeps them there), so
they lie in the range of ``rho`` as the Bregman head needs; the convolutional trunk itself
takes any real input.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from bregnn.activations import Activation
from bregnn.activations import activation as activation_of
from bregnn.models.mlp import MLP

__all__ = ["ConvNet"]


class ConvNet(nn.Module):
    r"""``conv(5x5) -> rho -> maxpool(2)`` twice, then ``MLP(flat, hidden, num_classes)``.

    Args:
        in_channels: image channels (1 for MNIST).
        num_classes: classifier outputs.
        channels: output channels of the two convolutions.
        hidden: hidden widths of the fully connected head.
        activation: a registered name or an activation object (used in the trunk and head).
        variant: ``standard`` | ``euclidean`` | ``bregman`` (the head's layers).
        init: ``random`` | ``identity`` for the head (see :class:`~bregnn.nn.BregmanLinear`).
        image_size: input height = width (28 for MNIST).
        mixing: ``softmax`` | ``projected``, the head's mixing matrices (see
            :class:`~bregnn.nn.BregmanLinear`).

    Example::

        >>> net = ConvNet(1, 10, channels=(8, 16), hidden=(64,), activation="sigmoid")
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        hidden: Sequence[int] = (256,),
        activation: str | Activation = "sigmoid",
        variant: str = "bregman",
        init: str = "random",
        image_size: int = 28,
        mixing: str = "softmax",
    ) -> None:
        super().__init__()
        if len(channels) != 2 or any(int(c) <= 0 for c in channels):
            raise ValueError(f"channels must be two positive ints; got {list(channels)}")
        side = ((image_size - 4) // 2 - 4) // 2
        if side <= 0:
            raise ValueError(f"image_size {image_size} is too small for two 5x5 conv + pool")
        self.act = activation_of(activation)
        c1, c2 = int(channels[0]), int(channels[1])
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=5)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.head = MLP(c2 * side * side, hidden, num_classes, self.act, variant, init, mixing)
        self.variant = variant

    def features(self, x: Tensor) -> Tensor:
        """Flattened trunk output, in the range of ``rho``."""
        z = self.pool(self.act(self.conv1(x)))
        z = self.pool(self.act(self.conv2(z)))
        return z.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
