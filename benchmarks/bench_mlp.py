"""Cost of a Bregman MLP training step relative to a standard MLP of the same shape.

One step = forward, cross-entropy, backward, ``torch.optim.SGD`` step. Two cases:

- ``wide``: 784 -> [1024] * 9 -> 10, sigmoid, batch 100 (the MNIST depth-study model);
- ``deep``: 2 -> [2] * 100 -> 2, atan, batch 16 (the deep two-spiral model).

For each case three models are timed in the same run, interleaved (warm-up first, then
``--rounds`` rounds that each time ``--steps`` steps of every model; the figure is the
median over rounds of the per-step time):

- ``standard``: ``rho(W z + b)``;
- ``bregman (layer by layer)``: every layer applied one by one as
  ``rho(rho_inv(M z) + W z + b)`` (clamped ``rho_inv`` of the previous output): the
  baseline, what the library first computed;
- ``bregman``: :class:`bregnn.models.MLP` as shipped: each layer reuses the previous
  pre-activation as ``rho_inv(z)``, so the stack is ``u <- u + W rho(u) + b``.

The ratios bregman / standard are printed against the targets (1.15 wide, 1.3 deep).
Run with ``OMP_NUM_THREADS`` set to the cores you want measured (here: 2).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import Tensor, nn

from bregnn.models import MLP

TARGETS = {"wide": 1.15, "deep": 1.3}


class LayerByLayerMLP(MLP):
    """An MLP whose layers are applied one by one (``layer(z)``), each inverting ``rho``."""

    def features(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def build(case: str, kind: str, seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(seed)
    if case == "wide":
        sizes, act, batch = (784, [1024] * 9, 10), "sigmoid", 100
        x = torch.rand(batch, 784) * 0.9 + 0.05
    else:
        sizes, act, batch = (2, [2] * 100, 2), "atan", 16
        x = (torch.rand(batch, 2) - 0.5) * 2.8
    variant = "standard" if kind == "standard" else "bregman"
    cls = LayerByLayerMLP if kind == "bregman (layer by layer)" else MLP
    model = cls(*sizes, activation=act, variant=variant)
    y = torch.randint(0, sizes[2], (batch,))
    return model, x, y


def make_step(model: nn.Module, x: Tensor, y: Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step


def measure(case: str, kinds: list[str], steps: int, rounds: int, warmup: int) -> dict:
    stepper = {kind: make_step(*build(case, kind)) for kind in kinds}
    for kind in kinds:
        for _ in range(warmup):
            stepper[kind]()
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind in kinds:
            tic = time.perf_counter()
            for _ in range(steps):
                stepper[kind]()
            times[kind].append((time.perf_counter() - tic) / steps)
    return {kind: statistics.median(t) for kind, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs="+", default=["wide", "deep"], choices=["wide", "deep"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table")
    args = parser.parse_args()
    kinds = ["standard", "bregman (layer by layer)", "bregman"]
    plan = {"wide": (5, 3), "deep": (50, 10)}  # steps per round, warm-up steps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for case in args.case:
        steps, warmup = plan[case]
        med = measure(case, kinds, steps, args.rounds, warmup)
        print(f"\n[{case}] median time per training step ({args.rounds} rounds x {steps} steps)")
        for kind in kinds:
            print(f"  {kind:24s} {1e3 * med[kind]:8.3f} ms   x{med[kind] / med['standard']:.3f}")
        ratio = med["bregman"] / med["standard"]
        before = med["bregman (layer by layer)"] / med["standard"]
        verdict = "meets" if ratio <= TARGETS[case] else "misses"
        print(
            f"  bregman / standard = {ratio:.3f} (layer by layer: {before:.3f}); "
            f"target <= {TARGETS[case]}: {verdict}"
        )
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            for kind in ("standard", "bregman"):
                step = make_step(*build(case, kind))
                step()
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(steps):
                        step()
                print(f"\n[{case}] profile of {kind}")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
