"""Multi-process evaluation with torch.distributed: ranks split the seeds, or share each seed's batches (DDP).

Must not: train seeds with a loop of its own in seed mode (each rank calls rd3kit.api.evaluate), set up a
process group at import time, or write files on any rank but 0. Launch with
`torchrun --nproc_per_node N -m rd3kit.scale.distributed SET -p PROTOCOL ...` (the arguments of
`rd3kit eval-distributed`) or let `spawn` start local ranks.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F

from rd3kit import api
from rd3kit.errors import ConfigError, DataError, RD3Error, VerificationFailed
from rd3kit.protocols import get_protocol, protocol_hash
from rd3kit.protocols.spec import CoupledProtocol
from rd3kit.record import read_json, write_json
from rd3kit.sources.formats import DistilledSet
from rd3kit.sources.realdata import RealSplit

MODES = ("seeds", "ddp")
BACKENDS = ("gloo", "nccl")
T = TypeVar("T")


@dataclass(frozen=True)
class DistJob:
    """What every rank runs; picklable, so `spawn` hands it whole to each local rank."""

    dset: DistilledSet
    protocol: CoupledProtocol
    test: RealSplit
    train: RealSplit | None = None
    seeds: tuple[int, ...] | None = None
    runtime: api.Runtime = api.Runtime(progress=False)
    mode: str = "seeds"  # "seeds": rank r takes seeds[r::world]; "ddp": every seed trained by all ranks
    threads: int | None = None  # torch intra-op threads per rank; None leaves torch's choice


def shard(seeds: Sequence[int], rank: int, world: int) -> list[int]:
    """The seeds rank `rank` of `world` trains: every world-th one, starting at its rank."""
    return list(seeds)[rank::world]


def rank_runtime(runtime: api.Runtime, local_rank: int) -> api.Runtime:
    """One rank's runtime: a bare `cuda` becomes this rank's GPU; only rank 0 may draw a progress bar."""
    device = f"cuda:{local_rank}" if runtime.device == "cuda" else runtime.device
    return replace(runtime, device=device, progress=runtime.progress and dist.get_rank() == 0)


def _error(exit_code: int, message: str) -> RD3Error:
    """Rebuild an rd3kit error from what crossed a process boundary, keeping its exit code."""
    return {1: VerificationFailed, 2: ConfigError, 3: DataError}.get(exit_code, RD3Error)(message)


def _rank_error(rank: int, exit_code: int, message: str) -> RD3Error:
    return _error(exit_code, f"rank {rank}: {message}")


def _attempt(work: Callable[[], T]) -> tuple:
    """(kind, value) of running `work`: ("ok", result), ("rd3", (exit_code, message)) or ("crash", traceback)."""
    try:
        return "ok", work()
    except RD3Error as exc:
        return "rd3", (exc.exit_code, str(exc))
    except Exception:  # noqa: BLE001 - sent to every rank, then re-raised; a silent rank would hang the rest
        return "crash", traceback.format_exc()


def _raise_failed(outcomes: list[tuple]) -> None:
    for rank, (kind, value) in enumerate(outcomes):
        if kind == "rd3":
            raise _rank_error(rank, *value)
        if kind == "crash":
            raise RuntimeError(f"rank {rank} failed:\n{value}")


def _gather(work: Callable[[], T]) -> list[T]:
    """Run `work` here and all-gather every rank's value; any rank's error is raised on all (none hangs)."""
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, _attempt(work))
    _raise_failed(everyone)
    return [value for _, value in everyone]


def rank0_first(load: Callable[[], T]) -> T:
    """Call `load` on rank 0, then on the others, so a download or cache fill happens once."""
    kind, value = _attempt(load) if dist.get_rank() == 0 else ("ok", None)
    box: list = [(kind, None if kind == "ok" else value)]  # the status travels, never the (large) inputs
    dist.broadcast_object_list(box, src=0)
    _raise_failed(box)
    return value if dist.get_rank() == 0 else load()


def _resolve(protocol: CoupledProtocol | str, seeds: Sequence[int] | None) -> tuple[CoupledProtocol, list[int]]:
    if isinstance(protocol, str):
        protocol = get_protocol(protocol)
    if protocol.family != "coupled":
        raise ConfigError(f"{protocol.ref}: distributed evaluation covers the coupled family, got {protocol.family!r}")
    seeds = list(protocol.seeds if seeds is None else seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be a non-empty list without duplicates, got {seeds}")
    return protocol, seeds


def _record(protocol: CoupledProtocol, inputs: tuple, per_seed: list[dict], runtime: api.Runtime, wall_s: float,
            layout: dict) -> dict:
    """The single-process record (api._record) plus `runtime.distributed`; `inputs` is (dset, test, train)."""
    dset, test, train = inputs
    summary = api.check_set(dset, protocol)
    record = api._record(protocol, protocol_hash(protocol), dset, test, train, summary, per_seed,
                         api.resolve_lr(protocol, dset), runtime, wall_s)
    record["runtime"]["distributed"] = {"backend": dist.get_backend(), "world_size": dist.get_world_size(),
                                        **layout}
    return record


def evaluate_seeds(dset: DistilledSet, protocol: CoupledProtocol | str, test: RealSplit, *,
                   train: RealSplit | None = None, seeds: Sequence[int] | None = None,
                   runtime: api.Runtime = api.Runtime()) -> dict | None:
    """Split the seeds over the ranks (rank r takes seeds[r::world]); rank 0 returns the record, others None.

    Each rank runs `api.evaluate` on its seeds, so per-seed numbers and cache files are the single-process ones.
    """
    protocol, seeds = _resolve(protocol, seeds)
    rank, world = dist.get_rank(), dist.get_world_size()
    started = time.perf_counter()
    mine = shard(seeds, rank, world)

    def work() -> tuple[str, list[dict]]:
        if not mine:  # more ranks than seeds: this one idles
            return runtime.device, []
        return runtime.device, api.evaluate(dset, protocol, test, train=train, seeds=mine, runtime=runtime)["per_seed"]

    gathered = _gather(work)
    if rank != 0:
        return None
    by_seed = {run["seed"]: run for _, runs in gathered for run in runs}
    layout = {"mode": "seeds", "seeds_by_rank": [shard(seeds, r, world) for r in range(world)],
              "devices": [device for device, _ in gathered]}
    return _record(protocol, (dset, test, train), [by_seed[s] for s in seeds], runtime,
                   time.perf_counter() - started, layout)


def _slice(m: int, rank: int, world: int) -> tuple[slice, float]:
    """This rank's contiguous part of an m-sample batch and the factor that makes DDP's mean the batch mean.

    DDP averages gradients over ranks; scaling a part's mean loss by count * world / m turns that average into
    the full batch's mean (the factor is exactly 1.0 when m splits evenly). An empty part trains on one sample
    with factor 0 so that every rank still joins the gradient all-reduce.
    """
    lo, hi = m * rank // world, m * (rank + 1) // world
    if hi == lo:
        return slice(0, 1), 0.0
    return slice(lo, hi), (hi - lo) * world / m


def _sync_norms(net: torch.nn.Module, device: torch.device, group) -> torch.nn.Module:
    """Batch norm over a part is not batch norm over the batch: SyncBatchNorm on CUDA, refused elsewhere."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return net
    if device.type != "cuda":
        raise ConfigError("--mode ddp: the model uses batch norm, which needs SyncBatchNorm (CUDA only) to see the "
                          "whole batch; on CPU use --mode seeds")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(net, process_group=group)


