r"""Figures of the experiments (matplotlib, imported lazily).

- :func:`plot_dataset`: 2-D points coloured by class (the paper's Figure 1).
- :func:`plot_layer_outputs`: each hidden layer's 2-D representation :math:`z_l` of the
  same points, one row per model (the paper's Figure 2).
- :func:`plot_layer_diagnostics`: per-layer parameter norms
  :math:`\sqrt{|W_l|_F^2 + |b_l|^2}` and consecutive-layer steps
  :math:`\mathrm{mean}_i |z_l^{(i)} - z_{l-1}^{(i)}|` (the paper's Figure 3), see
  :meth:`bregnn.models.MLP.diagnostics`.
- :func:`plot_depth_study`: test accuracy against width, one line per (depth, variant).
- :func:`plot_depth_panels`: the same, one panel per (activation, depth) (the paper's
  Figures 5 and 7).
- :func:`plot_mean_curves`: a metric per epoch, mean over seeds with a +-std envelope, one
  panel per group of runs (the preprint's Figure 5).
- :func:`plot_embedding_2d`: 2-D features of labelled points, one panel per model, ten
  colours (the paper's Figure 4).
- :func:`plot_lr_sweep`: accuracy against the learning rate (the preprint's Figure 6).
- :func:`plot_learning_curves`: loss and accuracy per epoch of one training run.
- :func:`plot_robustness`: clean and adversarial accuracies as bars.

matplotlib is an optional dependency (``pip install 'bregnn[plot]'``), imported only inside
these functions. A command asks :func:`figures_available` before drawing and, when it is
not, prints :func:`skip_figures_note` and carries on: a run never fails after training for
want of matplotlib. The drawing functions themselves raise an ``ImportError`` naming the
fix. Figures are written with the non-interactive ``Agg`` backend (no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bregnn.models.mlp import LayerDiagnostics

__all__ = [
    "CLASS_COLORS",
    "VARIANT_COLORS",
    "figures_available",
    "figures_or_note",
    "plot_dataset",
    "plot_depth_panels",
    "plot_depth_study",
    "plot_embedding_2d",
    "plot_layer_diagnostics",
    "plot_layer_outputs",
    "plot_learning_curves",
    "plot_lr_sweep",
    "plot_mean_curves",
    "plot_robustness",
    "pyplot",
    "select_layers",
    "skip_figures_note",
]

CLASS_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")
VARIANT_COLORS = {"bregman": "#1f77b4", "standard": "#d62728", "euclidean": "#2ca02c"}


_INSTALL = "pip install 'bregnn[plot]'"
_noted: set[str] = set()


def figures_available() -> bool:
    """Whether matplotlib can be imported (``pip install 'bregnn[plot]'`` provides it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def skip_figures_note(what: str = "figures") -> None:
    """Print, once per process for each ``what``, the line
    ``"<what> skipped: matplotlib is not installed (pip install 'bregnn[plot]')"``."""
    if what not in _noted:
        _noted.add(what)
        print(f"{what} skipped: matplotlib is not installed ({_INSTALL})", flush=True)


def figures_or_note(what: str = "figures") -> bool:
    """:func:`figures_available`, printing :func:`skip_figures_note` for ``what`` when not."""
    if figures_available():
        return True
    skip_figures_note(what)
    return False


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the ``Agg`` backend; ``ImportError`` with the fix if absent."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(f"figures need matplotlib, which is not installed: {_INSTALL}") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def select_layers(n_layers: int, max_panels: int = 8) -> list[int]:
    """Indices ``0..n_layers`` (0 is the input) to draw: all of them when they fit in
    ``max_panels``, else the input, the last layer and evenly spaced layers between."""
    if max_panels < 2:
        raise ValueError(f"max_panels must be at least 2; got {max_panels}")
    if n_layers + 1 <= max_panels:
        return list(range(n_layers + 1))
    picks = torch.linspace(0, n_layers, max_panels).round().long().tolist()
    return sorted(set(picks))


def _scatter(ax: Any, points: Tensor, labels: Tensor, size: float = 6.0) -> None:
    points = points.detach().cpu().double()
    labels = labels.detach().cpu()
    for c in labels.unique().tolist():
        mask = labels == c
        ax.scatter(
            points[mask, 0].numpy(),
            points[mask, 1].numpy() if points.shape[1] > 1 else torch.zeros(int(mask.sum())),
            s=size,
            c=CLASS_COLORS[int(c) % len(CLASS_COLORS)],
            label=f"class {c}",
            alpha=0.75,
            linewidths=0,
        )


def plot_dataset(
    x: Tensor, y: Tensor, path: str | Path, title: str = "two spirals (training set)"
) -> Path:
    """Scatter the 2-D inputs ``x`` coloured by their labels ``y``; returns ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.2), constrained_layout=True)
    _scatter(ax, x, y, size=8)
    ax.set_title(title)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", fontsize=8, markerscale=2)
    return _save(fig, plt, path)


def plot_layer_outputs(
    rows: Mapping[str, Sequence[Tensor]],
    labels: Tensor,
    path: str | Path,
    title: str = "",
    max_panels: int = 8,
) -> Path:
    """One row per model (key: its label, e.g. ``"bregman (test acc 0.99)"``), one column per
    layer: ``outputs[0]`` is the input, ``outputs[l]`` the output :math:`z_l` of hidden layer
    ``l`` (as returned by ``MLP.diagnostics(x).outputs``). Points are coloured by ``labels``;
    for layers wider than 2 the first two coordinates are drawn. Deep models show the input,
    the last layer and evenly spaced layers between (``max_panels`` columns at most)."""
    if not rows:
        raise ValueError("plot_layer_outputs needs at least one row of layer outputs")
    plt = pyplot()
    n_layers = max(len(v) for v in rows.values()) - 1
    cols = select_layers(n_layers, max_panels)
    fig, axes = plt.subplots(
        len(rows),
        len(cols),
        figsize=(2.3 * len(cols), 2.45 * len(rows) + 0.4),
        squeeze=False,
        constrained_layout=True,
    )
    for r, (name, outputs) in enumerate(rows.items()):
        for c, layer in enumerate(cols):
            ax = axes[r][c]
            if layer < len(outputs):
                _scatter(ax, outputs[layer], labels, size=3)
            ax.set_title("input" if layer == 0 else f"layer {layer}", fontsize=9)
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, plt, path)


def plot_layer_diagnostics(
    diagnostics: Mapping[str, LayerDiagnostics], path: str | Path, title: str = ""
) -> Path:
    r"""Two panels over the layer index ``l``: the parameter norm
    :math:`\sqrt{|W_l|_F^2 + |b_l|^2}` and the mean step :math:`|z_l - z_{l-1}|` (log scale),
    one line per model (key: its label)."""
    if not diagnostics:
        raise ValueError("plot_layer_diagnostics needs at least one model's diagnostics")
    plt = pyplot()
    fig, (ax_norm, ax_step) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for i, (name, diag) in enumerate(diagnostics.items()):
        color = _color_for(name, i)
        layers = torch.arange(1, len(diag.param_norms) + 1).numpy()
        ax_norm.plot(layers, diag.param_norms.cpu().double().numpy(), label=name, color=color)
        steps = diag.step_norms.cpu().double().clamp(min=1e-12).numpy()
        ax_step.plot(layers, steps, label=name, color=color)
    ax_norm.set_title(r"parameter norm $\sqrt{\|W_l\|_F^2 + \|b_l\|^2}$", fontsize=10)
    ax_step.set_title(r"mean step $|z_l - z_{l-1}|$", fontsize=10)
    ax_step.set_yscale("log")
    for ax in (ax_norm, ax_step):
        ax.set_xlabel("layer $l$")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, plt, path)


def plot_depth_study(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Test accuracy (mean +- std over seeds) against hidden width (log scale), one line per
    (depth, variant). Each row needs ``depth``, ``width``, ``variant``, ``test_mean``,
    ``test_std``."""
    if not rows:
        raise ValueError("plot_depth_study needs at least one result row")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8), constrained_layout=True)
    keys = sorted({(int(r["depth"]), str(r["variant"])) for r in rows})
    for depth, variant in keys:
        sel = sorted(
            (r for r in rows if int(r["depth"]) == depth and r["variant"] == variant),
            key=lambda r: int(r["width"]),
        )
        widths = [int(r["width"]) for r in sel]
        mean = [100 * float(r["test_mean"]) for r in sel]
        std = [100 * float(r["test_std"]) if math.isfinite(r["test_std"]) else 0.0 for r in sel]
        ax.errorbar(
            widths,
            mean,
            yerr=std,
            marker="o",
            capsize=3,
            color=VARIANT_COLORS.get(variant),
            linestyle="-" if depth == min(k[0] for k in keys) else "--",
            label=f"{variant}, {depth} hidden layers",
        )
    ax.set_xscale("log", base=2)
    all_widths = sorted({int(r["width"]) for r in rows})
    ax.set_xticks(all_widths, [str(w) for w in all_widths])
    ax.minorticks_off()
    ax.set_xlabel("hidden width")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, plt, path)


