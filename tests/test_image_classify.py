"""The image-classify command: recipes, synthetic end-to-end runs, resume and checkpoints."""

from __future__ import annotations

import csv
import json
import socket

import pytest
import torch
import torch.multiprocessing as mp

from bregnn.cli import build_parser, main
from bregnn.data import to_unit
from bregnn.experiments import image_classify as ic
from bregnn.recipes import RECIPES, get_recipe, milestones_arg
from bregnn.train import evaluate


def _args(*extra: str):
    return build_parser().parse_args(["image-classify", "--no-progress", *extra])


def _mlp_run(out, *extra: str) -> list[str]:
    """A fast synthetic run: an MLP on 48 random MNIST-shaped images."""
    return [
        "image-classify", "--no-progress", "--dataset", "mnist", "--synthetic", "48",
        "--model", "mlp", "--hidden", "16", "--activation", "sigmoid", "--recipe", "mnist-mlp",
        "--epochs", "2", "--batch-size", "16", "--robust-subset", "0", "--out", str(out), *extra,
    ]  # fmt: skip


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# -- recipes -----------------------------------------------------------------------------------
def test_recipes_hold_the_published_schedules():
    c10, c100 = RECIPES["cifar10"], RECIPES["cifar100"]
    assert (c10.lr, c10.momentum, c10.weight_decay, c10.epochs) == (0.1, 0.9, 1e-4, 182)
    assert (c10.milestones, c10.gamma, c10.batch_size, c10.augment) == ((91, 136), 0.1, 128, True)
    assert (c100.lr, c100.weight_decay, c100.epochs) == (0.05, 1e-3, 200)
    assert (c100.milestones, c100.gamma) == ((60, 120, 160), 0.2)
    # the authors' code reads 'softplus' as beta = 1000; Table 4's ResNet18 has the ImageNet stem
    assert c10.softplus_beta == c100.softplus_beta == 1000 and c100.stem == "imagenet"
    assert c10.stem is None and RECIPES["mnist-mlp"].softplus_beta is None
    config = c100.train_config(seed=3)
    assert (config.lr, config.milestones, config.gamma, config.seed) == (
        0.05,
        (60, 120, 160),
        0.2,
        3,
    )


def test_command_line_overrides_the_recipe():
    recipe = ic.recipe_from_args(
        _args(
            "--recipe",
            "cifar100",
            "--epochs",
            "3",
            "--lr",
            "0.01",
            "--milestones",
            "1,2",
            "--no-augment",
        )
    )
    assert (recipe.name, recipe.epochs, recipe.lr, recipe.milestones) == (
        "cifar100",
        3,
        0.01,
        (1, 2),
    )
    assert recipe.augment is False and recipe.weight_decay == 1e-3  # untouched fields stay
    assert ic.recipe_from_args(_args("--milestones", "")).milestones == ()
    assert get_recipe("cifar10", lr=None).lr == 0.1  # None keeps the recipe's value


def test_unknown_recipe_and_bad_overrides():
    with pytest.raises(ValueError, match=r"unknown recipe 'imagenet'; valid recipes: \['cifar10'"):
        get_recipe("imagenet")
    with pytest.raises(ValueError, match="unknown recipe fields"):
        get_recipe("cifar10", warmup=5)
    with pytest.raises(ValueError, match="comma-separated integers"):
        milestones_arg("10,x")
    with pytest.raises(ValueError, match="lr must be positive"):
        get_recipe("cifar10", lr=-1.0).train_config()
    with pytest.raises(ValueError, match="unknown stem 'wide'"):
        get_recipe("cifar10", stem="wide")
    with pytest.raises(ValueError, match="softplus_beta must be positive"):
        get_recipe("cifar10", softplus_beta=0.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "resnet20", "--variant", "euclidean"], "ResNets have variants"),
        (["--activation", "sigmoid", "--beta", "2"], "softplus activation only"),
        (["--model", "resnet20", "--activation", "relu"], "invertible"),
        (["--model", "mlp", "--hidden", "16,a"], "comma-separated integers"),
        (["--model", "resnet20", "--stem", "imagenet"], "--stem applies to"),
        (["--model", "mlp", "--stem", "cifar"], "--stem applies to"),
        (["--model", "resnet20", "--mixing", "projected"], "--mixing applies to the MLP"),
        (
            ["--model", "resnet20", "--variant", "standard", "--beta", "3"],
            "softplus activation only",
        ),
    ],
)
def test_bad_model_arguments(extra, message):
    with pytest.raises(ValueError, match=message):
        ic.build_model(_args(*extra))