def train_ddp(protocol: CoupledProtocol, images: torch.Tensor, labels: torch.Tensor, seed: int, lr: float,
              group=None) -> torch.nn.Module:
    """Data-parallel twin of rd3kit.train.coupled.train: one seed, its batches split over the ranks of `group`.

    Every rank draws the same streams (init, batch order, augmentation of the whole batch), trains on its part
    of each batch, and DDP all-reduces the gradients: only the float summation order differs from one
    process. Mirrors coupled.train step for step; tests/test_distributed.py checks a 1-rank group is bitwise it.
    """
    from torch.nn.parallel import DistributedDataParallel

    from rd3kit.train import coupled
    from rd3kit.train.augment import augment

    rank, world, device = dist.get_rank(group), dist.get_world_size(group), images.device
    rng = coupled.streams(seed, device)
    net = _sync_norms(coupled.build_seeded(protocol, rng.init, device), device, group)
    ddp = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None, process_group=group)
    loss_fn = coupled.soft_cross_entropy if protocol.labels.kind == "soft_logits" else F.cross_entropy
    optimizer = coupled.sgd(net.parameters(), protocol, lr)
    n, batch = images.shape[0], protocol.batch_size
    with warnings.catch_warnings():
        # A 1-channel first conv gets grads in a stride layout DDP's bucket views do not mirror; DDP copies them
        # (a speed note, not a numerical one), so its per-step warning is silenced for this loop only.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        for ep in range(protocol.run_epochs):
            ddp.train()
            order = torch.randperm(n, generator=rng.shuffle).to(device)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                # The whole batch is augmented on every rank so the aug stream advances as in one process.
                x = augment(images[idx], protocol.augmentation, rng.aug)
                part, factor = _slice(idx.numel(), rank, world)
                loss = loss_fn(ddp(x[part]), labels[idx][part]) * factor
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            lr, optimizer = coupled.end_epoch(protocol, ep, lr, optimizer, net.parameters())
    return net


def _ddp_cache_path(runtime: api.Runtime, protocol, dset, test, train, seed: int) -> Path | None:
    # A DDP run differs from one process in float order, and that order depends on world size and backend:
    # its cache entry is keyed apart from the single-process one.
    if runtime.cache_dir is None:
        return None
    base = api.run_key(protocol_hash(protocol), dset, test, train, seed)
    key = hashlib.sha256(f"{base}|ddp|{dist.get_backend()}|{dist.get_world_size()}".encode()).hexdigest()
    return runtime.cache_dir / f"{key}.json"


