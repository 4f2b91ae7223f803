"""Time to 85% test accuracy on Fashion-MNIST: LBN-S against SGD-BP.

784-64-64-10 ReLU, the official 60k/10k split, one thread, seed 0, batch 100. The wall time
of training (evaluation excluded) until each run first reaches 85% test accuracy, printed
with its epochs, and the ratio LBN-S / SGD-BP. LBN-S runs in the configurations that show
what each change buys: the earlier setting (uncentred images, tau = 100 against the batch
sum, i.e. tau_k = 1 in equation 24), centred images, the paper's tau_k = 100, and fewer inner
iterations. Needs the data (``$BREGNN_DATA``, as ``make bench`` sets it).

``--device cuda`` trains on the GPU (its name is printed); ``fit`` moves the data there once
and waits for the GPU before it reads an epoch's clock.

    PYTHONPATH=src BREGNN_DATA=../shared/data python benchmarks/bench_time_to_accuracy.py
    PYTHONPATH=src BREGNN_DATA=../shared/data python benchmarks/bench_time_to_accuracy.py \
        --device cuda
"""

from __future__ import annotations

import argparse
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
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--runs", nargs="+", default=list(range(len(RUNS))), type=int)
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
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; one thread")
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
            epochs=args.max_epochs, seed=0, x_val=xtc, y_val=lt, val_name="test",
            progress=False, until=lambda r: r["test_accuracy"] >= TARGET, device=device,
            **settings,
        )  # fmt: skip
        last = result.history[-1]
        spent = sum(r["epoch_time_s"] for r in result.history)
        reached = last["test_accuracy"] >= TARGET
        seconds[label] = spent if reached else float("inf")
        status = "" if reached else f" (not reached in {args.max_epochs} epochs)"
        print(
            f"{label:42s} epochs {len(result.history):3d}  train time {spent:7.1f} s  "
            f"test {100 * last['test_accuracy']:.2f}%{status}",
            flush=True,
        )
    base = seconds.get(next(iter(RUNS)), float("inf"))
    for label, s in seconds.items():
        if label != next(iter(RUNS)):
            ratio = f"{s / base:.2f}" if s < float("inf") > base else "n/a (85% not reached)"
            print(f"ratio {label} / SGD-BP: {ratio}")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
