"""``bregnn image-classify``: train a (Bregman) ResNet, MLP or CNN on an image dataset, then
measure clean accuracy, adversarial robustness and the logit margin.

Data are ``uint8`` images kept in memory (:func:`bregnn.data.load_dataset`); each batch is
moved to the device, mapped to pixel space ``[0, 1]`` and augmented there (the recipe's
``augment``: pad+crop+flip for 3-channel images, a small random affine map for 1-channel
ones). Every model starts with its own :class:`~bregnn.data.InputScaling` (per-channel
standardisation for ResNets, the activation's target interval for MLPs/CNNs, which Bregman
MLPs need), so the attacks' ``eps`` is in pixel space for every model.

Training is :func:`bregnn.train.fit` (data-parallel with ``--distributed`` under
``torchrun``). The run directory gets ``config.json`` (the resolved settings, recipe values
included: :func:`bregnn.runs.prepare_run` refuses a ``--resume`` that changes any of them
but the mutable ones, :data:`RESUMABLE`), ``metrics.csv`` and ``checkpoint.pt`` every
epoch, then ``summary.json`` with the clean top-1 and top-2 test accuracy, FGSM (l_inf,
8/255) and PGD (l_2, 0.5) robust accuracies on the test set (or its first
``--robust-subset`` images), optionally PGD with ``--pgd-restarts`` random restarts (on top
of the plain run, so never above PGD's accuracy) and the
gradient-free Square Attack (``--square-queries``; l_inf at FGSM's eps and l_2 at PGD's),
the mean logit margin ``f_(1) - f_(2)`` on the test set, the training seconds (summed
over resumed segments) and the share of exact zeros in the mixing matrices ``M``
(``mixing_zero_share``, ``None`` without one), ``model.pt`` (the trained ``state_dict``, loadable with
``torch.load(weights_only=True)``), ``table.md`` (also printed) and the figures
``learning-curves.png`` and ``robustness.png`` (skipped with a note without matplotlib).
A ``--resume`` of a finished run that trains no further epochs and asks for the same attacks
(``evaluation_settings`` in ``summary.json``) keeps the evaluation and prints its table; one
that changes the attacks evaluates the same model again.

Activation: ``--activation`` defaults to the paper's choice for ResNets (ReLU for the
standard variant, eq. 17; softplus for the Bregman one) and to softplus for MLPs / CNNs.
A softplus takes ``--beta``, else the recipe's ``softplus_beta`` (1000 for the CIFAR
recipes, as the authors' code reads 'softplus'), else the registry's 1. ``--stem`` (the
ImageNet-style ResNet18..152) defaults to the recipe's (``imagenet`` for ``cifar100``).

Examples::

    bregnn image-classify --dataset cifar10 --model resnet20 --variant bregman \\
        --recipe cifar10 --data-dir ../shared/data --out runs/r20
    bregnn image-classify --synthetic 64 --model resnet20 --epochs 2 --out runs/smoke
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bregnn.activations import Activation, activation
from bregnn.data import CropFlip, InputScaling, RandomAffine, dataset_spec, load_dataset, to_unit
from bregnn.distributed import DistContext, barrier, cleanup, init_from_env
from bregnn.models import IMAGENET_RESNETS, MLP, RESNETS, ConvNet
from bregnn.models.resnet import STEMS
from bregnn.nn import MIXINGS, mixing_zero_share
from bregnn.plotting import figures_or_note
from bregnn.recipes import Recipe, available_recipes, get_recipe, milestones_arg
from bregnn.runs import (
    MUTABLE_KEYS,
    accumulated_seconds,
    atomic_save,
    atomic_write_text,
    prepare_run,
    write_json,
)
from bregnn.train import History, evaluate, fit, topk_accuracy
from bregnn.utils import add_device_argument, pick_device, seed_everything

__all__ = [
    "HELP",
    "MODELS",
    "NAME",
    "RESUMABLE",
    "Autocast",
    "ToUnit",
    "ToUnitAugment",
    "add_arguments",
    "build_model",
    "format_table",
    "load_data",
    "resolve_activation",
    "robustness",
    "run",
    "run_config",
    "synthetic_images",
]

NAME = "image-classify"
HELP = "Train a (Bregman) ResNet / MLP / CNN on MNIST, Fashion-MNIST or CIFAR; report robustness"

#: The options of the final evaluation (its attacks), recorded in ``summary.json``.
EVALUATION_KEYS = ("robust_subset", "pgd_steps", "pgd_restarts", "square_queries")
RESUMABLE = MUTABLE_KEYS | {*EVALUATION_KEYS, "distributed"}
"""Settings a ``--resume`` may change: those of :mod:`bregnn.runs`, the final evaluation's
and multi-process training (which follows single-process training step for step)."""

MODELS = (*RESNETS, "mlp", "cnn")
DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100")


# -- batch transforms (picklable, no closures) -----------------------------------------------
@dataclass
class ToUnit:
    """``uint8`` batch to pixel space ``[0, 1]`` (the evaluation transform)."""

    def __call__(self, x: Tensor) -> Tensor:
        return to_unit(x) if x.dtype == torch.uint8 else x


@dataclass
class ToUnitAugment:
    """``uint8`` batch to pixel space, then ``augment(x, generator)`` (if any)."""

    augment: CropFlip | RandomAffine | None = None

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        x = to_unit(x) if x.dtype == torch.uint8 else x
        return self.augment(x, generator) if self.augment is not None else x


class Autocast(nn.Module):
    """Runs ``module`` under ``torch.autocast`` (bfloat16 by default, which needs no loss
    scaling) and returns float32 outputs. The Bregman blocks keep their coupling
    ``rho(rho_inv(.) + .)`` in float32 inside it."""

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            out = self.module(x)
        return out.float()


# -- data ----------------------------------------------------------------------------------------
def synthetic_images(
    n: int, shape: tuple[int, int, int], classes: int, seed: int = 0, template_seed: int = 0
) -> tuple[Tensor, Tensor]:
    """``n`` random ``uint8`` images of ``shape`` with uniformly random labels: image ``i`` is
    the mean of its class's template (uniform noise drawn from ``template_seed``, so train and
    test share them) and fresh uniform noise. A learnable task for smoke runs and tests."""
    if n <= 0:
        raise ValueError(f"--synthetic needs a positive number of images; got {n}")
    templates = torch.randint(
        0, 256, (classes, *shape), generator=torch.Generator().manual_seed(template_seed)
    )
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    noise = torch.randint(0, 256, (n, *shape), generator=gen)
    return ((templates[labels] + noise) // 2).to(torch.uint8), labels


def load_data(args: argparse.Namespace) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``(train, test)`` as uint8 images and int64 labels (real or ``--synthetic``)."""
    spec = dataset_spec(args.dataset)
    if args.synthetic:
        n_test = max(args.synthetic // 2, 8)
        classes = len(spec.classes)
        return (
            synthetic_images(args.synthetic, spec.shape, classes, args.seed + 1, args.seed),
            synthetic_images(n_test, spec.shape, classes, args.seed + 2, args.seed),
        )
    return (
        load_dataset(args.dataset, "train", args.data_dir),
        load_dataset(args.dataset, "test", args.data_dir),
    )


def hold_out(
    train: tuple[Tensor, Tensor], fraction: float, seed: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None]:
    """``(train, val)``: a random share ``fraction`` of the training images (generator
    seeded with ``seed``) held out for validation; ``fraction = 0``: ``(train, None)``."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1); got {fraction}")
    if fraction == 0:
        return train, None
    images, labels = train
    n_val = max(1, round(fraction * len(images)))
    if n_val >= len(images):
        raise ValueError(f"--val-fraction {fraction} leaves no training images")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    val, kept = order[:n_val], order[n_val:]
    return (images[kept], labels[kept]), (images[val], labels[val])


# -- models --------------------------------------------------------------------------------------
def make_activation(name: str, beta: float | None) -> Activation:
    """The registry activation; ``beta`` only for softplus."""
    if beta is None:
        return activation(name)
    if name != "softplus":
        raise ValueError(f"--beta applies to the softplus activation only; got --activation {name}")
    return activation(name, beta=beta)


def resolve_activation(args: argparse.Namespace, recipe: Recipe | None = None) -> Activation:
    """The run's activation: ``--activation`` or, when it is not given, ReLU for a standard
    ResNet (eq. 17), softplus otherwise; a softplus gets ``--beta``, else the recipe's
    ``softplus_beta``, else the registry default."""
    recipe = recipe if recipe is not None else recipe_from_args(args)
    name = args.activation
    if name is None:
        standard_resnet = args.model in RESNETS and args.variant == "standard"
        name = "relu" if standard_resnet else "softplus"
    beta = args.beta
    if beta is None and activation(name).name == "softplus":
        beta = recipe.softplus_beta
    return make_activation(name, beta)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated integers; got {text!r}") from None
    return values


def resolve_stem(args: argparse.Namespace, recipe: Recipe | None = None) -> str | None:
    """The ImageNet-style ResNet's stem: ``--stem``, else the recipe's, else ``None`` (the
    model's default); ``ValueError`` for ``--stem`` with any other model."""
    if args.model not in IMAGENET_RESNETS:
        if args.stem is not None:
            raise ValueError(
                f"--stem applies to {list(IMAGENET_RESNETS)}; got --model {args.model}"
            )
        return None
    recipe = recipe if recipe is not None else recipe_from_args(args)
    return args.stem if args.stem is not None else recipe.stem


def build_model(args: argparse.Namespace, recipe: Recipe | None = None) -> nn.Module:
    """``nn.Sequential(InputScaling, network)`` for ``args.model`` on ``args.dataset``
    (``recipe``: the run's recipe, default :func:`recipe_from_args`)."""
    spec = dataset_spec(args.dataset)
    channels, height, width = spec.shape
    classes = len(spec.classes)
    recipe = recipe if recipe is not None else recipe_from_args(args)
    act = resolve_activation(args, recipe)
    if args.model in RESNETS:
        if args.variant not in ("standard", "bregman"):
            raise ValueError(
                f"ResNets have variants ['standard', 'bregman']; got --variant {args.variant}"
            )
        if args.mixing != "softmax":
            raise ValueError("--mixing applies to the MLP and CNN heads, not to ResNets")
        stem = resolve_stem(args, recipe)
        net = RESNETS[args.model](
            num_classes=classes,
            in_channels=channels,
            activation=act,
            variant=args.variant,
            zero_init_residual=args.zero_init_residual,
            **({"stem": stem} if stem is not None else {}),
        )
        return nn.Sequential(InputScaling.normalize(spec.mean, spec.std), net)
    resolve_stem(args, recipe)  # --stem with an MLP / CNN is an error
    hidden = _int_list(args.hidden)
    if args.model == "mlp":
        net = MLP(channels * height * width, hidden, classes, act, args.variant,
                  mixing=args.mixing)  # fmt: skip
        return nn.Sequential(InputScaling.for_activation(act, args.fill), nn.Flatten(), net)
    if args.model == "cnn":
        net = ConvNet(channels, classes, _int_list(args.channels), hidden, act, args.variant,
                      image_size=height, mixing=args.mixing)  # fmt: skip
        return nn.Sequential(InputScaling.for_activation(act, args.fill), net)
    raise ValueError(f"unknown model {args.model!r}; valid models: {list(MODELS)}")


def unwrap(model: nn.Module) -> nn.Module:
    """The model without an :class:`Autocast` shell."""
    return model.module if isinstance(model, Autocast) else model


# -- evaluation ----------------------------------------------------------------------------------
def robustness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    fgsm_eps: float = 8 / 255,
    pgd_eps: float = 0.5,
    pgd_steps: int = 20,
    batch_size: int = 256,
    pgd_restarts: int = 0,
    square_queries: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """FGSM (l_inf) and PGD (l_2) robust accuracy of ``model`` on pixel-space ``x`` (the
    paper's attacks, Sec. 5.2.1); with ``pgd_restarts > 0`` also PGD run from the clean input
    and from that many random starts, the worst case per sample kept (the generator seeded
    with ``seed``): its accuracy is never above the plain PGD's, which is its first run; with
    ``square_queries > 0`` the Square Attack in l_inf (``fgsm_eps``) and in l_2
    (``pgd_eps``) with that query budget (seed ``seed``)."""
    from bregnn.attacks import FGSM, PGDL2, Square, robust_accuracy

    result = {
        "fgsm_linf_eps": fgsm_eps,
        "fgsm_accuracy": robust_accuracy(model, x, y, FGSM(fgsm_eps), batch_size),
        "pgd_l2_eps": pgd_eps,
        "pgd_l2_steps": pgd_steps,
        "pgd_accuracy": robust_accuracy(model, x, y, PGDL2(pgd_eps, pgd_steps), batch_size),
    }
    if pgd_restarts > 0:
        attack = PGDL2(pgd_eps, pgd_steps, restarts=1 + pgd_restarts)
        generator = torch.Generator().manual_seed(seed)
        result["pgd_restarts"] = pgd_restarts
        result["pgd_restarts_accuracy"] = robust_accuracy(
            model, x, y, attack, batch_size, generator=generator
        )
    if square_queries > 0:
        result["square_queries"] = square_queries
        for norm, eps in (("linf", fgsm_eps), ("l2", pgd_eps)):
            attack = Square(eps, norm, square_queries, seed)
            result[f"square_{norm}_accuracy"] = robust_accuracy(model, x, y, attack, batch_size)
    return result


@torch.no_grad()
def mean_logit_margin(model: nn.Module, x: Tensor, batch_size: int = 1024) -> float:
    """Mean over ``x`` of the largest minus the second-largest logit."""
    from bregnn.attacks import logit_margin

    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(x), batch_size):
        total += logit_margin(model(x[start : start + batch_size].to(device))).sum().item()
    return total / max(len(x), 1)


def final_evaluation(
    model: nn.Module, test: tuple[Tensor, Tensor], args: argparse.Namespace
) -> dict[str, float]:
    """Clean accuracy and logit margin on the test set, robust accuracies on a subset."""
    x, y = to_unit(test[0]), test[1]
    loss, acc = evaluate(model, x, y)
    top2 = topk_accuracy(model, x, y, ks=(2,))[2]
    n_robust = len(x) if args.robust_subset is None else min(args.robust_subset, len(x))
    result = {"test_loss": loss, "test_accuracy": acc, "test_top2_accuracy": top2}
    result["robust_subset"] = n_robust
    result["mean_logit_margin"] = mean_logit_margin(model, x)
    if n_robust > 0:
        result.update(
            robustness(
                model, x[:n_robust], y[:n_robust], pgd_steps=args.pgd_steps,
                pgd_restarts=args.pgd_restarts, square_queries=args.square_queries,
                seed=args.seed,
            )
        )  # fmt: skip
    return result


# -- command -------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    parser.add_argument("--dataset", choices=DATASETS, default="cifar10")
    parser.add_argument("--model", choices=MODELS, default="resnet20")
    parser.add_argument(
        "--variant", choices=("standard", "euclidean", "bregman"), default="bregman"
    )
    parser.add_argument("--activation", default=None,
                        help="a registered activation (default: relu for a standard ResNet, "
                             "softplus otherwise)")  # fmt: skip
    parser.add_argument("--beta", type=float, default=None,
                        help="softplus beta (default: the recipe's, else 1)")  # fmt: skip
    parser.add_argument("--stem", choices=STEMS, default=None,
                        help=f"stem of {', '.join(IMAGENET_RESNETS)} (default: the recipe's)")  # fmt: skip
    parser.add_argument("--mixing", choices=MIXINGS, default="softmax",
                        help="how the MLP / CNN head keeps M on the simplex")  # fmt: skip
    parser.add_argument("--hidden", default="256", help="MLP/CNN head widths, e.g. 256,256,256")
    parser.add_argument("--channels", default="32,64", help="CNN convolution channels")
    parser.add_argument("--zero-init-residual", action="store_true",
                        help="ResNets: start every residual branch at 0")  # fmt: skip
    parser.add_argument("--recipe", default="cifar10", help=f"one of {available_recipes()}")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe")
    parser.add_argument("--lr", type=float, default=None, help="override the recipe")
    parser.add_argument("--batch-size", type=int, default=None, help="override the recipe")
    parser.add_argument("--momentum", type=float, default=None, help="override the recipe")
    parser.add_argument("--weight-decay", type=float, default=None, help="override the recipe")
    parser.add_argument("--milestones", type=str, default=None, help="e.g. 91,136 ('' = none)")
    parser.add_argument("--gamma", type=float, default=None, help="override the recipe")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="override the recipe's augmentation")  # fmt: skip
    parser.add_argument("--val-fraction", type=float, default=0.0,
                        help="hold out this random share of the training images for validation")  # fmt: skip
    parser.add_argument("--patience", type=int, default=None,
                        help="early stopping after N epochs without a better validation "
                             "accuracy (the best weights are kept)")  # fmt: skip
    parser.add_argument("--fill", type=float, default=0.9,
                        help="MLP / CNN: pixel space maps onto this central share of the "
                             "activation's range")  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="default $BREGNN_DATA, else ~/.cache/bregnn")  # fmt: skip
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="train on N random images shaped like --dataset (no data needed)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/image-classify"))
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--seed", type=int, default=0)
    add_device_argument(parser, default="auto")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--robust-subset", type=int, default=None, metavar="N",
                        help="attack only the first N test images (0: skip the attacks)")  # fmt: skip
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--pgd-restarts", type=int, default=0, metavar="R",
                        help="also PGD from the clean input and R random starts, worst case "
                             "kept (0: skip)")  # fmt: skip
    parser.add_argument("--square-queries", type=int, default=0, metavar="Q",
                        help="also the Square Attack (l_inf, l_2) with Q queries (0: skip)")  # fmt: skip
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel training; start with torchrun")  # fmt: skip
    parser.add_argument(
        "--no-progress", action="store_true", help="no per-epoch progress (bar or lines)"
    )


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The named recipe with the command-line overrides."""
    milestones = milestones_arg(args.milestones) if args.milestones is not None else None
    return get_recipe(
        args.recipe,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        milestones=milestones,
        gamma=args.gamma,
        augment=args.augment,
    )


def _augmentation(channels: int, enabled: bool) -> CropFlip | RandomAffine | None:
    if not enabled:
        return None
    return CropFlip() if channels == 3 else RandomAffine()


def run_config(args: argparse.Namespace, recipe: Recipe) -> dict[str, Any]:
    """The run's full resolved settings (``config.json``): the command-line options with
    the recipe's values in place of the overrides that were not given."""
    config = dict(vars(args))
    config.update({k: v for k, v in recipe.as_dict().items() if k != "name"})
    return config


