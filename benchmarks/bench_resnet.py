"""ResNet20 forward + backward time, Bregman vs standard blocks (target ratio <= 1.2).

One run measures every model on the same inputs: a warm-up, then ``--repeats`` timed
forward+backward passes (batch 128 of 3x32x32 by default), and prints the median time per
model and its ratio to the standard baseline with the *same* activation (the like-for-like
comparison) and to the standard ReLU network. "before" is the Bregman network evaluating
``rho_inv`` on every block's shortcut (``reuse_preactivation=False``), "after" the default,
which hands each block the previous pre-activation instead (the same function, see
:meth:`bregnn.models.ResNet.features`). On CUDA (when available) the same table is
measured again with ``torch.cuda.synchronize`` around each pass.

    PYTHONPATH=src python benchmarks/bench_resnet.py [--batch 128] [--repeats 7] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from bregnn.activations import activation
from bregnn.models import resnet20


def one_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds of one ``cross_entropy(model(x), y).backward()``."""
    sync = torch.cuda.synchronize if x.is_cuda else _no_sync
    model.zero_grad(set_to_none=True)
    sync()
    tic = time.perf_counter()
    nn.functional.cross_entropy(model(x), y).backward()
    sync()
    return time.perf_counter() - tic


def _no_sync() -> None:
    pass


def time_models(
    models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, repeats: int, warmup: int
) -> list[float]:
    """Median step time of each model; the repetitions are interleaved (model 1, 2, 3, 1,
    2, 3, ...) so that load from other processes hits every model alike."""
    for model in models:
        for _ in range(warmup):
            one_step(model, x, y)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for i, model in enumerate(models):
            times[i].append(one_step(model, x, y))
    return [statistics.median(t) for t in times]


def configurations(act_name: str, beta: float) -> list[tuple[str, dict]]:
    act = {"activation": activation(act_name, **({"beta": beta} if act_name == "softplus" else {}))}
    return [
        ("standard relu", {"variant": "standard", "activation": "relu"}),
        (f"standard {act_name}", {"variant": "standard", **act}),
        (
            f"bregman {act_name} (before)",
            {"variant": "bregman", "reuse_preactivation": False, **act},
        ),
        (f"bregman {act_name} (after)", {"variant": "bregman", **act}),
    ]


def bench(device: torch.device, args: argparse.Namespace) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    configs = configurations(args.activation, args.beta)
    models = []
    for _, kwargs in configs:
        torch.manual_seed(0)
        models.append(resnet20(**kwargs).to(device).train())
    medians = time_models(models, x, y, args.repeats, args.warmup)
    rows = [(label, t) for (label, _), t in zip(configs, medians)]
    base_relu = rows[0][1]
    base_same = rows[1][1]
    print(
        f"\nResNet20 forward+backward, batch {args.batch}x3x32x32, device {device}, "
        f"threads {torch.get_num_threads()}, median of {args.repeats} (warm-up {args.warmup})"
    )
    print(f"{'model':<30}{'median s':>10}{'/ std same act':>16}{'/ std relu':>12}")
    for label, t in rows:
        print(f"{label:<30}{t:>10.4f}{t / base_same:>16.3f}{t / base_relu:>12.3f}")
    for label, t in rows[2:]:
        ratio = t / base_same
        verdict = "meets" if ratio <= 1.2 else "misses"
        print(f"{label} / standard {args.activation} = {ratio:.3f}: {verdict} the target 1.2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--activation", default="softplus")
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench(torch.device("cpu"), args)
    if torch.cuda.is_available() and not args.cpu_only:
        bench(torch.device("cuda"), args)


if __name__ == "__main__":
    main()