def _ddp_seed(protocol: CoupledProtocol, prepared, seed: int, lr: float, cache_path: Path | None) -> dict:
    from rd3kit.train.coupled import top1

    hit: list = [read_json(cache_path) if dist.get_rank() == 0 and cache_path and cache_path.exists() else None]
    dist.broadcast_object_list(hit, src=0)
    if hit[0] is not None:
        return hit[0] | {"cached": True}
    x_set, y_set, x_test, y_test = prepared
    t0 = time.perf_counter()
    net = train_ddp(protocol, x_set, y_set, seed, lr)
    train_s = time.perf_counter() - t0
    if dist.get_rank() != 0:  # weights are the same on every rank; rank 0 tests them
        return {}
    run = {"seed": seed, "top1": top1(net, x_test, y_test, protocol.test_batch_size),
           "train_s": round(train_s, 3), "wall_s": round(time.perf_counter() - t0, 3)}
    if cache_path is not None:
        write_json(cache_path, run)
    return run | {"cached": False}


def evaluate_ddp(dset: DistilledSet, protocol: CoupledProtocol | str, test: RealSplit, *,
                 train: RealSplit | None = None, seeds: Sequence[int] | None = None,
                 runtime: api.Runtime = api.Runtime()) -> dict | None:
    """Train the seeds one after another, each with its batches split over all ranks; rank 0 returns the record."""
    protocol, seeds = _resolve(protocol, seeds)

    def setup():
        api.check_set(dset, protocol)
        api.require_train(protocol, train)
        return api.resolve_lr(protocol, dset)[0]

    lr = _gather(setup)[dist.get_rank()]
    started = time.perf_counter()
    prepared = api._prepare(dset, protocol, test, train, torch.device(runtime.device))
    per_seed = [_ddp_seed(protocol, prepared, s, lr, _ddp_cache_path(runtime, protocol, dset, test, train, s))
                for s in seeds]
    if dist.get_rank() != 0:
        return None
    return _record(protocol, (dset, test, train), per_seed, runtime, time.perf_counter() - started, {"mode": "ddp"})


def check_engine(mode: str, engine: str) -> None:
    """`--engine` picks how `--mode seeds` trains; `--mode ddp` has its own loop (per-seed float order)."""
    if mode == "ddp" and engine != api.PER_SEED:
        raise ConfigError(f"--mode ddp trains each seed with its own loop; --engine {engine} applies to --mode seeds")


def run_job(job: DistJob, local_rank: int) -> dict | None:
    """Run `job` as this rank of the initialised default group; rank 0 returns the record."""
    if job.mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {job.mode!r}")
    check_engine(job.mode, job.runtime.engine)
    threads = torch.get_num_threads()
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    evaluate = evaluate_seeds if job.mode == "seeds" else evaluate_ddp
    try:
        return evaluate(job.dset, job.protocol, job.test, train=job.train, seeds=job.seeds,
                        runtime=rank_runtime(job.runtime, local_rank))
    finally:
        torch.set_num_threads(threads)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned(local_rank: int, world: int, backend: str, init: str, jobs: Sequence[DistJob], result: Path) -> None:
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method=init, rank=local_rank, world_size=world)
    try:
        records = [run_job(job, local_rank) for job in jobs]
        if local_rank == 0:
            write_json(result, {"records": records})
    except RD3Error as exc:  # every rank raises it; rank 0 reports it to the parent
        if local_rank == 0:
            write_json(result, {"error": str(exc), "exit_code": exc.exit_code})
    finally:
        dist.destroy_process_group()


def spawn(jobs: Sequence[DistJob], nprocs: int, backend: str = "gloo") -> list[dict]:
    """Run `jobs` in turn on `nprocs` local processes joined over 127.0.0.1 and a free port.

    Returns rank 0's record of each job. The ranks start once for all jobs (starting torch costs seconds).
    """
    import torch.multiprocessing as mp

    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if nprocs < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nprocs}")
    with tempfile.TemporaryDirectory(prefix="rd3kit-dist-") as tmp:
        result = Path(tmp) / "result.json"
        init = f"tcp://127.0.0.1:{free_port()}"
        mp.spawn(_spawned, args=(nprocs, backend, init, list(jobs), result), nprocs=nprocs, join=True)
        outcome = read_json(result)
    if "error" in outcome:
        raise _error(outcome["exit_code"], outcome["error"])
    return outcome["records"]


def init_from_env(backend: str) -> int:
    """Join the group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT); returns LOCAL_RANK."""
    import os

    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://")
    return local_rank


if __name__ == "__main__":  # torchrun -m rd3kit.scale.distributed ...: the eval-distributed command, one rank
    from rd3kit.cli import app

    app(["eval-distributed", *sys.argv[1:]], prog_name="python -m rd3kit.scale.distributed")
