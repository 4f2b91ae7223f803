"""Lifted training of the Fashion-MNIST CNN: time per epoch of LBN-S, lifted-quadratic and
SGD-BP, and the ratio of each lifted method to SGD-BP measured in the same run.

The network, settings and preprocessing are those of ``bregnn reproduce
lifted-cnn-fashion-mnist`` (:mod:`bregnn.experiments.lifted_cnn`): conv 5x5 (16) - ReLU -
avgpool 2 - conv 5x5 (32) - ReLU - avgpool 2 - linear 512 -> 10, batch 100, N = 15 inner
iterations, the reproduction's step rule, per-pixel centred images, float32, one thread. The
methods' epochs are interleaved within every repetition (so that load from other processes
hits all of them alike); each time is the median over the repetitions, wall-clock and CPU
time of this process, and the ratios to SGD-BP are the medians of the per-repetition
ratios. The load average is printed before and after: on a shared machine compare ratios,
not seconds. The first epoch of every method (it also warms the power iterations to
convergence) is not timed. The last column extrapolates the CPU time to the reproduction's
20 epochs on 60,000 images.

``--against SRC`` also loads a second copy of the library from the source tree ``SRC``
(e.g. ``src`` of a ``git worktree`` of an earlier commit) and times the two versions' LBN-S
and lifted-quadratic updates alternately on the same batches, in this process: the most
robust before/after ratio on a loaded machine. It reports the CPU-time ratio and whether the
two versions' parameters are still identical. (Imports that functions of the other copy do
at call time resolve to this copy; that is ``Solver.epoch``'s ``run_epoch``, not used here,
and ``Dense.theta_power_step``'s ``power_step_augmented``, identical in both.)

Usage: ``python benchmarks/bench_lifted_cnn.py [--samples 2000] [--repeats 3]
[--data-dir DIR] [--methods lbn-s lifted-quadratic sgd-bp] [--against OLD/src]``. Uses
Fashion-MNIST if found, else random images of the same shape.

Measured (with the alternating step rule, which the reproduction used then; it now uses the
blockwise rule, whose time per epoch is in docs/RESULTS.md) on the 2-core development
machine while two other training runs (and at times test suites) ran beside it, before /
after the conv fast paths of :mod:`bregnn.lifted.layers` (the first layer's convolution
remembered while its weights and input are unchanged, tiling average pooling and its adjoint
by strided slices, sums formed in place); both compute the same numbers bit for bit.

``--against`` a worktree of the commit before them, 1,000 images, load average 5.8-5.9::

    lbn-s             cpu this / other 0.825 (median per batch 0.802;   3.89 s /   4.72 s), parameters identical
    lifted-quadratic  cpu this / other 0.832 (median per batch 0.817;   3.29 s /   3.95 s), parameters identical

and against one three commits earlier (the commits between add device handling only),
load average 2.8-2.9::

    lbn-s             cpu this / other 0.823 (median per batch 0.818;   3.28 s /   3.98 s), parameters identical
    lifted-quadratic  cpu this / other 0.904 (median per batch 0.890;   3.57 s /   3.95 s), parameters identical

(one epoch of 1,000 images in separate processes, the two versions alternated four times,
load 2.8-5.3, median CPU seconds: LBN-S 4.64 before, 3.81 after (0.82); lifted-quadratic
4.25 before, 3.65 after (0.86).)

The epoch table, 2,000 images, 3 repetitions; before (load 3.0-4.7)::

    method             wall s   cpu s  cpu/sgd wall/sgd  cpu h, 20 epochs x 60k
    lbn-s               18.26    9.11    28.16    28.18                    1.52
    sgd-bp               0.64    0.32     1.00     1.00                    0.05
    lifted-quadratic    17.18    8.56    27.20    27.14                    1.43

after (load 4.4-4.8)::

    method             wall s   cpu s  cpu/sgd wall/sgd  cpu h, 20 epochs x 60k
    lbn-s               15.92    7.93    19.73    19.76                    1.32
    sgd-bp               0.90    0.45     1.00     1.00                    0.08
    lifted-quadratic    15.90    7.93    18.17    18.17                    1.32

SGD-BP's short epochs vary most under load (0.32 s and 0.45 s here), so the ratios to it
move more than the lifted methods' own times; the interleaved comparison above is the
measure of the change. With N = 15 inner iterations an LBN-S epoch now costs about 20
SGD-BP epochs: each alternating iteration is two forward passes (the first layer's only
once), both adjoints and two power steps, i.e. about 1.3 SGD-BP steps.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

import torch

import bench_lifted
from bregnn.data.centering import center
from bregnn.experiments.lifted_cnn import CNN_METHODS, IMAGE, lifted_cnn
from bregnn.lifted import make_solver
from bregnn.utils import default_data_dir

FULL_SAMPLES, EPOCHS = 60000, 20
LIFTED = ("lbn-s", "lifted-quadratic")


def _data(data_dir, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """bench_lifted's first ``n`` images (or its random stand-in), centred as the experiment
    centres them, as 1 x 28 x 28 maps."""
    x, y, source = bench_lifted._data(data_dir, n)
    (x,), _ = center(x, [], "pixel")
    return x.reshape(-1, *IMAGE), y, source


def _load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def _other_copy(src: str):
    """``(lifted_cnn module, bregnn.lifted)`` of a second copy of the library imported from
    the source tree ``src``; this copy's modules are put back afterwards."""
    ours = {k: m for k, m in sys.modules.items() if k == "bregnn" or k.startswith("bregnn.")}
    for k in ours:
        del sys.modules[k]
    sys.path.insert(0, os.path.abspath(src))
    try:
        experiment = importlib.import_module("bregnn.experiments.lifted_cnn")
        lifted = importlib.import_module("bregnn.lifted")
        if not experiment.__file__.startswith(os.path.abspath(src)):
            raise ValueError(f"--against {src}: imported {experiment.__file__} instead")
    finally:
        sys.path.remove(os.path.abspath(src))
        for k in [k for k in sys.modules if k == "bregnn" or k.startswith("bregnn.")]:
            del sys.modules[k]
        sys.modules.update(ours)
    return experiment, lifted


