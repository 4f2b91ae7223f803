"""Layer-parallel and data-parallel LBN-S: wall time of one epoch with 2 processes vs 1.

One LBN-S epoch (simultaneous step, N = 15, batch 256) on a deep network 784-[512]x8-10 and
synthetic MNIST-sized data (``--samples`` x 784, labels from a random teacher), run three
ways, each process with one thread: one process; 2 processes as 2 layer groups
(``layer_groups=2``); 2 processes as 2 data-parallel replicas (model averaging at the end of
the epoch). Prints the wall times, the speed-ups over one process and the share of the
parallel runs' time spent in communication (point-to-point exchanges, averaging), and the
load average (measure on an idle machine).

``--device cuda`` runs every process on a GPU (rank ``r`` on ``cuda:r``, so the parallel
runs need two GPUs) with NCCL, and prints the GPU's name; the clocks wait for the GPU
(``torch.cuda.synchronize``) before they are read. The data are drawn on the CPU from the
seed and moved, so every device trains on the same numbers.

    PYTHONPATH=src python benchmarks/bench_lifted_parallel.py --samples 6400
    PYTHONPATH=src python benchmarks/bench_lifted_parallel.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from bregnn import distributed
from bregnn.lifted import LiftedNetwork, make_solver, one_hot, parallel, run_epoch
from bregnn.utils import add_device_argument, pick_device

SIZES = (784, *[512] * 8, 10)


def _problem(samples: int, device: torch.device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same data on every device
    net = LiftedNetwork(SIZES, "relu")
    teacher = net.init_params(gen)
    x0 = torch.rand(samples, SIZES[0], generator=gen)
    _, z = net.forward(teacher, x0)
    y = one_hot(z.argmax(-1), SIZES[-1])
    return net, net.init_params(gen, device=device), x0.to(device), y.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _solver(net, args):
    return make_solver("lbn-s", net, batch_size=args.batch, inner_iters=args.inner, tau=100.0)


def _timed(module, name: str, clock: list[float]) -> None:
    """Wrap ``module.name`` to add its wall time to ``clock[0]``."""
    inner = getattr(module, name)

    def wrapper(*a, **k):
        tic = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            clock[0] += time.perf_counter() - tic

    setattr(module, name, wrapper)


def _single(args) -> float:
    torch.set_num_threads(1)
    device = pick_device(args.device)
    net, params, x0, y = _problem(args.samples, device)
    solver = _solver(net, args)
    state = solver.init_state(params, x0, y)
    _sync(device)
    tic = time.perf_counter()
    run_epoch(solver, state, x0, y, torch.Generator().manual_seed(0))
    _sync(device)
    return time.perf_counter() - tic


def _worker(rank: int, mode: str, init_method: str, out: str, args) -> None:
    torch.set_num_threads(1)
    cuda = pick_device(args.device).type == "cuda"
    ctx = distributed.init_process(
        rank, 2, init_method=init_method, backend="nccl" if cuda else "gloo",
        device="cuda" if cuda else "cpu", local_rank=rank,
    )  # fmt: skip
    net, params, x0, y = _problem(args.samples, ctx.device)
    solver = _solver(net, args)
    state = solver.init_state(params, x0, y)
    clock = [0.0]
    grid = None
    if mode == "layers":
        grid = parallel.layer_grid(net, ctx, 2)
        _timed(parallel, "_exchange", clock)
        _timed(parallel, "gather_params", clock)
    else:
        _timed(distributed, "average", clock)
        _timed(distributed, "all_sum", clock)
    _sync(ctx.device)
    distributed.barrier(ctx)
    tic = time.perf_counter()
    run_epoch(solver, state, x0, y, torch.Generator().manual_seed(0), ctx, None, grid)
    _sync(ctx.device)
    distributed.barrier(ctx)
    wall = time.perf_counter() - tic
    torch.save({"wall": wall, "comm": clock[0]}, f"{out}/rank{rank}.pt")
    distributed.cleanup()


def _parallel(mode: str, args) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(mode, f"file://{tmp}/rendezvous", tmp, args), nprocs=2, join=True)
        results = [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(2)]
    wall = max(r["wall"] for r in results)
    comm = sum(r["comm"] for r in results) / len(results)
    return wall, comm / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6400)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--inner", type=int, default=15)
    add_device_argument(parser, default="cpu")
    args = parser.parse_args()
    try:
        device = pick_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    if device.type == "cuda":
        if torch.cuda.device_count() < 2:
            parser.error(
                f"--device {args.device}: the parallel runs put the 2 processes on 2 GPUs; "
                f"this machine has {torch.cuda.device_count()}"
            )
        names = {torch.cuda.get_device_name(i) for i in range(2)}
        print(f"device: CUDA, GPUs 0 and 1: {', '.join(sorted(names))}; NCCL")
    else:
        print("device: CPU, one thread per process; gloo")
    load = os.getloadavg()
    print(
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores"
    )
    print(
        f"network {'-'.join(map(str, SIZES))}, {args.samples} samples, batch {args.batch}, N {args.inner}"
    )
    print(f"layer groups: {[list(r) for r in parallel.partition_layers(SIZES, 2)]}")
    single = _single(args)
    layers, layer_comm = _parallel("layers", args)
    data, data_comm = _parallel("data", args)
    print(f"1 process, 1 thread:            {single:7.2f} s")
    print(
        f"layer-parallel, 2 processes:    {layers:7.2f} s  speed-up {single / layers:.2f}x  communication {100 * layer_comm:.1f}%"
    )
    print(
        f"data-parallel, 2 processes:     {data:7.2f} s  speed-up {single / data:.2f}x  communication {100 * data_comm:.1f}%"
    )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
