r"""The one lifted training loop: :func:`fit` trains your own ``nn.Sequential`` (or a
:class:`~bregnn.lifted.network.LiftedNetwork`) with any registered method.

Per epoch it runs :func:`run_epoch` (one pass over the data: a fresh permutation cut into
mini-batches, one solver update each; ``inner_iters`` updates on the whole data for the
full-batch methods), evaluates the trained weights by a plain forward pass on the training
and validation data, logs one row, and with ``out`` writes ``metrics.csv``, an atomic
``checkpoint.pt`` (``resume=True`` continues bit-for-bit), ``model.pt`` and ``summary.json``.

**Data-parallel training** (model averaging, the paper's equation 23) happens by itself when
``torch.distributed`` is initialised (``torchrun``): every rank draws the same permutation,
takes its contiguous part (:func:`bregnn.distributed.shard`) of each global batch of
``batch_size * world_size`` samples (global batches smaller than the number of ranks are
skipped), updates its own state, and the parameters are averaged over the ranks every
``sync_every`` updates (default: at the end of the epoch). Full-batch methods keep one fixed
shard per rank. Auxiliary variables and power-iteration vectors stay local; rank 0 evaluates,
logs and saves ``checkpoint.pt``, rank ``r > 0`` saves its own ``checkpoint.rank<r>.pt``.

**Devices.** Training runs on the device of the model's parameters (``device=`` moves the
model there first); the data are moved to it once, so the training and validation sets must
fit in its memory beside the solver's state (MNIST-sized data take a few hundred MB).
Checkpoints and ``model.pt`` are written from CPU copies and loaded onto the CPU, so a run
resumes on another device (``device`` may change on resume). Under an NCCL process group
every rank trains on its own GPU (:func:`bregnn.distributed.context`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from bregnn import distributed
from bregnn.activations import Identity
from bregnn.distributed import DistContext
from bregnn.lifted.losses import bregman_loss
from bregnn.lifted.network import LiftedNetwork, Params, forward_objective, one_hot
from bregnn.lifted.parallel import (
    LayerGrid,
    average_replicas,
    check_layer_parallel,
    gather_params,
    layer_grid,
    layer_parallel_update,
)
from bregnn.lifted.solvers import (
    SOLVERS,
    Solver,
    make_solver,
    move_state,
    state_from_dict,
    state_to_dict,
)
from bregnn.runs import (
    CSVLogger,
    RunError,
    load_checkpoint,
    prepare_run_ranks,
    save_checkpoint,
    write_json,
)
from bregnn.utils import pick_device, seed_everything
from bregnn.utils import progress as progress_bar

__all__ = [
    "LiftedResult",
    "evaluate_classifier",
    "evaluate_regression",
    "fit",
    "run_epoch",
]

CHECKPOINT_KIND = "lifted"
Evaluate = Callable[[LiftedNetwork, Params, Tensor, Tensor], dict[str, float]]


@dataclasses.dataclass
class LiftedResult:
    """What :func:`fit` returns.

    Attributes:
        module: the trained ``nn.Sequential`` (the layer classes and shapes of the model
            given to :func:`fit`); evaluation is its plain forward pass.
        network: the :class:`~bregnn.lifted.network.LiftedNetwork`.
        params: the trained :class:`~bregnn.lifted.network.Params`.
        history: one dict per epoch (the rows of ``metrics.csv``).
        state: the solver's final state.
        solver: the solver.
    """

    module: nn.Module
    network: LiftedNetwork
    params: Params
    history: list[dict[str, float]]
    state: NamedTuple
    solver: Solver


# -- one pass over the data ----------------------------------------------------------------------
def run_epoch(
    solver: Solver,
    state: NamedTuple,
    x0: Tensor,
    y: Tensor,
    generator: torch.Generator,
    ctx: DistContext | None = None,
    sync_every: int | None = None,
    grid: LayerGrid | None = None,
) -> tuple[NamedTuple, dict[str, float]]:
    """One pass of ``solver`` over ``(x0, y)``; returns the state and the metrics of the
    updates, weighted by their batch sizes (full-batch methods: those of the last update).
    With several ranks see the module doc (``sync_every``: updates between averages); with a
    layer ``grid`` (:mod:`bregnn.lifted.parallel`) this rank updates its own layers."""
    ctx = ctx or DistContext()
    world = ctx.world_size
    if isinstance(getattr(solver, "network", None), LiftedNetwork):
        solver.network.check_data(x0, y)
    if sync_every is not None and not (isinstance(sync_every, int) and sync_every >= 1):
        raise ValueError(f"sync_every must be a positive integer or None; got {sync_every!r}")
    n = x0.shape[0]
    if grid is not None:
        return _layer_parallel_epoch(solver, state, x0, y, generator, ctx, sync_every, grid)
    if solver.full_batch:
        part = None if world == 1 else distributed.shard(torch.arange(n), ctx.rank, world)
        batches = [part] * solver.updates_per_batch()
    else:
        size = solver.config.batch_size * world
        batches = solver.batches(n, generator, size)
        if world > 1:
            batches = [distributed.shard(b, ctx.rank, world) for b in batches if len(b) >= world]
    if solver.full_batch:
        part = batches[0]
        state = solver.start_epoch(state, *((x0, y) if part is None else (x0[part], y[part])))
    names = solver.metric_names()
    total = torch.zeros(len(names), dtype=torch.float64, device=x0.device)
    count = 0
    for step, idx in enumerate(batches, start=1):
        xb, yb = (x0, y) if idx is None else (x0[idx], y[idx])
        state = solver.update(state, xb, yb)
        if world > 1 and sync_every is not None and step % sync_every == 0:
            state = _averaged(state, ctx)
        if not solver.full_batch or step == len(batches):
            weight = xb.shape[0]
            if solver.full_batch:
                total.zero_()
                count = 0
            total += state.metrics.detach().to(total.device, torch.float64) * weight
            count += weight
    if world > 1:
        if sync_every is None or len(batches) % sync_every != 0:
            state = _averaged(state, ctx)
        sums = distributed.all_sum([*total.tolist(), float(count)], ctx)
        total, count = torch.tensor(sums[:-1], dtype=torch.float64), sums[-1]
    return state, dict(zip(names, (total / max(count, 1)).tolist(), strict=True))


def _layer_parallel_epoch(solver, state, x0, y, generator, ctx, sync_every, grid: LayerGrid):
    """:func:`run_epoch` on a layer grid: the replicas share each global batch, the layer
    groups of a replica pipeline it (see :mod:`bregnn.lifted.parallel`)."""
    reps = grid.replicas
    batches = solver.batches(x0.shape[0], generator, solver.config.batch_size * reps)
    batches = [distributed.shard(b, grid.replica, reps) for b in batches if len(b) >= reps]
    names = solver.metric_names()
    total = torch.zeros(len(names), dtype=torch.float64, device=x0.device)
    count = 0
    for step, idx in enumerate(batches, start=1):
        state = layer_parallel_update(solver, state, x0[idx], y[idx], grid)
        if reps > 1 and sync_every is not None and step % sync_every == 0:
            state = state._replace(params=average_replicas(state.params, grid))
        total += state.metrics.detach().to(total.device, torch.float64) * len(idx)
        count += len(idx)
    if reps > 1 and (sync_every is None or len(batches) % sync_every != 0):
        state = state._replace(params=average_replicas(state.params, grid))
    state = state._replace(params=gather_params(state.params, grid))
    # every rank of a replica holds the same sums: the ratio over all ranks is the mean
    sums = distributed.all_sum([*total.tolist(), float(count)], ctx)
    total, count = torch.tensor(sums[:-1], dtype=torch.float64), sums[-1]
    return state, dict(zip(names, (total / max(count, 1)).tolist(), strict=True))


def _averaged(state: NamedTuple, ctx: DistContext) -> NamedTuple:
    p = state.params
    flat = distributed.average([*p.weights, *p.biases], ctx)
    n = len(p.weights)
    return state._replace(params=Params(tuple(flat[:n]), tuple(flat[n:])))


# -- evaluation ----------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_classifier(
    network: LiftedNetwork, params: Params, x0: Tensor, labels: Tensor
) -> dict[str, float]:
    """``accuracy`` of the plain forward pass and ``linear_l``, the fraction of units of
    hidden layer ``l`` acting linearly (the paper's Table 2)."""
    scores = network.evaluate(params, x0, labels)
    out = {"accuracy": scores["accuracy"]}
    out.update({f"linear_{l}": v for l, v in enumerate(scores["linear"], start=1)})
    return out


@torch.no_grad()
def evaluate_regression(
    network: LiftedNetwork,
    params: Params,
    x0: Tensor,
    target: Tensor,
    sparsity_layers: Sequence[int] | None = None,
    chunk: int = 4096,
) -> dict[str, float]:
    r"""By plain forward passes: ``objective`` (the per-sample training objective
    :func:`~bregnn.lifted.network.forward_objective`), ``loss`` (the output loss
    :math:`B_{\Psi_L}(y, z_L)` per sample, :math:`\tfrac12|z_L - y|^2` for MSE), ``mse`` (per
    entry) and, per hidden layer ``l`` of ``sparsity_layers`` (default: those with a
    regulariser), its percentage of exact zeros: ``sparsity`` for one layer,
    ``sparsity_l`` for several."""
    if sparsity_layers is None:
        sparsity_layers = [l for l, r in enumerate(network.regularisers, start=1) if r]
    n = x0.shape[0]
    objective = loss = sq = 0.0
    zeros = [0.0] * len(sparsity_layers)
    for start in range(0, n, chunk):
        xb, yb = x0[start : start + chunk], target[start : start + chunk]
        hidden, z_out = network.forward(params, xb)
        diff = (z_out - yb).double()
        sq += float((diff * diff).sum())
        if not isinstance(network.output, Identity):
            loss += float(bregman_loss(yb, z_out, network.output).double().sum())
        objective += float(forward_objective(network, params, xb, yb).double().sum())
        for i, l in enumerate(sparsity_layers):
            zeros[i] += float((hidden[l - 1] == 0).sum())
    if isinstance(network.output, Identity):
        loss = 0.5 * sq
    out = {"objective": objective / n, "loss": loss / n, "mse": sq / (n * target.shape[1])}
    for i, l in enumerate(sparsity_layers):
        key = "sparsity" if len(sparsity_layers) == 1 else f"sparsity_{l}"
        out[key] = 100.0 * zeros[i] / (n * network.sizes[l])
    return out


# -- the loop --------------------------------------------------------------------------------------
def fit(
    model: nn.Module | LiftedNetwork,
    x: Tensor,
    y: Tensor,
    *,
    method: str = "lbn-s",
    epochs: int = 10,
    batch_size: int | None = None,
    seed: int = 0,
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    evaluate: Evaluate | None = None,
    val_name: str = "val",
    sync_every: int | None = None,
    layer_groups: int = 1,
    until: Callable[[dict[str, float]], bool] | None = None,
    run_config: Mapping[str, Any] | None = None,
    desc: str | None = None,
    device: str | torch.device | None = None,
    **settings: Any,
) -> LiftedResult:
    """Train ``model`` without backpropagation (or with a backprop baseline) by ``method``.

    Args:
        model: an ``nn.Sequential`` of affine layers (``nn.Linear``, ``nn.Conv2d``, with
            ``nn.AvgPool2d`` and ``nn.Flatten`` folded in) separated by activation modules
            (see :meth:`LiftedNetwork.from_module`; training starts from its weights, on
            their device), or a :class:`LiftedNetwork` (Glorot initialisation from ``seed``,
            drawn on the CPU: the same weights on every device).
        x: training inputs (rows are samples), on any device: they are moved to the
            training device once (with the targets and the validation data).
        y: ``int64`` class indices (classification: one-hot targets, the MSE or softmax
            output loss of the network, as in the paper) or a float target tensor
            (regression, autoencoders).
        method: a registered method (``bregnn.lifted.available_solvers()``).
        epochs: total number of epochs (a resumed run continues up to it).
        batch_size: samples per mini-batch (default: the method's; full-batch methods
            take none).
        seed: seeds the batch order (and the initialisation of a ``LiftedNetwork``).
        x_val, y_val: evaluated after every epoch as ``<val_name>_*`` columns.
        out: run directory (``metrics.csv``, ``checkpoint.pt``, ``model.pt``,
            ``summary.json``, ``config.json``); an existing run is refused unless
            ``resume`` (settings must match, see :func:`bregnn.runs.prepare_run`) or
            ``overwrite``.
        progress: a progress bar on a terminal; one line per epoch otherwise.
        evaluate: ``evaluate(network, params, x, y) -> dict`` of metrics (default
            :func:`evaluate_classifier` or :func:`evaluate_regression`).
        val_name: prefix of the validation columns.
        sync_every: data-parallel runs: updates between parameter averages.
        layer_groups: under ``torch.distributed``, split the layers into this many groups,
            one per process, and the processes into ``world_size / layer_groups``
            data-parallel replicas (:mod:`bregnn.lifted.parallel`).
        until: stop after the first epoch whose row (see ``history``) satisfies
            ``until(row)``, e.g. ``lambda r: r["val_accuracy"] >= 0.85``.
        run_config: extra entries for ``config.json`` (e.g. the data set's name).
        desc: label of the progress output (default: ``method``).
        device: train there (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``):
            an ``nn.Module`` is moved there (``model.to(device)``, in place), a
            ``LiftedNetwork``'s initial weights are put there. ``None`` keeps the module's
            device (a ``LiftedNetwork``: the CPU), except under an NCCL process group, where
            it is this rank's GPU. ``result.module`` lives on the training device.
        **settings: the method's settings (fields of its ``Config``); an unknown one
            raises ``ValueError`` listing the valid ones.

    Raises:
        ValueError: bad data, model or settings; ``bregnn.runs.RunError`` for run
            directories that would mix two runs.
        FloatingPointError: the training diverged (the message names the setting to lower).
    """
    if not (isinstance(epochs, int) and epochs > 0):
        raise ValueError(f"epochs must be a positive integer; got {epochs!r}")
    spec = SOLVERS.get(method)
    method = SOLVERS.key(method)
    if batch_size is not None:
        if spec.solver.full_batch:
            raise ValueError(f"method {method!r} is full-batch: it takes no batch_size")
        settings["batch_size"] = batch_size
    ctx = distributed.context()
    device = _training_device(device, ctx)
    if isinstance(model, LiftedNetwork):
        network = model
        params0 = network.init_params(torch.Generator().manual_seed(seed), device=device)
    elif isinstance(model, nn.Module):
        if device is not None:
            model.to(device)
        shape = tuple(x.shape[1:]) if isinstance(x, Tensor) else None
        network = LiftedNetwork.from_module(model, input_shape=shape)
        params0 = network.params_from_module()
    else:
        raise ValueError(f"model must be an nn.Sequential or a LiftedNetwork; got {type(model)}")
    solver = make_solver(method, network, **settings)
    dtype, device = params0.weights[0].dtype, params0.weights[0].device
    classify = not torch.is_floating_point(y)
    x, target = _prepare(network, x, y, classify, "training", dtype, device)
    evaluate = evaluate or (evaluate_classifier if classify else evaluate_regression)
    splits = {"train": (x, y.to(device) if classify else target)}
    if (x_val is None) != (y_val is None):
        raise ValueError("give both x_val and y_val, or neither")
    if x_val is not None:
        xv, tv = _prepare(network, x_val, y_val, classify, "validation", dtype, device)
        splits[val_name] = (xv, y_val.to(device) if classify else tv)

    grid = None
    if not (isinstance(layer_groups, int) and layer_groups >= 1):
        raise ValueError(f"layer_groups must be a positive integer; got {layer_groups!r}")
    if layer_groups > 1:
        check_layer_parallel(solver)
        if not ctx.initialized:
            raise ValueError(
                f"layer_groups {layer_groups} needs a torch.distributed process group "
                f"(start with torchrun --nproc_per_node {layer_groups} ...)"
            )
        if device.type == "cuda" and ctx.device.type != "cuda":
            raise ValueError(
                f"layer_groups {layer_groups} on {str(device)!r} needs the nccl backend (gloo "
                "sends and receives CPU tensors only); use --backend nccl or train on the CPU"
            )
        grid = layer_grid(network, ctx, layer_groups)
    config = {
        "method": method,
        **dataclasses.asdict(solver.config),
        "network": repr(network),
        "seed": seed,
        "epochs": epochs,
        "task": "classification" if classify else "regression",
        "train_samples": int(x.shape[0]),
        "val_samples": int(x_val.shape[0]) if x_val is not None else 0,
        "world_size": ctx.world_size,
        "sync_every": sync_every,
        "layer_groups": layer_groups,
        "device": str(device),
        **(run_config or {}),
    }
    run_dir = Path(out) if out is not None else None
    generator = seed_everything(seed)
    state, history, start = None, [], 0
    if run_dir is not None:
        resuming = prepare_run_ranks(run_dir, config, ctx, resume=resume, overwrite=overwrite)
        ckpt_path = run_dir / ("checkpoint.pt" if ctx.is_main else f"checkpoint.rank{ctx.rank}.pt")
        if resuming and ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path, kind=CHECKPOINT_KIND)
            try:
                state = state_from_dict(solver.State, ckpt["state"])
                network.check_params(solver.params(state))
                state = move_state(state, device)  # saved on the CPU; may resume elsewhere
            except (ValueError, KeyError, TypeError) as err:
                raise RunError(
                    f"checkpoint {ckpt_path} does not fit this {method} run ({err}); "
                    "start a new run with another out directory, or overwrite"
                ) from None
            generator.set_state(ckpt["generator"])
            start, history = int(ckpt["epoch"]), [dict(r) for r in ckpt["history"]]
    if state is None:
        state = solver.init_state(params0, x, target)
    logger = None
    if run_dir is not None and ctx.is_main:
        logger = CSVLogger(run_dir / "metrics.csv", resume=start > 0, keep_rows=start)

    bar = progress_bar(range(start, epochs), desc=desc or method, enable=progress and ctx.is_main)
    for epoch in bar:
        tic = time.perf_counter()
        try:
            state, metrics = run_epoch(solver, state, x, target, generator, ctx, sync_every, grid)
        except FloatingPointError as err:
            raise FloatingPointError(f"{method}, epoch {epoch + 1}: {err}") from None
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the epoch's time includes its queued kernels
        elapsed = time.perf_counter() - tic
        if not getattr(solver.config, "track", True):  # the batch diagnostics were not
            metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}  # computed: NaN
        _check_finite(solver, state, metrics, epoch + 1)
        row: dict[str, float] = {"epoch": epoch + 1}
        if ctx.is_main:
            params = solver.params(state)
            for name, (xs, ts) in splits.items():
                row.update({f"{name}_{k}": v for k, v in evaluate(network, params, xs, ts).items()})
        row.update({f"batch_{k}": v for k, v in metrics.items()})
        row["epoch_time_s"] = elapsed
        history.append(row)
        if logger is not None:
            logger.log(row)
        if run_dir is not None:
            save_checkpoint(
                {
                    "epoch": epoch + 1,
                    "method": method,
                    "state": state_to_dict(move_state(state, "cpu")),
                    "generator": generator.get_state(),
                    "history": history,
                },
                ckpt_path,
                kind=CHECKPOINT_KIND,
            )
        bar.set_postfix_str(_summary_text(row))
        if until is not None and until(row):
            break
    params = solver.params(state)
    module = network.to_module(params)
    if run_dir is not None and ctx.is_main and history:
        from bregnn.runs import atomic_save

        atomic_save({k: v.cpu() for k, v in module.state_dict().items()}, run_dir / "model.pt")
        write_json(
            {
                **history[-1],
                "method": method,
                "epochs_run": len(history),
                "train_seconds": math.fsum(r["epoch_time_s"] for r in history),
                "solver": repr(solver),
            },
            run_dir / "summary.json",
        )
    return LiftedResult(module, network, params, history, state, solver)


