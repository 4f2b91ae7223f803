"""Named training recipes (optimizer, schedule, batch size, augmentation, and the network
settings the papers fix with them) for image datasets.

A :class:`Recipe` is a frozen dataclass; :func:`get_recipe` looks one up by name and applies
overrides (``None`` means "keep the recipe's value"), and :meth:`Recipe.train_config` turns
it into a :class:`bregnn.train.TrainConfig`.

==================  =====  ========  ======  ======  ============  =====  =====  =======  ====  ========
recipe              lr     momentum  wd      epochs  milestones    gamma  batch  augment  beta  stem
==================  =====  ========  ======  ======  ============  =====  =====  =======  ====  ========
cifar10             0.1    0.9       1e-4    182     91, 136       0.1    128    yes      1000  -
cifar100            0.05   0.9       1e-3    200     60, 120, 160  0.2    128    yes      1000  imagenet
mnist-mlp           0.1    0.9       0       30      22            0.1    128    no       -     -
fashion-mnist-mlp   0.1    0.9       0       20      15            0.1    128    no       -     -
==================  =====  ========  ======  ======  ============  =====  =====  =======  ====  ========

``cifar10`` is Frecon et al. (ICML 2022) Sec. 5.2.1, He et al. (2016)'s schedule: "a
learning rate of 10^-1, weight decay of 10^-4, momentum of 0.9 ... 182 epochs with a
decreasing of the learning by a factor 10 at the 91th and 136th epochs" (64k iterations at
batch 128), with "4 pixels padded on each side, a 32x32 crop ... or its horizontal flip".
``cifar100`` is Sec. 5.2.2: "200 epochs with batches of 128 images and decay the learning
rate by a factor of 5 at the 60th, 120th, and 160th epochs ... initial learning of 0.05,
momentum of 0.9 and weight decay of 10^-3", same pre-processing.

``beta`` (:attr:`Recipe.softplus_beta`): the sharpness of ``softplus`` in these runs. The
paper names the activation only as "SoftPlus"; the authors' code reads ``'softplus'`` as
beta = 1000 (bregmanet ``src/bregmanet/utils/activation.py``, ``get``: "if not beta: beta =
1000"), so the CIFAR recipes use :data:`~bregnn.models.BREGMANET_SOFTPLUS_BETA`; ``-`` keeps
the registry's default (beta = 1). ``stem`` (:attr:`Recipe.stem`): the stem of the
ImageNet-style ResNets (``resnet18..152``) in these runs; Table 4's ResNet18 is the authors'
``bresnet18`` (bregmanet ``src/bregmanet/resnet_large.py``: torchvision's 7x7 stride-2 stem
and max-pool), so ``cifar100`` uses ``imagenet``. The two MNIST recipes are this project's
short CPU budget for the Table 2 runs of Frecon et al., not the paper's schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from bregnn.models.resnet import BREGMANET_SOFTPLUS_BETA, STEMS
from bregnn.registry import Registry
from bregnn.train import TrainConfig

__all__ = ["RECIPES", "Recipe", "available_recipes", "get_recipe", "milestones_arg"]


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one training run (SGD with momentum, step schedule), plus
    the activation sharpness (``softplus_beta``, ``None``: the registry's default) and the
    ImageNet-style ResNet stem (``stem``, ``None``: the model's default) the recipe's paper
    runs use (see the module docstring)."""

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
    softplus_beta: float | None = None
    stem: str | None = None

    def __post_init__(self) -> None:
        if self.softplus_beta is not None and not self.softplus_beta > 0:
            raise ValueError(f"softplus_beta must be positive; got {self.softplus_beta}")
        if self.stem is not None and self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; valid stems: {list(STEMS)}")

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
    Recipe("cifar10", 0.1, 0.9, 1e-4, 182, (91, 136), 0.1, 128, augment=True,
           softplus_beta=BREGMANET_SOFTPLUS_BETA),
    Recipe("cifar100", 0.05, 0.9, 1e-3, 200, (60, 120, 160), 0.2, 128, augment=True,
           softplus_beta=BREGMANET_SOFTPLUS_BETA, stem="imagenet"),
    Recipe("mnist-mlp", 0.1, 0.9, 0.0, 30, (22,), 0.1, 128),
    Recipe("fashion-mnist-mlp", 0.1, 0.9, 0.0, 20, (15,), 0.1, 128),
):  # fmt: skip
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
