"""Is the input pipeline a bottleneck? Batched augmentation time vs one training step.

For each recipe the script times, per batch of ``--batch-size`` images (median of
``--repeats`` rounds after warm-up, the two timed alternately so that load from other
processes hits both alike), on the same device and in the same run:

* ``fetch+aug``: index a random batch out of the uint8 training tensor, convert to pixel
  space [0, 1] and augment it (what :func:`bregnn.train.fit` does per batch);
* ``step``: forward, cross-entropy, backward and SGD step of the model on that batch;

and prints images/s of the pipeline and the ratio ``fetch+aug time / step time`` (the
baseline is the step measured in the same run; below 1 the model, not the loader, limits
training). On CPU it also compares the batched crop + flip with a per-image Python loop.

Recipes: MNIST-sized 1x28x28 images, random affine (rotation +-11.25 deg, zoom 0.9-1.1),
Bregman MLP 784-128-128-128-10 (sigmoid); CIFAR-sized 3x32x32 images, pad 4 + random crop +
flip, a small conv net (3 conv layers 32-64-64, ReLU, global pooling, linear).

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_data.py [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from bregnn.data import InputScaling, random_affine, random_crop_flip, to_unit
from bregnn.models.mlp import MLP
from bregnn.utils import pick_device


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tic


def median_times(
    fns: list[Callable[[], object]], repeats: int, device: torch.device, warmup: int = 3
) -> list[float]:
    """Median seconds per call of each of ``fns``, timed interleaved (one call of each per
    round) so that load from other processes affects them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            bucket.append(_timed(fn, device))
    return [statistics.median(bucket) for bucket in times]


def looped_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Reference: the same crop + flip with a Python loop over the images (the baseline
    the batched version replaces)."""
    padded = nn.functional.pad(x, (padding,) * 4)
    h, w = x.shape[2:]
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * padding + 1, (len(x), 2), generator=generator)
    flips = torch.rand(len(x), generator=generator) < 0.5
    for i in range(len(x)):
        top, left = offsets[i].tolist()
        crop = padded[i, :, top : top + h, left : left + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def small_convnet() -> nn.Module:
    return nn.Sequential(
        InputScaling.normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def mnist_mlp() -> nn.Module:
    return nn.Sequential(
        InputScaling.for_activation("sigmoid"),
        nn.Flatten(),
        MLP(784, [128, 128, 128], 10, activation="sigmoid", variant="bregman"),
    )


def bench(
    name: str,
    shape: tuple[int, int, int],
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    model: nn.Module,
    batch_size: int,
    repeats: int,
    device: torch.device,
) -> None:
    gen = torch.Generator(device=device).manual_seed(0)
    n_train = 10 * batch_size
    images = torch.randint(
        0, 256, (n_train, *shape), dtype=torch.uint8, generator=gen, device=device
    )
    labels = torch.randint(0, 10, (n_train,), generator=gen, device=device)
    aug_gen = torch.Generator(device=device).manual_seed(1)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def fetch_augment() -> torch.Tensor:
        idx = torch.randint(0, n_train, (batch_size,), generator=gen, device=device)
        return augment(to_unit(images[idx]), aug_gen)

    xb, yb = fetch_augment(), labels[:batch_size]

    def step() -> None:
        loss = nn.functional.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    t_aug, t_step = median_times([fetch_augment, step], repeats, device)
    print(
        f"{name:<34} batch {batch_size:>4}  fetch+aug {1e3 * t_aug:7.2f} ms "
        f"({batch_size / t_aug:9.0f} img/s)  step {1e3 * t_step:7.2f} ms "
        f"({batch_size / t_step:7.0f} img/s)  aug/step {t_aug / t_step:5.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {device}")
    bench(
        "MNIST affine + Bregman MLP",
        (1, 28, 28),
        random_affine,
        mnist_mlp(),
        args.batch_size,
        args.repeats,
        device,
    )
    bench(
        "CIFAR crop+flip + small conv net",
        (3, 32, 32),
        random_crop_flip,
        small_convnet(),
        args.batch_size,
        args.repeats,
        device,
    )
    if device.type == "cpu":
        x = torch.rand(args.batch_size, 3, 32, 32)
        gen = torch.Generator().manual_seed(0)
        t_batched, t_loop = median_times(
            [lambda: random_crop_flip(x, gen), lambda: looped_crop_flip(x, gen)],
            args.repeats,
            device,
        )
        print(
            f"crop+flip alone: batched {1e3 * t_batched:.2f} ms, per-image loop "
            f"{1e3 * t_loop:.2f} ms per batch: loop/batched {t_loop / t_batched:.1f}x"
        )


if __name__ == "__main__":
    main()