def _prepare(args: argparse.Namespace, config: dict[str, Any], ctx: DistContext) -> bool:
    """:func:`~bregnn.runs.prepare_run` on rank 0; with several ranks every rank first
    checks the same directory, so all of them fail or none does."""
    options = {"resume": args.resume, "overwrite": args.overwrite, "mutable": RESUMABLE}
    if ctx.world_size == 1:
        return prepare_run(args.out, config, **options)
    resumed = prepare_run(args.out, config, **options, main=False)
    barrier(ctx)
    if ctx.is_main:
        prepare_run(args.out, config, **options)
    barrier(ctx)
    return resumed


def run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    if args.robust_subset is not None and args.robust_subset < 0:
        raise ValueError(f"--robust-subset must be >= 0; got {args.robust_subset}")
    if args.patience is not None and not args.val_fraction > 0:
        raise ValueError("--patience needs a validation split: give --val-fraction")
    for flag in ("pgd_restarts", "square_queries"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 0; got {getattr(args, flag)}")
    ctx = init_from_env(args.device) if args.distributed else DistContext()
    try:
        device = ctx.device if args.distributed else pick_device(args.device)
        seed_everything(args.seed)
        model = build_model(args, recipe).to(device)
        if args.amp:
            model = Autocast(model)
        train, test = load_data(args)
        train, val = hold_out(train, args.val_fraction, args.seed)
        resumed = _prepare(args, run_config(args, recipe), ctx)
        config = recipe.train_config(seed=args.seed, progress=not args.no_progress,
                                     desc=f"{args.model} {args.variant}")  # fmt: skip
        config.patience = args.patience
        transform = ToUnitAugment(
            _augmentation(dataset_spec(args.dataset).shape[0], recipe.augment)
        )
        history = fit(model, train, config, val=val, test=test, run_dir=args.out,
                      resume=resumed, train_transform=transform, eval_transform=ToUnit(),
                      ctx=ctx)  # fmt: skip
        if ctx.is_main:
            done = _evaluated(args, history) if resumed else None
            if done is None:
                _finish(model, history, train, val, test, args, recipe, device, ctx)
            else:
                print(f"\n{format_table(done)}\nsummary (already evaluated, kept): "
                      f"{args.out / 'summary.json'}")  # fmt: skip
    finally:
        cleanup()
    return 0


def _evaluation_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key) for key in EVALUATION_KEYS}