def test_bad_run_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(_mlp_run(tmp_path / "a", "--robust-subset", "-1"))
    assert exit_info.value.code == 2
    assert "--robust-subset must be >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="positive number of images"):
        ic.synthetic_images(-4, (1, 28, 28), 10)
    with pytest.raises(SystemExit):
        main(_mlp_run(tmp_path / "b", "--recipe", "imagenet"))
    assert "unknown recipe 'imagenet'" in capsys.readouterr().err


# -- models --------------------------------------------------------------------------------------
def test_models_take_pixel_space_and_scale_it_themselves():
    mlp = ic.build_model(_args("--dataset", "mnist", "--model", "mlp", "--activation", "tanh"))
    scaled = mlp[0](torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(scaled, torch.tensor([[-0.9, 0.9]]))  # central 90% of (-1, 1)
    resnet = ic.build_model(_args("--dataset", "cifar100", "--model", "resnet20", "--beta", "4"))
    assert resnet[1].fc.out_features == 100 and resnet[1].act.beta == 4.0
    cnn = ic.build_model(_args("--dataset", "fashion-mnist", "--model", "cnn", "--channels", "4,8"))
    assert cnn(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_activation_defaults_follow_the_paper_and_the_recipe():
    def net(*extra):
        return ic.build_model(_args(*extra))[1]

    # eq. 17: the standard CIFAR baseline is the ReLU ResNet
    assert net("--model", "resnet20", "--variant", "standard").act.name == "relu"
    bregman = net("--model", "resnet20", "--variant", "bregman")
    assert bregman.act.name == "softplus" and bregman.act.beta == 1000  # the recipe's beta
    explicit = net("--model", "resnet20", "--variant", "standard", "--activation", "softplus")
    assert explicit.act.beta == 1000
    assert net("--model", "resnet20", "--recipe", "mnist-mlp").act.beta == 1.0
    assert net("--model", "resnet20", "--beta", "7").act.beta == 7.0
    mlp = ic.build_model(_args("--dataset", "mnist", "--model", "mlp", "--recipe", "mnist-mlp"))
    assert mlp[2].act.name == "softplus" and mlp[2].act.beta == 1.0


def test_stem_and_mixing_options():
    def net(*extra):
        return ic.build_model(_args("--dataset", "cifar100", *extra))[1]

    assert net("--model", "resnet18", "--recipe", "cifar100").stem == "imagenet"
    assert net("--model", "resnet18", "--recipe", "cifar100", "--stem", "cifar").stem == "cifar"
    assert net("--model", "resnet18", "--recipe", "mnist-mlp").stem == "imagenet"  # model default
    mlp = ic.build_model(_args("--dataset", "mnist", "--model", "mlp", "--mixing", "projected"))
    assert mlp[2].layers[0].projected


def test_amp_run_and_whole_model_pickle(tmp_path):
    main(_mlp_run(tmp_path / "amp", "--amp", "--epochs", "1"))
    summary = json.loads((tmp_path / "amp" / "summary.json").read_text())
    assert summary["amp"] is True and 0 <= summary["test_accuracy"] <= 1
    model = ic.Autocast(ic.build_model(_args("--dataset", "mnist", "--model", "mlp")))
    torch.save(model, tmp_path / "whole.pt")
    loaded = torch.load(tmp_path / "whole.pt", weights_only=False)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))


def test_autocast_shell_returns_float32():
    model = ic.Autocast(ic.build_model(_args("--model", "resnet20", "--variant", "bregman")))
    out = model(torch.rand(2, 3, 32, 32))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# -- end to end ------------------------------------------------------------------------------------