def plot_learning_curves(
    rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = ""
) -> Path:
    """Two panels over the epochs of one run: the loss and the accuracy (in percent) of
    every split present in ``rows`` (``train_*``, ``val_*``, ``test_*`` keys, as written by
    :func:`bregnn.train.fit`)."""
    if not rows:
        raise ValueError("plot_learning_curves needs at least one epoch's metrics")
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    epochs = [int(r["epoch"]) for r in rows]
    for i, split in enumerate(("train", "val", "test")):
        if f"{split}_loss" not in rows[0]:
            continue
        color = CLASS_COLORS[i]
        ax_loss.plot(epochs, [float(r[f"{split}_loss"]) for r in rows], color=color, label=split)
        accuracy = [100 * float(r[f"{split}_accuracy"]) for r in rows]
        ax_acc.plot(epochs, accuracy, color=color, label=split)
    ax_loss.set_ylabel("cross-entropy loss")
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, plt, path)


def plot_robustness(accuracies: Mapping[str, float], path: str | Path, title: str = "") -> Path:
    """One bar per entry of ``accuracies`` (label -> accuracy in ``[0, 1]``, e.g. clean,
    FGSM and PGD test accuracy), with the value in percent written on it."""
    if not accuracies:
        raise ValueError("plot_robustness needs at least one accuracy")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.4 * len(accuracies) + 1.6, 3.4), constrained_layout=True)
    labels = list(accuracies)
    values = [100 * float(accuracies[k]) for k in labels]
    bars = ax.bar(labels, values, color=CLASS_COLORS[: len(labels)])
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:.1f}", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                    va="bottom", fontsize=9)  # fmt: skip
    ax.set_ylim(0, 105)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, plt, path)


