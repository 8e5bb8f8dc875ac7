"""torch.distributed on CPU (gloo): 2 spawned ranks split seeds with the single-process numbers; DDP of one seed.

Starting ranks costs seconds (each imports torch), so one spawn runs both the seed-split and the DDP job.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.distributed as dist

from rd3kit import api
from rd3kit.embedded import digits_split, digits_subset
from rd3kit.errors import ConfigError
from rd3kit.scale import distributed

# DDP of one seed changes only the float summation order (gradient all-reduce of two half-batch means). On
# this protocol the measured top-1 difference is 0 (docs/scale.md); 2 test images (2/360) is the same
# margin test_evaluate.py allows for another machine's BLAS, kept for a rank's different thread scheduling.
DDP_TOP1_ATOL = 2 / 360


@pytest.fixture(scope="module")
def inputs():
    return digits_subset("random", 2, 0), digits_split("test")


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the single-process reference with the ranks' thread count: CPU kernels sum in thread-sized chunks."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_shard_gives_every_seed_to_one_rank():
    seeds = [5, 3, 9, 1, 7]
    parts = [distributed.shard(seeds, r, 2) for r in range(2)]
    assert parts == [[5, 9, 7], [3, 1]]
    assert distributed.shard([4], 1, 2) == []  # more ranks than seeds: a rank may idle


@pytest.mark.parametrize("m,world", [(20, 2), (7, 2), (6, 4), (1, 2)])
def test_slices_cover_the_batch_and_weight_each_sample_1_over_m(m, world):
    weight = torch.zeros(m, dtype=torch.float64)
    for rank in range(world):
        part, factor = distributed._slice(m, rank, world)
        count = len(range(m)[part])
        # DDP averages over ranks: a sample's weight is factor / (count * world); factor 0 marks a padding part
        weight[part] += factor / (count * world)
    assert torch.allclose(weight, torch.full((m,), 1 / m, dtype=torch.float64))


def test_two_gloo_ranks_match_one_process(tiny, inputs, tmp_path):
    dset, test = inputs
    compiled = api.Runtime(cache_dir=None, progress=False, engine="compiled")
    with torch_threads(1):
        single = api.evaluate(dset, tiny, test, runtime=api.Runtime(cache_dir=None, progress=False))
        single_compiled = api.evaluate(dset, tiny, test, runtime=compiled)
    runs = api.Runtime(cache_dir=tmp_path / "runs", progress=False)
    jobs = [distributed.DistJob(dset, tiny, test, runtime=runs, threads=1),
            distributed.DistJob(dset, tiny, test, seeds=(0, 1), runtime=runs, mode="ddp", threads=1),
            distributed.DistJob(dset, tiny, test, runtime=compiled, threads=1)]
    by_seeds, by_ddp, by_seeds_compiled = distributed.spawn(jobs, nprocs=2, backend="gloo")

    # The compiled engine per rank (rd3kit eval-distributed --engine compiled): the single-process numbers.
    assert by_seeds_compiled["top1"] == single_compiled["top1"]
    assert by_seeds_compiled["engine"] == single_compiled["engine"] == "compiled-v1"

    assert by_seeds["seeds"] == [0, 1, 2] and by_seeds["top1"] == single["top1"]  # identical, not close
    assert by_seeds["runtime"]["distributed"] == {"backend": "gloo", "world_size": 2, "mode": "seeds",
                                                  "seeds_by_rank": [[0, 2], [1]], "devices": ["cpu", "cpu"]}
    assert {k: by_seeds[k] for k in ("protocol", "inputs", "lr", "n")} == {k: single[k] for k in ("protocol", "inputs", "lr", "n")}
    # The ranks filled the ordinary per-seed cache: one process now finds every seed there.
    again = api.evaluate(dset, tiny, test, runtime=runs)
    assert all(r["cached"] for r in again["per_seed"]) and again["top1"] == single["top1"]

    assert by_ddp["seeds"] == [0, 1] and by_ddp["runtime"]["distributed"]["mode"] == "ddp"
    for got, want in zip(by_ddp["top1"], single["top1"][:2]):
        assert abs(got - want) <= DDP_TOP1_ATOL


def test_ddp_loop_on_one_rank_is_coupled_train_bitwise(tiny, inputs):
    """train_ddp mirrors coupled.train step for step: with one rank nothing may differ, not even a bit."""
    from rd3kit.train.coupled import train

    dset, test = inputs
    x, y, _, _ = api._prepare(dset, tiny, test, None, torch.device("cpu"))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{distributed.free_port()}", rank=0, world_size=1)
    try:
        got = distributed.train_ddp(tiny, x, y, 1, 0.01).state_dict()
    finally:
        dist.destroy_process_group()
    want = train(tiny, x, y, 1, 0.01).state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_batch_norm_ddp_on_cpu_is_refused():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    with pytest.raises(ConfigError, match="SyncBatchNorm"):
        distributed._sync_norms(net, torch.device("cpu"), None)


def test_an_error_on_any_rank_is_raised_with_its_rank_and_exit_code():
    from rd3kit.errors import DataError

    with pytest.raises(DataError, match="^rank 1: set is bad$"):
        distributed._raise_failed([("ok", 1), ("rd3", (3, "set is bad")), ("ok", 2)])
    with pytest.raises(RuntimeError, match="rank 0 failed:\nTraceback"):
        distributed._raise_failed([distributed._attempt(lambda: 1 / 0)])


def test_eval_distributed_checks_mode_before_starting_ranks():
    from typer.testing import CliRunner

    from rd3kit.cli import app

    res = CliRunner().invoke(app, ["eval-distributed", "embedded:digits/random/ipc2/seed0", "-p", "coupled-digits@v1",
                                   "--mode", "pipeline"])
    assert res.exit_code == 2 and "--mode must be one of seeds, ddp" in res.output
    res = CliRunner().invoke(app, ["eval-distributed", "embedded:digits/random/ipc2/seed0", "-p", "coupled-digits@v1",
                                   "--mode", "ddp", "--engine", "compiled"])
    assert res.exit_code == 2 and "--engine compiled applies to --mode seeds" in res.output


def test_a_ddp_job_with_another_engine_is_refused_before_training(inputs):
    dset, test = inputs
    job = distributed.DistJob(dset, "coupled-digits@v1", test, mode="ddp",
                              runtime=api.Runtime(cache_dir=None, progress=False, engine="multiseed"))
    with pytest.raises(ConfigError, match="--engine multiseed applies to --mode seeds"):
        distributed.run_job(job, 0)
