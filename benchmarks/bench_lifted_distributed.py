"""Data-parallel LBN-S: wall time of one epoch with 2 processes vs 1 (model averaging, gloo).

Both runs see the same data (synthetic, MNIST-sized inputs: ``--samples`` x 784, targets
from a random teacher) and the same network; the 2-process run gives each rank half of the
samples and averages the parameters every ``--sync-every`` batches (and at the end). The
baseline, measured in the same run, is one process with one thread over all samples; a
single process with two threads is printed too. Speed-up = baseline time / time.

    PYTHONPATH=src python benchmarks/bench_lifted_distributed.py --samples 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bregnn.lifted import LiftedNetwork, make_solver, one_hot
from bregnn.lifted.distributed import data_parallel_epoch, init_distributed, shard


def _problem(samples: int, sizes: tuple[int, ...], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    net = LiftedNetwork(sizes, "relu")
    teacher = net.init_params(gen)
    x0 = torch.rand(samples, sizes[0], generator=gen)
    _, z = net.forward(teacher, x0)
    y = one_hot(z.argmax(-1), sizes[-1])
    return net, net.init_params(gen), x0, y


def _single(samples: int, sizes, batch: int, inner: int, threads: int) -> float:
    torch.set_num_threads(threads)
    net, params, x0, y = _problem(samples, sizes)
    solver = make_solver("lbn-s", net, batch_size=batch, inner_iters=inner, tau=100.0)
    state = solver.init_state(params, x0, y)
    gen = torch.Generator().manual_seed(1)
    tic = time.perf_counter()
    solver.epoch(state, x0, y, gen)
    return time.perf_counter() - tic


def _worker(rank: int, world: int, init: str, out: str, samples, sizes, batch, inner, sync) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed("gloo", init_method=init, rank=rank, world_size=world)
    net, params, x0, y = _problem(samples, sizes)
    xs, ys = shard([x0, y], ctx)
    solver = make_solver("lbn-s", net, batch_size=batch, inner_iters=inner, tau=100.0)
    state = solver.init_state(params, xs, ys)
    gen = torch.Generator().manual_seed(1 + rank)
    dist.barrier()
    tic = time.perf_counter()
    data_parallel_epoch(solver, state, xs, ys, gen, ctx, sync_every=sync)
    elapsed = torch.tensor([time.perf_counter() - tic], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    if rank == 0:
        Path(out).write_text(f"{float(elapsed):.6f}")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[784, 256, 256, 10])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--inner-iters", type=int, default=15)
    parser.add_argument("--sync-every", type=int, default=1, help="batches between averages")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sizes = tuple(args.sizes)
    common = (args.samples, sizes, args.batch_size, args.inner_iters)
    base = min(_single(*common, threads=1) for _ in range(args.repeats))
    two_threads = min(_single(*common, threads=2) for _ in range(args.repeats))
    times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "time.txt"
            init = f"file://{Path(tmp) / 'rendezvous'}"
            mp.spawn(
                _worker, args=(2, init, str(out), *common, args.sync_every), nprocs=2, join=True
            )
            times.append(float(out.read_text()))
    two_procs = min(times)
    n_batches = args.samples // args.batch_size
    print(
        f"LBN-S, one epoch: {args.samples} samples, layers {list(sizes)}, batch "
        f"{args.batch_size}, N = {args.inner_iters}, {n_batches} batches "
        f"({n_batches // 2} per rank with 2 processes), averaging every {args.sync_every} batch(es)"
    )
    print(f"1 process, 1 thread   : {base:8.3f} s  (baseline)")
    print(f"1 process, 2 threads  : {two_threads:8.3f} s  speed-up {base / two_threads:5.2f}x")
    print(f"2 processes (gloo)    : {two_procs:8.3f} s  speed-up {base / two_procs:5.2f}x")


if __name__ == "__main__":
    main()