def _evaluated(args: argparse.Namespace, history: History) -> dict[str, Any] | None:
    """The ``summary.json`` of a finished run that this resume did not extend and whose
    attacks it does not change (the final evaluation is then already there), else None."""
    path = args.out / "summary.json"
    if not path.exists() or not (args.out / "model.pt").exists():
        return None
    summary = json.loads(path.read_text())
    same = summary.get("evaluation_settings") == _evaluation_settings(args)
    return summary if same and summary.get("epochs_run") == len(history.rows) else None


def _finish(
    model: nn.Module,
    history: History,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor] | None,
    test: tuple[Tensor, Tensor],
    args: argparse.Namespace,
    recipe: Recipe,
    device: torch.device,
    ctx: DistContext,
) -> None:
    """Final evaluation, ``model.pt``, ``summary.json``, ``table.md``, the figures and the
    printed table (rank 0 only)."""
    evaluation = final_evaluation(model, test, args)
    net = unwrap(model)
    atomic_save(net.state_dict(), args.out / "model.pt")
    last = history.rows[-1] if history.rows else {}
    summary = {
        "dataset": args.dataset if not args.synthetic else f"synthetic({args.dataset} shape)",
        "n_train": len(train[0]),
        "n_val": 0 if val is None else len(val[0]),
        "n_test": len(test[0]),
        "model": args.model,
        "variant": args.variant,
        "activation": repr(resolve_activation(args, recipe)),
        "parameters": sum(p.numel() for p in net.parameters()),
        "mixing": args.mixing,
        "mixing_zero_share": mixing_zero_share(net),
        "recipe": recipe.as_dict(),
        "epochs_run": len(history.rows),
        "best_epoch": history.best_epoch,
        "stopped_early": history.stopped_early,
        "final_train_loss": last.get("train_loss"),
        "final_train_accuracy": last.get("train_accuracy"),
        "train_seconds": accumulated_seconds(history.rows, "time"),
        "device": str(device),
        "world_size": ctx.world_size,
        "amp": args.amp,
        "seed": args.seed,
        "evaluation_settings": _evaluation_settings(args),
        **evaluation,
    }
    write_json(summary, args.out / "summary.json")
    table = format_table(summary)
    atomic_write_text(table, args.out / "table.md")
    figures = [] if args.no_figures else _figures(history, summary, args)
    print()
    print(table)
    print(f"summary: {args.out / 'summary.json'}, table: {args.out / 'table.md'}")
    for path in figures:
        print(f"figure: {path}")


