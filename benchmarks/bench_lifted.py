"""Lifted Bregman training: time per epoch (LBN-S vs SGD-BP) and peak memory.

Prints

- seconds per epoch of LBN-S (N inner iterations) and of SGD-BP on the same subset, measured
  in the same process, and the ratio ``LBN-S epoch / (N x SGD-BP epoch)``;
- peak RSS of one LBN-S epoch (and, for contrast, one full-batch LBN-D update, which keeps
  X for every sample) on 10k and on 60k samples, each in a fresh subprocess (``VmHWM``,
  else ``resource.getrusage``), next to the RSS with the data loaded: LBN-S keeps the
  auxiliary variables X of one mini-batch only, so its growth in training does not scale
  with n.

Usage: ``python benchmarks/bench_lifted.py [--data-dir DIR] [--samples 10000] [--repeats 3]``.
Uses Fashion-MNIST if found, else random data of the same shape. One intra-op thread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from bregnn.data import load_vectors
from bregnn.lifted import LiftedNetwork, make_solver, one_hot
from bregnn.utils import default_data_dir


def _data(data_dir, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        x, labels = load_vectors("fashion-mnist", "train", data_dir)
        source = "fashion-mnist"
    except FileNotFoundError:
        gen = torch.Generator().manual_seed(0)
        x, labels = (
            torch.rand(60000, 784, generator=gen),
            torch.randint(0, 10, (60000,), generator=gen),
        )
        source = "random"
    return x[:n], one_hot(labels[:n], 10), source


def _solver_and_state(method: str, x, y, inner_iters: int, track: bool = True):
    net = LiftedNetwork([784, 64, 64, 10], "relu")
    settings = (
        {"batch_size": 100, "lr": 0.1}
        if method == "sgd-bp"
        else {"batch_size": 100, "inner_iters": inner_iters, "tau": 100.0, "track": track}
    )
    solver = make_solver(method, net, **settings)
    return solver, solver.init_state(net.init_params(torch.Generator().manual_seed(0)), x, y)


def _epoch_times(runs: dict, x, y, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` epoch time of every solver, the solvers interleaved within each
    repeat so that load from other processes hits all of them alike."""
    best = dict.fromkeys(runs, float("inf"))
    gen = torch.Generator().manual_seed(0)
    for _ in range(repeats):
        for key, (solver, state) in runs.items():
            tic = time.perf_counter()
            state, _ = solver.epoch(state, x, y, gen)
            best[key] = min(best[key], time.perf_counter() - tic)
            runs[key] = (solver, state)
    return best


def _epoch_time(method: str, x, y, inner_iters: int, repeats: int, track: bool = True) -> float:
    run = {method: _solver_and_state(method, x, y, inner_iters, track)}
    return _epoch_times(run, x, y, repeats)[method]


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """High-water RSS of this process image: ``VmHWM`` (Linux), which, unlike
    ``getrusage().ru_maxrss``, does not carry over the parent's RSS at fork across exec;
    ``ru_maxrss`` elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(method: str, n: int) -> None:
    """Peak RSS of one epoch of ``method`` on ``n`` random samples of Fashion-MNIST's shape
    (random data, so the reader's own peak while decoding 60k images does not mask it)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 784, generator=gen)
    y = one_hot(torch.randint(0, 10, (n,), generator=gen), 10)
    data_mb = (x.numel() * x.element_size() + y.numel() * y.element_size()) / 2**20
    before = _current_rss_mb()
    inner = 1 if method == "lbn-d" else 15
    _epoch_time(method, x, y, inner, 1)
    peak = _peak_rss_mb()
    print(json.dumps({"n": n, "data_mb": data_mb, "rss_with_data_mb": before, "peak_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(default_data_dir()))
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--inner-iters", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-method", default="lbn-s", help=argparse.SUPPRESS)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_child is not None:
        _memory_child(args.memory_method, args.memory_child)
        return

    x, y, source = _data(args.data_dir, args.samples)
    n_iters = args.inner_iters
    print(f"data: {source}, {x.shape[0]} samples, 784-64-64-10 ReLU, batch 100, N = {n_iters}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    runs = {
        "sgd": _solver_and_state("sgd-bp", x, y, n_iters),
        "lbn": _solver_and_state("lbn-s", x, y, n_iters, track=True),
        "lbn_plain": _solver_and_state("lbn-s", x, y, n_iters, track=False),
    }
    best = _epoch_times(runs, x, y, args.repeats)
    sgd, lbn, lbn_plain = best["sgd"], best["lbn"], best["lbn_plain"]
    print(f"SGD-BP epoch:                      {sgd:8.3f} s")
    print(f"LBN-S epoch (with batch metrics):  {lbn:8.3f} s")
    print(f"LBN-S epoch (track=False):         {lbn_plain:8.3f} s")
    print(f"ratio LBN-S / (N x SGD-BP):        {lbn / (n_iters * sgd):8.3f} (with metrics)")
    print(f"ratio LBN-S / (N x SGD-BP):        {lbn_plain / (n_iters * sgd):8.3f} (track=False)")
    if args.skip_memory:
        return
    for method in ("lbn-s", "lbn-d"):
        for n in (10000, 60000):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(n), "--memory-method", method],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            what = "one epoch" if method == "lbn-s" else "one update"
            print(
                f"peak RSS, {method} {what} on {n:5d} samples: {rec['peak_mb']:7.1f} MiB "
                f"(RSS with the data {rec['rss_with_data_mb']:7.1f} MiB, of which data "
                f"{rec['data_mb']:6.1f} MiB; growth in training "
                f"{rec['peak_mb'] - rec['rss_with_data_mb']:6.1f} MiB)"
            )


if __name__ == "__main__":
    main()