def test_synthetic_resnet_run_writes_a_consistent_summary(tmp_path):
    out = tmp_path / "run"
    main([
        "image-classify", "--no-progress", "--synthetic", "32", "--model", "resnet20",
        "--epochs", "1", "--batch-size", "16", "--robust-subset", "8", "--pgd-steps", "2",
        "--out", str(out),
    ])  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_train"] == 32 and summary["n_test"] == 16 and summary["robust_subset"] == 8
    assert summary["parameters"] == 269_722
    assert 0 <= summary["pgd_accuracy"] <= 1 and 0 <= summary["fgsm_accuracy"] <= 1
    assert summary["mean_logit_margin"] >= 0
    # model.pt reloads with weights_only=True and reproduces the reported test accuracy
    model = ic.build_model(_args("--model", "resnet20"))
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    x, y = ic.synthetic_images(16, (3, 32, 32), 10, seed=2, template_seed=0)
    _, acc = evaluate(model, to_unit(x), y)
    assert acc == summary["test_accuracy"]
    with torch.no_grad():
        logits = model.eval()(to_unit(x))
    top2 = logits.topk(2, dim=1)
    margin = (top2.values[:, 0] - top2.values[:, 1]).mean().item()
    assert margin == pytest.approx(summary["mean_logit_margin"], rel=1e-5)
    in_top2 = (top2.indices == y[:, None]).any(1).double().mean().item()
    assert summary["test_top2_accuracy"] == pytest.approx(in_top2)
    assert summary["test_top2_accuracy"] >= summary["test_accuracy"]
    assert "beta=1000" in summary["activation"]  # Bregman softplus, the cifar10 recipe's beta
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("variant", ["standard", "bregman"])
def test_a_few_epochs_reduce_the_training_loss_on_cifar_shaped_data(tmp_path, variant):
    out = tmp_path / variant
    main([
        "image-classify", "--no-progress", "--synthetic", "64", "--model", "resnet20",
        "--variant", variant, "--epochs", "4", "--batch-size", "16", "--lr", "0.01",
        "--no-augment", "--robust-subset", "0", "--out", str(out),
    ])  # fmt: skip
    losses = [float(r["train_loss"]) for r in _rows(out / "metrics.csv")]
    assert len(losses) == 4
    assert losses[-1] < 0.9 * losses[0], losses


def test_extra_attacks_and_projected_mixing_reach_the_summary(tmp_path, capsys):
    out = tmp_path / "run"
    main(_mlp_run(out, "--epochs", "1", "--robust-subset", "6", "--pgd-steps", "2",
                  "--pgd-restarts", "2", "--square-queries", "4", "--mixing", "projected"))  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    for key in ("pgd_restarts_accuracy", "square_linf_accuracy", "square_l2_accuracy"):
        assert 0 <= summary[key] <= 1
    assert summary["pgd_restarts"] == 2 and summary["square_queries"] == 4
    assert summary["pgd_restarts_accuracy"] <= summary["pgd_accuracy"]  # the plain run is one
    printed = capsys.readouterr().out
    assert "PGD restarts acc (%)" in printed and "Square l_2 acc (%)" in printed
    assert "top-2 acc (%)" in printed
    weights = torch.load(out / "model.pt", weights_only=True)
    m = weights["2.layers.0.mixing_weight"]  # projected M: a plain Parameter on the simplex
    assert (m >= 0).all() and torch.allclose(m.sum(1), torch.ones(len(m)), atol=1e-5)
    assert (m == 0).any()
    with pytest.raises(SystemExit):
        main(_mlp_run(tmp_path / "bad", "--square-queries", "-1"))
    assert "--square-queries must be >= 0" in capsys.readouterr().err


def test_validation_split_early_stopping_and_fill(tmp_path, capsys):
    out = tmp_path / "run"
    main(_mlp_run(out, "--epochs", "6", "--val-fraction", "0.25", "--patience", "1",
                  "--fill", "0.5"))  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_train"], summary["n_val"]) == (36, 12)
    rows = _rows(out / "metrics.csv")
    assert "val_accuracy" in rows[0] and 1 <= summary["best_epoch"] <= len(rows)
    assert summary["stopped_early"] == (len(rows) < 6)
    mlp = ic.build_model(_args("--dataset", "mnist", "--model", "mlp", "--activation", "tanh",
                               "--fill", "0.5"))  # fmt: skip
    torch.testing.assert_close(mlp[0](torch.tensor([[0.0, 1.0]])), torch.tensor([[-0.5, 0.5]]))
    with pytest.raises(SystemExit):
        main(_mlp_run(tmp_path / "bad", "--patience", "2"))
    assert "--patience needs a validation split" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_mlp_run(tmp_path / "bad2", "--val-fraction", "1.5"))
    assert "--val-fraction must be in [0, 1)" in capsys.readouterr().err


def test_resume_continues_exactly(tmp_path):
    main(_mlp_run(tmp_path / "straight", "--epochs", "3"))
    main(_mlp_run(tmp_path / "resumed", "--epochs", "1"))
    main(_mlp_run(tmp_path / "resumed", "--epochs", "3", "--resume"))
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert len(_rows(tmp_path / "resumed" / "metrics.csv")) == 3


