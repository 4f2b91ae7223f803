"""Named training recipes (optimizer, schedule, batch size, augmentation) for image datasets.

A :class:`Recipe` is a frozen dataclass; :func:`get_recipe` looks one up by name and applies
overrides (``None`` means "keep the recipe's value"), and :meth:`Recipe.train_config` turns
it into a :class:`bregnn.train.TrainConfig`.

==================  =====  ========  ======  ======  ================  =====  =====  =======
recipe              lr     momentum  wd      epochs  milestones        gamma  batch  augment
==================  =====  ========  ======  ======  ================  =====  =====  =======
cifar10             0.1    0.9       1e-4    182     91, 136           0.1    128    yes
cifar100            0.05   0.9       1e-3    200     60, 120, 160      0.2    128    yes
mnist-mlp           0.1    0.9       0       30      22                0.1    128    no
fashion-mnist-mlp   0.1    0.9       0       20      15                0.1    128    no
==================  =====  ========  ======  ======  ================  =====  =====  =======

``cifar10`` is He et al. (2016)'s schedule (64k iterations at batch 128 = 182 epochs, the
learning rate divided by 10 at 32k and 48k); ``cifar100`` the common WideResNet-style
schedule. The two MNIST recipes are this project's short CPU budget for the Table 2 runs of
Frecon et al. (2022), not the paper's schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from bregnn.registry import Registry
from bregnn.train import TrainConfig

__all__ = ["RECIPES", "Recipe", "available_recipes", "get_recipe", "milestones_arg"]


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one training run (SGD with momentum, step schedule)."""

    name: str
    lr: float
    momentum: float
    weight_decay: float
    epochs: int
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    batch_size: int = 128
    nesterov: bool = False
    augment: bool = False

    def override(self, **changes: Any) -> Recipe:
        """A copy with the non-``None`` ``changes`` applied; ``ValueError`` for unknown keys."""
        valid = {f.name for f in fields(self)} - {"name"}
        unknown = set(changes) - valid
        if unknown:
            raise ValueError(f"unknown recipe fields {sorted(unknown)}; valid: {sorted(valid)}")
        changes = {k: v for k, v in changes.items() if v is not None}
        if "milestones" in changes:
            changes["milestones"] = tuple(int(m) for m in changes["milestones"])
        return replace(self, **changes)

    def train_config(
        self, seed: int = 0, progress: bool = True, desc: str = "train"
    ) -> TrainConfig:
        """The :class:`~bregnn.train.TrainConfig` of this recipe (validates the values)."""
        return TrainConfig(
            lr=self.lr,
            epochs=self.epochs,
            batch_size=self.batch_size,
            momentum=self.momentum,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
            milestones=tuple(self.milestones),
            gamma=self.gamma,
            seed=seed,
            progress=progress,
            desc=desc,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: Registry[Recipe] = Registry("recipe")
for _recipe in (
    Recipe("cifar10", 0.1, 0.9, 1e-4, 182, (91, 136), 0.1, 128, augment=True),
    Recipe("cifar100", 0.05, 0.9, 1e-3, 200, (60, 120, 160), 0.2, 128, augment=True),
    Recipe("mnist-mlp", 0.1, 0.9, 0.0, 30, (22,), 0.1, 128),
    Recipe("fashion-mnist-mlp", 0.1, 0.9, 0.0, 20, (15,), 0.1, 128),
):
    RECIPES.register(_recipe.name, _recipe)


def available_recipes() -> list[str]:
    """The registered recipe names."""
    return RECIPES.names()


def get_recipe(name: str | Recipe, **overrides: Any) -> Recipe:
    """The recipe called ``name`` with ``overrides`` applied (``None`` values are ignored).

    >>> get_recipe("cifar10", epochs=2).epochs
    2
    """
    recipe = name if isinstance(name, Recipe) else RECIPES.get(name)  # ValueError: valid names
    return recipe.override(**overrides)


def milestones_arg(text: str) -> Sequence[int]:
    """Parse ``"91,136"`` (an empty string: no milestones) for the command line."""
    text = text.strip()
    if not text:
        return ()
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"milestones must be comma-separated integers; got {text!r}") from None
