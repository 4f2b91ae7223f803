"""Time to 85% test accuracy on Fashion-MNIST: LBN-S against SGD-BP.

784-64-64-10 ReLU, the official 60k/10k split, one thread, seed 0 (``--seed``), batch 100.
The wall time of training (evaluation excluded) until each run first reaches 85% test
accuracy, printed with its epochs, the mean number of inner iterations per batch, and the
ratio LBN-S / SGD-BP. LBN-S runs in the configurations that show what each change buys: the
earlier setting (uncentred images, tau = 100 against the batch sum, i.e. tau_k = 1 in
equation 24), centred images, the paper's tau_k = 100, fewer inner iterations (fixed N = 5,
8, 10), the blockwise step rule, the stopping test on the batch energy (``inner_tol``) on
the alternating and blockwise rules, and the running average of the iterates
(``average=0.99``, evaluated in place of the last iterate) at N = 15, 10, 8. Needs the data (``$BREGNN_DATA``, as ``make bench`` sets it).
``--runs`` picks rows by index. The epoch counts depend on the seed: 85% is close to what
this network reaches in its first epochs, so a row's first epoch above it can move by one
or two with the batch order.

``--device cuda`` trains on the GPU (its name is printed); ``fit`` moves the data there once
and waits for the GPU before it reads an epoch's clock.

    PYTHONPATH=src BREGNN_DATA=../shared/data python benchmarks/bench_time_to_accuracy.py
    PYTHONPATH=src BREGNN_DATA=../shared/data python benchmarks/bench_time_to_accuracy.py \
        --device cuda
"""

from __future__ import annotations

import argparse
import math
import os

import torch

from bregnn.data import load_vectors
from bregnn.data.centering import center
from bregnn.lifted import LiftedNetwork, fit
from bregnn.utils import add_device_argument, default_data_dir, pick_device

TARGET = 0.85
ALT = {"step_rule": "alternating", "step_scale": 1.99, "batch_size": 100}
RUNS = {
    "SGD-BP lr 0.1 (batch mean), centred": ("sgd-bp", "pixel", {"lr": 0.1, "batch_size": 100}),
    "LBN-S earlier: uncentred, tau_k 1, N 15": (
        "lbn-s",
        "none",
        {**ALT, "tau": 1.0, "inner_iters": 15},
    ),
    "LBN-S centred, tau_k 1, N 15": ("lbn-s", "pixel", {**ALT, "tau": 1.0, "inner_iters": 15}),
    "LBN-S centred, tau_k 100 (eq. 24), N 15": (
        "lbn-s",
        "pixel",
        {**ALT, "tau": 100.0, "inner_iters": 15},
    ),
    "LBN-S centred, tau_k 100, N 5": ("lbn-s", "pixel", {**ALT, "tau": 100.0, "inner_iters": 5}),
    "LBN-S centred, tau_k 100, N 10": ("lbn-s", "pixel", {**ALT, "tau": 100.0, "inner_iters": 10}),
    "LBN-S centred, tau_k 100, N 8": ("lbn-s", "pixel", {**ALT, "tau": 100.0, "inner_iters": 8}),
    "LBN-S blockwise, tau_k 100, N 15": (
        "lbn-s",
        "pixel",
        {**ALT, "step_rule": "blockwise", "tau": 100.0, "inner_iters": 15},
    ),
    "LBN-S tau_k 100, N <= 15, inner_tol 0.03": (
        "lbn-s",
        "pixel",
        {**ALT, "tau": 100.0, "inner_iters": 15, "inner_tol": 0.03},
    ),
    "LBN-S blockwise, N <= 15, inner_tol 0.05": (
        "lbn-s",
        "pixel",
        {**ALT, "step_rule": "blockwise", "tau": 100.0, "inner_iters": 15, "inner_tol": 0.05},
    ),
    "LBN-S tau_k 100, N 15, average 0.99": (
        "lbn-s",
        "pixel",
        {**ALT, "tau": 100.0, "inner_iters": 15, "average": 0.99},
    ),
    "LBN-S tau_k 100, N 10, average 0.99": (
        "lbn-s",
        "pixel",
        {**ALT, "tau": 100.0, "inner_iters": 10, "average": 0.99},
    ),
    "LBN-S tau_k 100, N 8, average 0.99": (
        "lbn-s",
        "pixel",
        {**ALT, "tau": 100.0, "inner_iters": 8, "average": 0.99},
    ),
}
WIDTH = max(map(len, RUNS))


def mean_inner_iterations(history: list[dict[str, float]], settings: dict) -> float:
    """Inner iterations per batch over the run: the stopping test's metric when it is on
    (every epoch has the same batches, so the mean of the epochs' means), else the fixed N."""
    if "batch_inner_iters" in history[0]:
        return sum(r["batch_inner_iters"] for r in history) / len(history)
    return float(settings.get("inner_iters", "nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--runs", nargs="+", default=list(range(len(RUNS))), type=int)
    parser.add_argument("--seed", type=int, default=0)
    add_device_argument(parser, default="cpu")
    args = parser.parse_args()
    try:
        device = pick_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(1)
    data_dir = default_data_dir()
    x, labels = load_vectors("fashion-mnist", "train", data_dir)
    xt, lt = load_vectors("fashion-mnist", "test", data_dir)
    load = os.getloadavg()
    print(
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; one thread; "
        f"seed {args.seed}"
    )
    if device.type == "cuda":
        print(f"device: {device}, {torch.cuda.get_device_name(device)}")
    else:
        print("device: CPU")
    seconds = {}
    for i, (label, (method, centring, settings)) in enumerate(RUNS.items()):
        if i not in args.runs:
            continue
        (xc, xtc), _ = center(x, [xt], centring)
        result = fit(
            LiftedNetwork([784, 64, 64, 10], "relu"), xc, labels, method=method,
            epochs=args.max_epochs, seed=args.seed, x_val=xtc, y_val=lt, val_name="test",
            progress=False, until=lambda r: r["test_accuracy"] >= TARGET, device=device,
            **settings,
        )  # fmt: skip
        last = result.history[-1]
        spent = sum(r["epoch_time_s"] for r in result.history)
        reached = last["test_accuracy"] >= TARGET
        seconds[label] = spent if reached else float("inf")
        status = "" if reached else f" (not reached in {args.max_epochs} epochs)"
        inner = mean_inner_iterations(result.history, settings)
        inner_text = f"{inner:5.2f}" if math.isfinite(inner) else "    -"
        print(
            f"{label:{WIDTH}s} epochs {len(result.history):3d}  train time {spent:7.1f} s  "
            f"inner its/batch {inner_text}  test {100 * last['test_accuracy']:.2f}%{status}",
            flush=True,
        )
    base = seconds.get(next(iter(RUNS)), float("inf"))
    for label, s in seconds.items():
        if label != next(iter(RUNS)):
            ratio = f"{s / base:.2f}" if s < float("inf") > base else "n/a (85% not reached)"
            print(f"ratio {label:{WIDTH}s} / SGD-BP: {ratio}")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
