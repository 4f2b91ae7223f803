"""Cost of keeping the mixing matrix ``M`` on the simplex by projection (``mixing="projected"``,
the paper's App. B) against the softmax parametrisation.

Two measurements, interleaved in one run (warm-up first, then ``--rounds`` rounds; the figure
is the median over rounds):

- the projection of a 256 x 784 ``M`` (the first layer of a 256-wide MLP on 28 x 28 images):
  :func:`bregnn.functional.project_simplex` (Newton / Michelot active-set iteration) against
  the sort-based algorithm it replaced (Held et al.; Duchi et al. 2008), on a random draw and
  on a projected matrix after a small SGD-like step (what training projects);
- one training step (forward, cross-entropy, backward, SGD, projection) of a Bregman MLP
  784 -> [256] * 3 -> 10, sigmoid, batch 16 (the ``mixing-fashion-mnist`` model), projected
  against softmax mixing.

Run idle, with ``OMP_NUM_THREADS`` set to the cores you want measured; the load average is
printed beside the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from bregnn.functional import project_simplex
from bregnn.models import MLP
from bregnn.nn import project_constraints_


def project_by_sorting(v: Tensor) -> Tensor:
    """The sort-based projection of each row (the implementation before the Newton one)."""
    n = v.shape[-1]
    sorted_v = torch.sort(v, dim=-1, descending=True).values
    cumsum = sorted_v.cumsum(-1) - 1
    ks = torch.arange(1, n + 1, dtype=v.dtype)
    k = (sorted_v - cumsum / ks > 0).to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)
    return torch.clamp(v - cumsum.gather(-1, k) / (k + 1).to(v.dtype), min=0)


def step_fn(mixing: str) -> Callable[[], None]:
    torch.manual_seed(0)
    model = MLP(784, [256] * 3, 10, activation="sigmoid", variant="bregman", mixing=mixing)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = 0.05 + 0.9 * torch.rand(16, 784), torch.randint(0, 10, (16,))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        project_constraints_(model)

    return step


def median_ms(fns: dict[str, Callable[[], object]], rounds: int, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name].append((time.perf_counter() - start) / repeats)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} (1 min)")  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    draw = (2 * torch.rand(256, 784, generator=gen) - 1) / 28
    near = project_simplex(draw) + 1e-3 * torch.randn(256, 784, generator=gen)
    for name, m in (("random draw", draw), ("projected M after a step", near)):
        assert torch.allclose(project_simplex(m), project_by_sorting(m), atol=1e-6)
        med = median_ms({"newton": lambda m=m: project_simplex(m),
                         "sort": lambda m=m: project_by_sorting(m)}, args.rounds, args.repeats)  # fmt: skip
        print(f"projection of a 256 x 784 M, {name}: newton {med['newton']:.2f} ms, "
              f"sort {med['sort']:.2f} ms, speed-up x{med['sort'] / med['newton']:.2f}")  # fmt: skip
    med = median_ms({m: step_fn(m) for m in ("projected", "softmax")}, args.rounds, args.repeats)
    print(f"training step, 784-256-256-256-10 Bregman MLP, batch 16: projected "
          f"{med['projected']:.2f} ms, softmax {med['softmax']:.2f} ms, "
          f"ratio x{med['projected'] / med['softmax']:.2f}")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) after the run")


if __name__ == "__main__":
    main()