def _epoch_table(x, y, methods, repeats: int) -> None:
    runs = {}
    for name in methods:
        method, settings, _ = CNN_METHODS[name]
        net = lifted_cnn()
        solver = make_solver(method, net, **settings)
        state = solver.init_state(net.init_params(torch.Generator().manual_seed(0)), x, y)
        gen = torch.Generator().manual_seed(0)
        state, _ = solver.epoch(state, x, y, gen)  # untimed: warms the power iterations
        runs[name] = [solver, state, gen]
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    print(_load())
    for _ in range(repeats):
        for name, run in runs.items():
            solver, state, gen = run
            tic, tic_cpu = time.perf_counter(), time.process_time()
            run[1], _ = solver.epoch(state, x, y, gen)
            cpu[name].append(time.process_time() - tic_cpu)
            wall[name].append(time.perf_counter() - tic)
    print(_load())
    base = "sgd-bp" if "sgd-bp" in runs else None
    head = f"{'method':17s} {'wall s':>7s} {'cpu s':>7s} {'cpu/sgd':>8s} {'wall/sgd':>8s}"
    print(f"{head} {'cpu h, 20 epochs x 60k':>23s}")
    for name in runs:
        med_w, med_c = statistics.median(wall[name]), statistics.median(cpu[name])
        if base is not None:
            r_c = statistics.median(c / b for c, b in zip(cpu[name], cpu[base], strict=True))
            r_w = statistics.median(w / b for w, b in zip(wall[name], wall[base], strict=True))
            ratios = f"{r_c:8.2f} {r_w:8.2f}"
        else:
            ratios = f"{'-':>8s} {'-':>8s}"
        hours = med_c * FULL_SAMPLES / x.shape[0] * EPOCHS / 3600
        print(f"{name:17s} {med_w:7.2f} {med_c:7.2f} {ratios} {hours:23.2f}")


def _against(src: str, x, y, methods) -> None:
    """This version's and ``src``'s updates alternately on the same batches (one epoch,
    after one untimed batch); CPU-time ratio this / other."""
    other_experiment, other_lifted = _other_copy(src)
    print(f"against {os.path.abspath(src)}: updates alternated batch by batch")
    print(_load())
    for name in methods:
        method, settings, _ = CNN_METHODS[name]
        versions = {}
        for label, network, make in (
            ("this", lifted_cnn, make_solver),
            ("other", other_experiment.lifted_cnn, other_lifted.make_solver),
        ):
            net = network()
            solver = make(method, net, **settings)
            state = solver.init_state(net.init_params(torch.Generator().manual_seed(0)), x, y)
            versions[label] = [solver, state]
        cpu = {k: [] for k in versions}
        batches = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
        for i, idx in enumerate(batches.split(settings["batch_size"])):
            order = list(versions) if i % 2 == 0 else list(versions)[::-1]
            for label in order:
                solver, state = versions[label]
                tic = time.process_time()
                versions[label][1] = solver.update(state, x[idx], y[idx])
                if i > 0:
                    cpu[label].append(time.process_time() - tic)
        total = sum(cpu["this"]) / sum(cpu["other"])
        median = statistics.median(a / b for a, b in zip(cpu["this"], cpu["other"], strict=True))
        mine, theirs = (v[0].params(v[1]) for v in versions.values())
        same = all(
            torch.equal(a, b)
            for a, b in zip((*mine.weights, *mine.biases), (*theirs.weights, *theirs.biases))
        )
        print(
            f"{name:17s} cpu this / other {total:5.3f} (median per batch {median:5.3f}; "
            f"{sum(cpu['this']):6.2f} s / {sum(cpu['other']):6.2f} s), "
            f"parameters {'identical' if same else 'DIFFERENT'}"
        )
    print(_load())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(default_data_dir()))
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(CNN_METHODS), choices=CNN_METHODS)
    parser.add_argument("--against", metavar="SRC", help="source tree of another version")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y, source = _data(args.data_dir, args.samples)
    print(f"data: {source}, {x.shape[0]} samples of {tuple(x.shape[1:])}; {lifted_cnn()!r}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    if args.against:
        _against(args.against, x, y, [m for m in args.methods if m in LIFTED])
    if args.repeats > 0:
        _epoch_table(x, y, args.methods, args.repeats)


if __name__ == "__main__":
    main()
