r"""Layer-parallel lifted training on ``torch.distributed``, and its 2-D grid with
data-parallel replicas.

The lifted energy decouples the layers: in the simultaneous (Jacobi) step every block is
updated from the previous iterate and needs only its neighbours' activations. With
:math:`P = G \times R` processes, rank :math:`r = \rho G + g` belongs to layer group
:math:`g` of replica :math:`\rho`. Layer group :math:`g` owns a contiguous range of layers
:math:`s..e` (balanced by their weight count): the parameters :math:`\Theta_l` and the
auxiliary variables :math:`x_l` (the layer outputs) for :math:`l = s..e`. Per inner
iteration a rank exchanges with its neighbours only

- forward: its last hidden output :math:`x_e` (to the next group), and the previous
  group's :math:`x_{s-1}` (the input of its first layer);
- backward: :math:`g_s W_s` (the term of :math:`\nabla_{x_{s-1}} H` that layer :math:`s`
  contributes) and the power-iteration estimate of :math:`|W_s|_2^2` (the step size of
  :math:`x_{s-1}`), to the previous group,

by batched point-to-point ``isend``/``irecv`` (gloo on CPU, NCCL on GPU). The iterates equal
those of the single-process step to float round-off. Replicas of one layer group average
their parameters every ``sync_every`` updates (model averaging, equation 23) over their own
process group. At the end of an epoch every rank receives every layer's parameters (for
evaluation and checkpoints).

Step rules: ``simultaneous`` (Jacobi) and ``alternating`` (all :math:`\Theta` blocks, then
all :math:`X` blocks at the new :math:`\Theta`: one more backward exchange) parallelise over
layers; ``literal`` (Algorithm 1 read literally sweeps the layers one after another) does not
and is refused. Only the implicit stochastic solvers (``lbn-s``, ``lifted-quadratic``,
``mac-qp``) run layer-parallel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from bregnn.distributed import DistContext
from bregnn.lifted.losses import bregman_loss
from bregnn.lifted.network import LiftedNetwork, Params
from bregnn.lifted.solvers._step import gradient_step, warm_vectors
from bregnn.lifted.solvers.base import Solver, power_step, power_step_augmented
from bregnn.lifted.solvers.implicit import ImplicitLiftedBregman, ImplicitState

__all__ = [
    "PARALLEL_RULES",
    "LayerGrid",
    "average_replicas",
    "check_layer_parallel",
    "gather_params",
    "layer_grid",
    "layer_parallel_update",
    "partition_layers",
]

PARALLEL_RULES = ("simultaneous", "alternating")


def partition_layers(sizes: Sequence[int], groups: int) -> list[range]:
    """Contiguous ranges of the 0-based layers ``0..L-1`` for ``groups`` groups, balancing
    the weight counts :math:`n_{l-1} n_l` (the cost of a layer's products)."""
    costs = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    n = len(costs)
    if not 1 <= groups <= n:
        raise ValueError(f"layer_groups must be in [1, {n}] for {n} layers; got {groups}")
    # exact minimax split by dynamic programming (n is small)
    prefix = [0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(groups + 1)]
    cut = [[0] * (n + 1) for _ in range(groups + 1)]
    best[0][0] = 0.0
    for g in range(1, groups + 1):
        for j in range(g, n + 1):
            for i in range(g - 1, j):
                value = max(best[g - 1][i], prefix[j] - prefix[i])
                if value < best[g][j]:
                    best[g][j], cut[g][j] = value, i
    bounds, j = [], n
    for g in range(groups, 0, -1):
        i = cut[g][j]
        bounds.append(range(i, j))
        j = i
    return bounds[::-1]


@dataclasses.dataclass
class LayerGrid:
    """This rank's place in the ``groups x replicas`` grid (see the module doc)."""

    groups: int
    replicas: int
    group: int
    replica: int
    layers: range
    prev: int | None
    next: int | None
    pipeline: Any  # the process group of this replica's layer groups
    data: Any  # the process group of this layer group's replicas
    owners: list[int]  # global rank (in this replica) owning each layer

    @property
    def first(self) -> bool:
        return self.prev is None

    @property
    def last(self) -> bool:
        return self.next is None


def layer_grid(network: LiftedNetwork, ctx: DistContext, groups: int) -> LayerGrid:
    """Build the grid of ``ctx.world_size`` ranks with ``groups`` layer groups (every rank
    must call this, in the same order, since it creates process groups)."""
    world = ctx.world_size
    if world % groups:
        raise ValueError(
            f"layer_groups {groups} must divide the number of processes {world} "
            "(P = layer groups x data-parallel replicas)"
        )
    ranges = partition_layers(network.sizes, groups)
    replicas = world // groups
    pipelines = [dist.new_group([r * groups + g for g in range(groups)]) for r in range(replicas)]
    datas = [dist.new_group([r * groups + g for r in range(replicas)]) for g in range(groups)]
    replica, group = divmod(ctx.rank, groups)
    base = replica * groups
    owners = [base + g for g, rng in enumerate(ranges) for _ in rng]
    return LayerGrid(
        groups, replicas, group, replica, ranges[group],
        base + group - 1 if group > 0 else None,
        base + group + 1 if group < groups - 1 else None,
        pipelines[replica], datas[group], owners,
    )  # fmt: skip


def check_layer_parallel(solver: Solver) -> None:
    """``ValueError`` unless ``solver`` can run layer-parallel."""
    if not isinstance(solver, ImplicitLiftedBregman):
        raise ValueError(
            f"method {solver.name!r} cannot run layer-parallel; layer groups need an implicit "
            "stochastic solver: lbn-s, lifted-quadratic or mac-qp"
        )
    rule = solver.config.step_rule
    if rule not in PARALLEL_RULES:
        raise ValueError(
            f"step_rule {rule!r} sweeps the layers one after another and cannot run with "
            f"layer groups > 1; use one of {list(PARALLEL_RULES)}"
        )
    if solver.config.inner_tol > 0:
        raise ValueError(
            f"inner_tol {solver.config.inner_tol!r} needs the whole batch energy after each "
            "inner iteration, which layer groups do not gather; use inner_tol 0 with layer groups > 1"
        )
    if getattr(solver.network, "residual", False):
        raise ValueError("residual lifted networks cannot run layer-parallel yet")
    if solver.network.convolutional:
        raise ValueError(
            "layer-parallel training supports dense networks (nn.Linear layers) only; "
            "convolution and pooling layers are not split across processes yet"
        )


def _exchange(sends: list[tuple[Tensor, int]], recvs: list[tuple[Tensor, int]]) -> None:
    """Batched point-to-point sends and receives; the tensors live on this rank's device
    (NCCL: its GPU; gloo: the CPU). Receive buffers are fresh (contiguous) tensors."""
    ops = [dist.P2POp(dist.isend, t.contiguous(), peer) for t, peer in sends]
    ops += [dist.P2POp(dist.irecv, t, peer) for t, peer in recvs]
    if ops:
        for work in dist.batch_isend_irecv(ops):
            work.wait()


def _boundary(aux: dict[int, Tensor], x_prev: Tensor, grid: LayerGrid, e: int) -> Tensor:
    """Send this group's last hidden output to the next group and receive the previous
    group's (the input of this group's first layer); ``x_prev`` is kept on the first."""
    received = x_prev if grid.first else torch.empty_like(x_prev)
    _exchange(
        [] if grid.last else [(aux[e], grid.next)],
        [] if grid.first else [(received, grid.prev)],
    )
    return received


def _hidden(network: LiftedNetwork, l: int) -> bool:
    return l < network.n_layers - 1


@torch.no_grad()
def layer_parallel_update(
    solver: ImplicitLiftedBregman, state: ImplicitState, x0: Tensor, y: Tensor, grid: LayerGrid
) -> ImplicitState:
    """One batch of LBN-S on this rank's layers (see the module doc): the same iterates as
    :meth:`ImplicitLiftedBregman.update` for the layers this rank owns."""
    net, pen, cfg = solver.network, solver.penalty, solver.config
    m, dtype, device = x0.shape[0], x0.dtype, x0.device
    own = grid.layers
    s, e = own.start, own.stop - 1
    weights, biases = list(state.params.weights), list(state.params.biases)
    anchor_w, anchor_b = list(weights), list(biases)
    w_vecs, x_vecs = list(state.w_vectors), list(state.x_vectors)
    acts = [*net.activations, net.output]
    lam = net.lambdas
    curv = [pen.curvature_z(a) for a in net.activations] + [1.0]

    def buffer(n: int) -> Tensor:
        return torch.empty(m, n, dtype=dtype, device=device)

    # forward pass through the pipeline: x_l = rho(z_l) for the own hidden layers
    x_prev = x0 if grid.first else buffer(net.sizes[s])
    if not grid.first:
        _exchange([], [(x_prev, grid.prev)])
    aux: dict[int, Tensor] = {}
    x = x_prev
    for l in own:
        z = torch.addmm(biases[l], x, weights[l].T)
        if _hidden(net, l):
            x = acts[l].rho(z)
            aux[l] = x
    if not grid.last:
        _exchange([(aux[e], grid.next)], [])
    if int(state.step) == 0:  # the first batch warms the input norms (see warm_vectors)
        inputs = {l: (x_prev if l == s else aux[l - 1]) for l in own}
        _, warmed = warm_vectors([], [x_vecs[l] for l in own], inputs=[inputs[l] for l in own])
        for l, v in zip(own, warmed, strict=True):
            x_vecs[l] = v
    input_sq = None
    if grid.first:
        vec0 = x_vecs[0]
        for _ in range(2):
            input_sq, vec0 = power_step_augmented(x0, vec0)
        x_vecs[0] = vec0
        input_sq = float(input_sq)
    tau = m / cfg.tau

    def residuals(ws, bs, x_in):
        """Own z_l and g_l = lambda_l grad_z h (output: rho_L(z_L) - y), and grad_x h."""
        inputs = {l: (x_in if l == s else aux[l - 1]) for l in own}
        gz, gx = {}, {}
        for l in own:
            z = torch.addmm(bs[l], inputs[l], ws[l].T)
            if _hidden(net, l):
                gxl, gzl = pen.grads(aux[l], z, acts[l])
                gx[l] = gxl if lam[l] == 1.0 else lam[l] * gxl
                gz[l] = gzl if lam[l] == 1.0 else lam[l] * gzl
            else:
                g = acts[l].rho(z) - y
                gz[l] = g if lam[l] == 1.0 else lam[l] * g
        return inputs, gz, gx

    def backward_exchange(ws, gz):
        """Send g_s W_s and |W_s|^2 to the previous group; receive the next group's."""
        sends, recvs = [], []
        down = sq_next = None
        if not grid.first:
            sq, w_vecs[s - 1] = power_step(ws[s], w_vecs[s - 1])
            sends += [(gz[s] @ ws[s], grid.prev), (sq.reshape(1).to(dtype), grid.prev)]
        if not grid.last and _hidden(net, e):
            down = buffer(net.sizes[e + 1])
            sq_next = torch.empty(1, dtype=dtype, device=device)
            recvs += [(down, grid.next), (sq_next, grid.next)]
        _exchange(sends, recvs)
        return down, sq_next

    def x_steps(ws, gz, gx, down, sq_next):
        new = {}
        for l in own:
            if not _hidden(net, l):
                continue
            if l < e:
                sq, w_vecs[l] = power_step(ws[l + 1], w_vecs[l])
                grad = torch.addmm(gx[l], gz[l + 1], ws[l + 1])
            else:
                sq, grad = sq_next[0], gx[l] + down
            t = cfg.step_scale / (lam[l] + lam[l + 1] * curv[l + 1] * float(sq))
            new[l] = net.prox_layer(l, torch.add(aux[l], grad, alpha=-t), t, pen)
        return new

    for _ in range(cfg.inner_iters):
        x_prev = _boundary(aux, x_prev, grid, e)
        inputs, gz, gx = residuals(weights, biases, x_prev)
        new_w, new_b = list(weights), list(biases)
        for l in own:
            if l == 0 and input_sq is not None:
                sq = input_sq
            else:
                sq_t, x_vecs[l] = power_step_augmented(inputs[l], x_vecs[l])
                sq = float(sq_t)
            t = cfg.step_scale / (lam[l] * curv[l] * sq + tau)
            gw, gb = gz[l].T @ inputs[l], gz[l].sum(0)
            w, b = weights[l], biases[l]
            new_w[l] = gradient_step(w, gw, t, tau, anchor_w[l])
            new_b[l] = gradient_step(b, gb, t, tau, anchor_b[l])
        if cfg.step_rule == "alternating":
            _, gz, gx = residuals(new_w, new_b, x_prev)
            down, sq_next = backward_exchange(new_w, gz)
            new_aux = x_steps(new_w, gz, gx, down, sq_next)
        else:
            down, sq_next = backward_exchange(weights, gz)
            new_aux = x_steps(weights, gz, gx, down, sq_next)
        weights, biases = new_w, new_b
        aux.update(new_aux)
    metrics = (
        _metrics(solver, weights, biases, aux, x_prev, x0, y, grid) if cfg.track else state.metrics
    )
    return ImplicitState(
        Params(tuple(weights), tuple(biases)), tuple(w_vecs), tuple(x_vecs), state.step + 1, metrics
    )


def _metrics(solver, weights, biases, aux, x_prev, x0, y, grid: LayerGrid) -> Tensor:
    """``[energy, loss, coupling_l.., consistency_l..]`` per sample (as
    :func:`~bregnn.lifted.solvers._step.batch_metrics`), summed over the pipeline."""
    net, pen = solver.network, solver.penalty
    x_prev = _boundary(aux, x_prev, grid, grid.layers.stop - 1)
    m, n_hidden = x0.shape[0], len(net.activations)
    parts = torch.zeros(2 + 2 * n_hidden, dtype=torch.float64, device=x0.device)
    for l in grid.layers:
        x_in = x_prev if l == grid.layers.start else aux[l - 1]
        z = torch.addmm(biases[l], x_in, weights[l].T)
        if l < n_hidden:
            act, x = net.activations[l], aux[l]
            value = pen.value(x, z, act)
            if pen.uses_psi:
                psi = act.psi(x)
                value = value + (psi.sum(-1) if act.separable else psi)
            parts[2 + l] = net.lambdas[l] * value.sum()
            if net.regularisers[l] is not None:
                parts[1] += net.regularisers[l].value(x).sum()  # counted in the energy only
            parts[2 + n_hidden + l] = (x - act.rho(z)).norm(dim=-1).mean() * m
        else:
            parts[0] = net.lambdas[-1] * bregman_loss(y, z, net.output).sum()
    dist.all_reduce(parts, group=grid.pipeline)
    loss, reg = parts[0], parts[1]
    coupling = parts[2 : 2 + n_hidden]
    energy = loss + reg + coupling.sum()
    values = torch.cat([torch.stack([energy, loss]), coupling, parts[2 + n_hidden :]]) / m
    return values.to(weights[0].dtype)


def gather_params(params: Params, grid: LayerGrid) -> Params:
    """Every layer's parameters from its owner (within this replica) on every rank."""
    weights, biases = list(params.weights), list(params.biases)
    for l, owner in enumerate(grid.owners):
        w, b = weights[l].contiguous().clone(), biases[l].contiguous().clone()
        dist.broadcast(w, src=owner, group=grid.pipeline)
        dist.broadcast(b, src=owner, group=grid.pipeline)
        weights[l], biases[l] = w, b
    return Params(tuple(weights), tuple(biases))


def average_replicas(params: Params, grid: LayerGrid) -> Params:
    """Model averaging of this rank's own layers over the replicas of its layer group."""
    if grid.replicas == 1:
        return params
    weights, biases = list(params.weights), list(params.biases)
    own = list(grid.layers)
    flat = torch.cat([t.reshape(-1) for l in own for t in (weights[l], biases[l])])
    dist.all_reduce(flat, group=grid.data)
    flat /= grid.replicas
    start = 0
    for l in own:
        for tensors in (weights, biases):
            t = tensors[l]
            tensors[l] = flat[start : start + t.numel()].view_as(t).clone()
            start += t.numel()
    return Params(tuple(weights), tuple(biases))