def plot_depth_panels(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Test accuracy (mean +- std over seeds) against hidden width (log scale), one panel per
    (activation, depth) -- activations down, depths across -- and one line per variant.
    Each row needs ``activation``, ``depth``, ``width``, ``variant``, ``test_mean``,
    ``test_std``."""
    if not rows:
        raise ValueError("plot_depth_panels needs at least one result row")
    plt = pyplot()
    acts = sorted({str(r["activation"]) for r in rows})
    depths = sorted({int(r["depth"]) for r in rows})
    fig, axes = plt.subplots(
        len(acts), len(depths), figsize=(3.2 * len(depths) + 0.6, 2.8 * len(acts) + 0.6),
        squeeze=False, sharey=True, constrained_layout=True,
    )  # fmt: skip
    all_widths = sorted({int(r["width"]) for r in rows})
    for i, act in enumerate(acts):
        for j, depth in enumerate(depths):
            ax = axes[i][j]
            sel = [r for r in rows if r["activation"] == act and int(r["depth"]) == depth]
            for variant in sorted({str(r["variant"]) for r in sel}):
                line = sorted(
                    (r for r in sel if r["variant"] == variant), key=lambda r: int(r["width"])
                )
                std = [
                    100 * float(r["test_std"]) if math.isfinite(r["test_std"]) else 0.0
                    for r in line
                ]
                ax.errorbar(
                    [int(r["width"]) for r in line], [100 * float(r["test_mean"]) for r in line],
                    yerr=std, marker="o", capsize=3, color=VARIANT_COLORS.get(variant), label=variant,
                )  # fmt: skip
            ax.set_xscale("log", base=2)
            ax.set_xticks(all_widths, [str(w) for w in all_widths])
            ax.minorticks_off()
            ax.set_title(f"{act}, {depth} hidden layer{'s' if depth > 1 else ''}", fontsize=9)
            ax.grid(alpha=0.3)
            if i == len(acts) - 1:
                ax.set_xlabel("neurons per layer")
            if j == 0:
                ax.set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, plt, path)


def plot_mean_curves(
    panels: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    path: str | Path,
    metric: str = "train_loss",
    ylabel: str = "training loss",
    title: str = "",
    log_y: bool = False,
) -> Path:
    """One panel per entry of ``panels`` (its title -> lines), one line per entry of a panel
    (label -> per-epoch rows with ``epoch``, ``<metric>_mean`` and ``<metric>_std``, as
    :func:`bregnn.experiments._summary.mean_curves` returns): the mean in bold, the mean
    +- std as an envelope."""
    if not panels or not any(panels.values()):
        raise ValueError("plot_mean_curves needs at least one curve")
    plt = pyplot()
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(4.2 * len(panels) + 0.4, 3.4),
        squeeze=False,
        constrained_layout=True,
    )
    styles = ("-", "--", ":", "-.")
    for ax, (name, lines) in zip(axes[0], panels.items()):
        used: dict[str, int] = {}
        for i, (label, rows) in enumerate(lines.items()):
            rows = [r for r in rows if r.get(f"{metric}_mean") is not None]
            if not rows:
                continue
            epochs = [int(r["epoch"]) for r in rows]
            mean = torch.tensor([float(r[f"{metric}_mean"]) for r in rows], dtype=torch.float64)
            std = torch.tensor(
                [float(r.get(f"{metric}_std") or 0.0) for r in rows], dtype=torch.float64
            )
            color = _color_for(label, i)
            style = styles[used.get(color, 0) % len(styles)]  # same variant: another dash
            used[color] = used.get(color, 0) + 1
            ax.plot(epochs, mean.numpy(), color=color, linestyle=style, linewidth=1.6,
                    marker="o" if len(epochs) == 1 else None, label=label)  # fmt: skip
            low = (mean - std).clamp(min=1e-12) if log_y else mean - std
            ax.fill_between(
                epochs, low.numpy(), (mean + std).numpy(), color=color, alpha=0.2, linewidth=0
            )
        if log_y:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, plt, path)


def plot_embedding_2d(
    embeddings: Mapping[str, Tensor], labels: Tensor, path: str | Path, title: str = ""
) -> Path:
    """One panel per model (key: its label): the 2-D features ``(N, 2)`` of the same points,
    coloured by their ``labels`` (up to ten classes, matplotlib's ``tab10`` colours)."""
    if not embeddings:
        raise ValueError("plot_embedding_2d needs at least one model's features")
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(
        1,
        len(embeddings),
        figsize=(4.2 * len(embeddings), 4.4),
        squeeze=False,
        constrained_layout=True,
    )
    labels = labels.detach().cpu()
    for ax, (name, points) in zip(axes[0], embeddings.items()):
        points = points.detach().cpu().double()
        for c in labels.unique().tolist():
            mask = labels == c
            ax.scatter(points[mask, 0].numpy(), points[mask, 1].numpy(), s=3, color=cmap(int(c) % 10),
                       label=str(c), alpha=0.7, linewidths=0)  # fmt: skip
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][-1].legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, plt, path)


def plot_lr_sweep(
    rows: Sequence[Mapping[str, Any]], path: str | Path, split: str = "train", title: str = ""
) -> Path:
    """``split`` accuracy (mean +- std over seeds, percent) against the learning rate (log
    scale), one line per variant. Each row needs ``lr``, ``variant``, ``<split>_mean`` and
    ``<split>_std``."""
    if not rows:
        raise ValueError("plot_lr_sweep needs at least one result row")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.6), constrained_layout=True)
    for variant in sorted({str(r["variant"]) for r in rows}):
        line = sorted((r for r in rows if r["variant"] == variant), key=lambda r: float(r["lr"]))
        std = [
            100 * float(r[f"{split}_std"]) if math.isfinite(r[f"{split}_std"]) else 0.0
            for r in line
        ]
        ax.errorbar([float(r["lr"]) for r in line], [100 * float(r[f"{split}_mean"]) for r in line],
                    yerr=std, marker="o", capsize=3, color=VARIANT_COLORS.get(variant), label=variant)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, plt, path)


def _color_for(name: str, index: int) -> str:
    for variant, color in VARIANT_COLORS.items():
        if name.startswith(variant):
            return color
    return CLASS_COLORS[index % len(CLASS_COLORS)]


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
