r"""Sparse (denoising) autoencoders for lifted Bregman training: data, networks, metrics,
backprop baselines and figures.

**Sparse autoencoder** (the paper's equation 26 and Section 6.2: :math:`L = 4` affine
layers of width 784, the code on :math:`x_{L/2} = x_2`):
:math:`x_1 = \mathrm{ReLU}(W_1 x_0 + b_1)`, the code
:math:`x_2 = S_\alpha(W_2 x_1 + b_2)` (soft-thresholding), :math:`x_3 = \mathrm{ReLU}(\cdot)`
and the identity output :math:`z_4 = W_4 x_3 + b_4`; training minimises

.. math::

    F(\Theta) = \frac1n\sum_{i=1}^n \tfrac12|z_4(x_{0,i}) - y_i|^2 + \alpha|x_{2,i}|_1,

with :math:`y = x_0` (reconstruction). In the lifted energy :math:`\alpha|x_2|_1` is an
:class:`~bregnn.lifted.penalties.L1` regulariser folded into the code layer's prox
(:math:`S_{t\lambda\alpha}\circ S_{t\alpha}`), so at the forward pass (where every Bregman
coupling vanishes) the lifted energy per sample equals :math:`F`.

**Denoising** (equation 27): the input is :math:`x_0 = y + \sigma\varepsilon`,
:math:`\varepsilon \sim N(0, I)` drawn once per image with a fixed seed, and the target is
the clean image :math:`y`.

**Metrics** of a trained network (always a plain forward pass of its weights):
:func:`bregnn.lifted.fit.evaluate_regression` with the code layer: the training objective
:math:`F`, the reconstruction loss :math:`\tfrac12|z - y|^2` per sample (``loss``), the
per-pixel mean squared error (``mse``) and the code sparsity rate (percent of exact zeros of
the code).

**Backprop baselines** ``gd-bp``, ``sgd-bp``, ``isgd-bp`` differentiate the whole objective
:math:`F` (:func:`~bregnn.lifted.network.forward_objective`: the output loss plus every
regulariser on the forward hidden outputs) by autograd, as for every network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from bregnn.activations import Identity, ReLU, SoftThreshold
from bregnn.data import load_vectors
from bregnn.data.centering import center
from bregnn.lifted.network import LiftedNetwork
from bregnn.lifted.penalties import L1

__all__ = [
    "AE_DATASETS",
    "AEData",
    "add_noise",
    "autoencoder_data",
    "load_images",
    "plot_curves",
    "plot_reconstructions",
    "sparse_autoencoder",
    "split_subsets",
    "undercomplete_autoencoder",
]

AE_DATASETS = ("mnist", "fashion-mnist")


# -- data ---------------------------------------------------------------------------------------
def load_images(name: str, split: str, data_dir: str | os.PathLike) -> Tensor:
    """Images of an IDX data set as ``float32`` rows in ``[0, 1]``, shape ``(n, 784)``."""
    if name not in AE_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {list(AE_DATASETS)}")
    return load_vectors(name, split, data_dir)[0]


class AEData(NamedTuple):
    """Inputs and targets of the training and validation sets (rows are images, centred
    when asked); ``val_offset`` is what centring subtracted from the validation images
    (added back to show them)."""

    train_input: Tensor
    train_target: Tensor
    val_input: Tensor
    val_target: Tensor
    val_offset: Tensor | float = 0.0


def add_noise(x: Tensor, std: float, generator: torch.Generator) -> Tensor:
    r""":math:`x + \sigma\varepsilon`, :math:`\varepsilon \sim N(0, I)` (``std`` = :math:`\sigma`)."""
    if not std >= 0:
        raise ValueError(f"noise std must be >= 0; got {std}")
    if std == 0:
        return x.clone()
    # drawn on the generator's device (the CPU for a CPU generator), then moved: a seed gives
    # the same noise whatever device x is on
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
    return x + std * noise.to(x.device)


def split_subsets(
    train_images: Tensor,
    test_images: Tensor,
    train_size: int,
    seed: int = 0,
    val_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """A seeded subset of ``train_size`` training images, and the validation set: the rest
    of the training file followed by the test file (its first ``val_size`` after a seeded
    shuffle when given)."""
    n = train_images.shape[0]
    if not 0 < train_size < n:
        raise ValueError(
            f"train_size must be in [1, {n - 1}] for {n} training images; got {train_size}"
        )
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    train = train_images[perm[:train_size]]
    val = torch.cat([train_images[perm[train_size:]], test_images])
    if val_size is not None:
        if not 0 < val_size <= val.shape[0]:
            raise ValueError(f"val_size must be in [1, {val.shape[0]}]; got {val_size}")
        val = val[torch.randperm(val.shape[0], generator=gen)[:val_size]]
    return train, val


def autoencoder_data(
    name: str,
    train_size: int,
    data_dir: str | os.PathLike,
    seed: int = 0,
    val_size: int | None = None,
    noise_std: float = 0.0,
    centering: str = "none",
) -> AEData:
    """MNIST-1K / Fashion-MNIST-1K/-10K style data: ``train_size`` seeded training images,
    validation on the rest of the files; images centred by ``centering``
    (:func:`bregnn.data.centering.center`), inputs with Gaussian noise of ``noise_std``
    (fixed per image, seeded) and clean targets."""
    train, val = split_subsets(
        load_images(name, "train", data_dir),
        load_images(name, "test", data_dir),
        train_size,
        seed,
        val_size,
    )
    (train, val), (_, val_offset) = center(train, [val], centering)
    gen = torch.Generator().manual_seed(seed + 1)
    return AEData(
        add_noise(train, noise_std, gen), train, add_noise(val, noise_std, gen), val, val_offset
    )


# -- networks -------------------------------------------------------------------------------------
def sparse_autoencoder(
    alpha: float,
    dim: int = 784,
    width: int = 784,
    n_layers: int = 4,
    code_layer: int | None = None,
    threshold: float | None = None,
) -> LiftedNetwork:
    r"""The sparse autoencoder of the paper's Section 6.2: ``n_layers`` affine layers
    (``dim-width-...-width-dim``; the paper's :math:`L = 4`), ReLU on every hidden layer
    except the code layer ``code_layer`` (default ``n_layers // 2``: the paper's
    :math:`x_{L/2} = x_2`), which applies soft-thresholding :math:`S_{\text{threshold}}`
    (default ``threshold = alpha``) and carries the regulariser :math:`\alpha|x_{\text{code}}|_1`;
    identity output (MSE)."""
    n_hidden = n_layers - 1
    code_layer = n_layers // 2 if code_layer is None else code_layer
    if not 1 <= code_layer <= n_hidden:
        raise ValueError(f"code_layer must be a hidden layer in [1, {n_hidden}]; got {code_layer}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0; got {alpha}")
    sizes = (dim, *([width] * n_hidden), dim)
    acts = [ReLU() for _ in range(n_hidden)]
    acts[code_layer - 1] = SoftThreshold(alpha if threshold is None else threshold)
    regs = {code_layer: L1(alpha)} if alpha > 0 else None
    return LiftedNetwork(sizes, acts, output="identity", regularisers=regs)


def undercomplete_autoencoder(dim: int = 784, width: int = 784, code: int = 70) -> LiftedNetwork:
    """``dim-width-code-width-dim`` with ReLU hidden layers, an identity (linear) code and
    no sparsity term: the undercomplete baseline (a 70-unit code by default)."""
    return LiftedNetwork((dim, width, code, width, dim), [ReLU(), Identity(), ReLU()], "identity")


# -- figures -----------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | os.PathLike,
    metrics: Sequence[str] = ("train_objective", "val_loss", "train_sparsity"),
    title: str = "",
) -> Path:
    """One panel per metric, one line per method, against the epoch; a PNG at ``path``.
    A method keeps its colour in every panel (also in those where it has no values), and
    losses, objectives and energies are drawn on a log scale."""
    if not histories:
        raise ValueError("plot_curves needs at least one method's history")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
    axes = [axes] if len(metrics) == 1 else list(axes)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {method: cycle[i % len(cycle)] for i, method in enumerate(histories)}
    for ax, metric in zip(axes, metrics, strict=True):
        for method, rows in histories.items():
            pts = [(r["epoch"], r[metric]) for r in rows if metric in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=method, lw=1.5, color=colours[method])
        ax.set_xlabel("epoch")
        ax.set_title(metric.replace("_", " "))
        if metric.endswith(("objective", "loss", "mse", "energy")):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_reconstructions(
    rows: Mapping[str, Tensor],
    path: str | os.PathLike,
    shape: tuple[int, int] = (28, 28),
    n: int = 8,
) -> Path:
    """A grid: one row per entry of ``rows`` (e.g. original, noisy, one per method), ``n``
    images each, clipped to ``[0, 1]``; a PNG at ``path``."""
    if not rows:
        raise ValueError("plot_reconstructions needs at least one row of images")
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            if c < images.shape[0]:
                img = images[c].detach().reshape(shape).clamp(0, 1).cpu().numpy()
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path