def test_resume_of_a_finished_run_keeps_its_evaluation_unless_the_attacks_change(tmp_path, capsys):
    run = _mlp_run(tmp_path / "run", "--epochs", "1", "--robust-subset", "8")
    main(run)
    summary = tmp_path / "run" / "summary.json"
    first = summary.read_bytes()
    capsys.readouterr()
    main([*run, "--resume"])  # nothing to train, same attacks: the evaluation is kept
    assert summary.read_bytes() == first
    out = capsys.readouterr().out
    assert "already evaluated, kept" in out and "| mlp |" in out
    main([*run, "--square-queries", "4", "--resume"])  # another attack: evaluated again
    again = json.loads(summary.read_text())
    assert again["square_queries"] == 4 and "square_l2_accuracy" in again
    assert again["evaluation_settings"]["square_queries"] == 4
    assert {k: v for k, v in json.loads(first).items() if k.startswith("fgsm")} == {
        k: v for k, v in again.items() if k.startswith("fgsm")
    }  # the same model, so the same FGSM numbers
    main([*run, "--epochs", "2", "--square-queries", "4", "--resume"])  # one more epoch
    assert json.loads(summary.read_text())["epochs_run"] == 2


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    main(_mlp_run(tmp_path / "run", "--epochs", "1"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(_mlp_run(tmp_path / "run", "--hidden", "32", "--lr", "0.5", "--resume"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot resume" in err and "lr saved 0.1, requested 0.5" in err
    assert "hidden saved '16', requested '32'" in err


def test_damaged_checkpoint_is_rejected(tmp_path, capsys):
    main(_mlp_run(tmp_path / "run", "--epochs", "1"))
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    with pytest.raises(SystemExit) as exit_info:
        main(_mlp_run(tmp_path / "run", "--resume"))
    assert exit_info.value.code == 2
    assert "checkpoint.pt is not a readable bregnn train checkpoint" in capsys.readouterr().err


# -- distributed command ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_worker(rank: int, world: int, port: int, argv: list[str]) -> None:
    import os

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    main(argv)


@pytest.mark.slow
def test_distributed_command_matches_single_process(tmp_path):
    """2 gloo processes (as torchrun would start them) train the BN-free MLP exactly like one."""
    argv = _mlp_run(tmp_path / "ddp", "--distributed", "--device", "cpu", "--epochs", "2")
    mp.spawn(_cli_worker, args=(2, _free_port(), argv), nprocs=2, join=True)
    main(_mlp_run(tmp_path / "single", "--device", "cpu", "--epochs", "2"))
    ddp = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "model.pt", weights_only=True)
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-5, atol=1e-6)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2


# -- the reproductions built on image-classify ---------------------------------------------------
@pytest.mark.parametrize(
    ("name", "folder", "first"),
    [("cifar10-resnet", "cifar-10-batches-py", "data_batch_1"), ("cifar100-resnet",
     "cifar-100-python", "train")],
)  # fmt: skip
def test_cifar_reproductions_name_the_files_to_place(tmp_path, capsys, name, folder, first):
    argv = ["reproduce", name, "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path)]
    for _ in range(2):  # nothing ran: the second attempt is not refused as a rerun
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--no-progress"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"place {first}" in err
        assert str(tmp_path / folder) in err and "--quick" in err


def test_reproduction_runs_are_image_classify_command_lines():
    from bregnn.experiments import robustness_tables as rt

    assert [r.name for r in rt.CIFAR10_TABLE3][:1] == ["r20-bregman-atan"]
    standard = next(r for r in rt.CIFAR10_TABLE3 if r.name == "r20-standard")
    args = _args(*standard.argv)
    assert "--activation" not in standard.argv  # the ReLU baseline by default
    net = ic.build_model(args)[1]
    assert net.act.name == "relu" and net.init == "fan_in"
    r18 = ic.build_model(
        _args(*next(r for r in rt.CIFAR100_TABLE4 if r.name == "r18-bregman").argv)
    )
    assert r18[1].stem == "imagenet" and r18[1].act.beta == 1000 and r18[1].fc.out_features == 100
    ffnn3 = next(r for r in rt.FASHION_FFNN if r.name == "ffnn3-bregman")
    mlp = ic.build_model(_args(*ffnn3.argv))[2]
    assert [layer.out_features for layer in mlp.layers] == [784, 784, 784]