def format_table(summary: dict[str, Any]) -> str:
    """A one-row markdown table of ``summary``: clean top-1 / top-2 and robust test accuracy
    (percent; the restarted PGD and Square columns only when they ran), logit margin,
    epochs and training seconds."""

    def percent(key: str) -> str:
        value = summary.get(key)
        return "-" if value is None else f"{100 * value:.1f}"

    headers = ["model", "variant", "epochs", "test acc (%)", "FGSM acc (%)", "PGD acc (%)"]
    cells = [
        summary["model"],
        summary["variant"],
        str(summary["epochs_run"]),
        percent("test_accuracy"),
        percent("fgsm_accuracy"),
        percent("pgd_accuracy"),
    ]
    for key, header in (
        ("pgd_restarts_accuracy", "PGD restarts acc (%)"),
        ("square_linf_accuracy", "Square l_inf acc (%)"),
        ("square_l2_accuracy", "Square l_2 acc (%)"),
        ("test_top2_accuracy", "top-2 acc (%)"),
    ):
        if key in summary:
            headers.append(header)
            cells.append(percent(key))
    headers += ["logit margin", "train time (s)"]
    cells += [f"{summary['mean_logit_margin']:.3f}", f"{summary['train_seconds']:.1f}"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figures(history: History, summary: dict[str, Any], args: argparse.Namespace) -> list[Path]:
    """Learning curves and (when the attacks ran) the robustness bar chart."""
    if not figures_or_note():
        return []
    from bregnn.plotting import plot_learning_curves, plot_robustness

    name = f"{summary['model']} {summary['variant']} on {summary['dataset']}"
    paths = []
    if history.rows:
        paths.append(plot_learning_curves(history.rows, args.out / "learning-curves.png", name))
    if "fgsm_accuracy" in summary:
        accuracies = {
            "clean": summary["test_accuracy"],
            f"FGSM l_inf {summary['fgsm_linf_eps']:.3g}": summary["fgsm_accuracy"],
            f"PGD l_2 {summary['pgd_l2_eps']:g}": summary["pgd_accuracy"],
        }
        if "pgd_restarts_accuracy" in summary:
            label = f"PGD l_2 x{summary['pgd_restarts']} restarts"
            accuracies[label] = summary["pgd_restarts_accuracy"]
        if "square_linf_accuracy" in summary:
            accuracies["Square l_inf"] = summary["square_linf_accuracy"]
            accuracies["Square l_2"] = summary["square_l2_accuracy"]
        title = f"{name}: first {summary['robust_subset']} test images"
        paths.append(plot_robustness(accuracies, args.out / "robustness.png", title))
    return paths
