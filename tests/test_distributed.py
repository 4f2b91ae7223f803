"""Data-parallel training: 2 gloo processes follow single-process training step for step."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from bregnn.distributed import (
    DistContext,
    all_sum,
    average,
    barrier,
    cleanup,
    context,
    init_process,
    shard,
)
from bregnn.models import MLP
from bregnn.train import TrainConfig, fit, load_checkpoint

WORLD = 2


def _problem() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(70, 6, generator=gen) * 0.8 + 0.1  # inside (0, 1), the sigmoid range
    y = torch.randint(0, 3, (70,), generator=gen)
    return x.double(), y


def _model() -> MLP:
    torch.manual_seed(1)
    return MLP(6, [8, 8], 3, activation="sigmoid", variant="bregman").double()


def _config() -> TrainConfig:
    # 70 samples, batch 16: the last batch has 6 samples, split 3 + 3; milestones and
    # weight decay exercise the scheduler and optimizer state.
    return TrainConfig(
        lr=0.5, epochs=3, batch_size=16, momentum=0.9, weight_decay=1e-3,
        milestones=(2,), gamma=0.5, seed=3, progress=False,
    )  # fmt: skip


def _worker(rank: int, init_method: str, run_dir: str, out_path: str) -> None:
    torch.set_num_threads(1)
    ctx = init_process(rank, WORLD, init_method, backend="gloo")
    try:
        model = _model()
        assert context() == ctx
        history = fit(model, _problem(), _config(), val=_problem(), run_dir=run_dir, ctx=ctx)
        x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]) * (rank + 1)  # rank 0: x, rank 1: 2x
        mean_x, mean_n = average([x, torch.tensor([rank + 1, 4])], ctx)
        sums = all_sum([float(rank), 1.0], ctx)
        barrier(ctx)
        if ctx.is_main:
            torch.save(
                {
                    "state": model.state_dict(),
                    "rows": history.rows,
                    "mean": (mean_x, mean_n),
                    "sums": sums,
                },
                out_path,
            )
    finally:
        cleanup()


def test_shard_splits_a_batch_into_contiguous_parts():
    batch = torch.arange(7)
    parts = [shard(batch, r, 3) for r in range(3)]
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4], [5, 6]]
    assert torch.equal(torch.cat(parts), batch)


def test_two_processes_match_single_process_training(tmp_path):
    init_method = f"file://{tmp_path / 'rendezvous'}"
    out_path = tmp_path / "ddp.pt"
    mp.spawn(
        _worker, args=(init_method, str(tmp_path / "run"), str(out_path)), nprocs=WORLD, join=True
    )
    ddp = torch.load(out_path, weights_only=True)
    torch.testing.assert_close(ddp["mean"][0], torch.tensor([[1.5, 3.0], [4.5, 6.0]]))
    assert ddp["mean"][1].tolist() == [1, 4]  # integers: the floor of the mean
    assert ddp["sums"] == [1.0, 2.0]

    reference = _model()
    history = fit(reference, _problem(), _config(), val=_problem())
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(ddp["state"][name], value, rtol=1e-10, atol=1e-12)
    for ours, theirs in zip(ddp["rows"], history.rows):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-10, abs=1e-12), key
    # rank 0 wrote a checkpoint that single-process code loads
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["epoch"] == 3 and ckpt["world_size"] == WORLD
    fresh = _model()
    fresh.load_state_dict(ckpt["model"])
    torch.testing.assert_close(fresh.state_dict(), reference.state_dict(), rtol=1e-10, atol=1e-12)


def test_single_process_context_matches_fit():
    ours, reference = _model(), _model()
    fit(ours, _problem(), _config(), ctx=DistContext(0, 1, 0, torch.device("cpu")))
    fit(reference, _problem(), _config())
    for a, b in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_one_process_needs_no_group():
    ctx = context()
    assert ctx == DistContext() and ctx.is_main and not ctx.initialized
    assert DistContext(world_size=2).initialized
    x = torch.ones(3)
    (mean,) = average([x], ctx)
    assert torch.equal(mean, x) and mean is not x  # a clone
    assert all_sum([1.5, 2.0], ctx) == [1.5, 2.0]
    barrier(ctx)  # no-op
    barrier()
    cleanup()  # no-op


def test_bad_arguments():
    ctx = DistContext(0, 4, 0, torch.device("cpu"))
    with pytest.raises(ValueError, match="smaller than world_size"):
        fit(_model(), _problem(), TrainConfig(batch_size=2, epochs=1), ctx=ctx)
    with pytest.raises(ValueError, match="outside"):
        init_process(3, 2, "file:///nonexistent")
    with pytest.raises(
        ValueError, match=r"unknown backend 'mpi2'; valid backends: \['auto', 'gloo', 'nccl'\]"
    ):
        init_process(0, 1, "file:///nonexistent", backend="mpi2")


def test_init_from_env_needs_torchrun(monkeypatch):
    from bregnn.distributed import init_from_env

    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        init_from_env()