def _training_device(device: str | torch.device | None, ctx: DistContext) -> torch.device | None:
    """The device ``fit`` trains on (``None``: the model's own); see ``fit``'s ``device``."""
    if device is not None:
        device = pick_device(str(device))
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    if ctx.initialized and ctx.device.type == "cuda":  # NCCL: this rank's own GPU
        if device is not None and device != ctx.device:
            raise ValueError(
                f"device {str(device)!r}: under NCCL rank {ctx.rank} trains on its own GPU "
                f"{str(ctx.device)!r}; pass device=None (or that GPU)"
            )
        torch.cuda.set_device(ctx.device)  # NCCL works on the current device
        return ctx.device
    return device


def _prepare(
    network: LiftedNetwork,
    x: Tensor,
    y: Tensor,
    classify: bool,
    what: str,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Flattened inputs and float targets on the parameters' dtype and device; clear errors
    for data that do not fit the network or are not finite."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ValueError(f"{what} inputs and targets must be tensors")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what} data: {x.shape[0]} inputs but {y.shape[0]} targets")
    if x.shape[0] == 0:
        raise ValueError(f"{what} data is empty")
    x = x.flatten(1) if network.flatten or x.ndim > 2 else x
    x = x.to(device=device, dtype=dtype)
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(
            f"{what} inputs contain {bad} non-finite values (NaN or inf): clean the data"
        )
    n_out = network.sizes[-1]
    if classify:
        if y.ndim != 1:
            raise ValueError(f"{what} class labels must be 1-D int64; got shape {tuple(y.shape)}")
        if int(y.min()) < 0 or int(y.max()) >= n_out:
            raise ValueError(
                f"{what} labels span {int(y.min())}..{int(y.max())} but the network has "
                f"{n_out} outputs (layers {list(network.sizes)})"
            )
        target = one_hot(y.to(device), n_out, dtype)
    else:
        target = y.to(device=device, dtype=dtype)
        bad = int((~torch.isfinite(target)).sum())
        if bad:
            raise ValueError(f"{what} targets contain {bad} non-finite values: clean the data")
    network.check_data(x, target)
    return x, target


def _check_finite(solver: Solver, state: NamedTuple, metrics: dict[str, float], epoch: int):
    params = solver.params(state)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if not all(bool(torch.isfinite(t).all()) for t in (*params.weights, *params.biases)):
        bad.insert(0, "weights")
    if not bad:
        return
    setting = solver.divergence_setting
    fields = {f.name for f in dataclasses.fields(solver.config)}
    hint = (
        f"lower {setting} (now {getattr(solver.config, setting)})"
        if setting in fields
        else "lower the step sizes"
    )
    raise FloatingPointError(
        f"{solver.name} diverged in epoch {epoch}: {', '.join(bad)} not finite; {hint}"
    )


def _summary_text(row: Mapping[str, float]) -> str:
    keys = [
        k
        for k in row
        if k.endswith(("_accuracy", "_objective")) or k in ("batch_energy", "batch_loss")
    ]
    keys += [k for k in row if k.endswith("_loss") and not k.startswith("batch_")]
    parts = [f"epoch {int(row['epoch'])}"]
    parts += [f"{k} {row[k]:.4g}" for k in dict.fromkeys(keys)]
    parts.append(f"{row['epoch_time_s']:.1f}s")
    return " ".join(parts)
