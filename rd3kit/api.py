"""The Python API the CLI and tests share: check inputs, evaluate a set under a protocol over seeds, resume.

Must not: download anything or parse command lines. Each finished seed is cached on disk at once, so a
crash or Ctrl-C loses at most the seed in flight and a rerun finishes the rest.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from rd3kit.engines import ENGINES, PER_SEED
from rd3kit.errors import ConfigError, DataError
from rd3kit.preprocess import ZCA, prepare_set, prepare_test
from rd3kit.protocols import canonical_json, get_protocol, protocol_hash
from rd3kit.protocols.spec import CoupledProtocol
from rd3kit.record import SCHEMA, environment, now, read_json, write_json
from rd3kit.sources.formats import DistilledSet
from rd3kit.sources.realdata import RealSplit

# Bumped when the evaluator's numerics change in a way that invalidates cached per-seed runs.
EVALUATOR_VERSION = 1
# The reference engine: one network per seed (rd3kit.train.coupled). Its cache key carries no engine field, so
# keys written before engines were recorded stay valid; every other engine's runs are keyed apart (run_key).


def default_cache_dir() -> Path:
    return Path(os.environ.get("RD3KIT_HOME", Path.home() / ".cache" / "rd3kit")) / "runs"


@dataclass(frozen=True)
class Runtime:
    """Options that never move a number: recorded in the result, never hashed into the protocol."""

    device: str = "cpu"
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    progress: bool = True
    # How seeds run (docs/speed.md). "per-seed" (default) is the reference: rd3kit.train.coupled, eager.
    # "compiled": the same loop with the network under torch.compile (rd3kit.train.compiled), compiled once per
    # process. "multiseed": the uncached seeds stacked (rd3kit.train.multiseed), chunk by chunk, each chunk
    # cached when it ends, so a crash loses the chunk in flight rather than one seed. The other engines equal
    # the per-seed path within float order, not bitwise, so they are cached under their own keys and never read
    # by a per-seed run; they do read per-seed results.
    engine: str = PER_SEED
    torch_compile: bool = False  # multiseed only: torch.compile the stacked forward (CUDA graphs on CUDA)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")


def check_set(dset: DistilledSet, protocol: CoupledProtocol) -> dict:
    """Validate a distilled set against the protocol's dataset; returns a summary (ipc, n)."""
    spec, where = protocol.data, dset.origin or "distilled set"
    x, y = dset.images, dset.labels
    if x.ndim != 4:
        raise DataError(f"{where}: images must be (N,C,H,W), got shape {tuple(x.shape)}")
    if x.shape[1] != spec.channels:
        raise DataError(f"{where}: images have {x.shape[1]} channels, {protocol.ref} expects {spec.channels}")
    if tuple(x.shape[2:]) != tuple(spec.image_size):
        raise DataError(f"{where}: images are {tuple(x.shape[2:])}, {protocol.ref} expects {tuple(spec.image_size)}")
    if not torch.isfinite(x).all():
        raise DataError(f"{where}: images hold NaN or inf values")
    if y.shape[0] != x.shape[0]:
        raise DataError(f"{where}: {x.shape[0]} images but {y.shape[0]} labels")
    if dset.soft and y.shape[1] != spec.num_classes:
        raise DataError(f"{where}: soft labels have {y.shape[1]} classes, expected {spec.num_classes}")
    hard = dset.hard_labels()
    if int(hard.min()) < 0 or int(hard.max()) >= spec.num_classes:
        raise DataError(f"{where}: labels outside 0..{spec.num_classes - 1} (got {int(hard.min())}..{int(hard.max())})")
    counts = torch.bincount(hard, minlength=spec.num_classes)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise DataError(f"{where}: classes {missing[:10]} have no images; a distilled set covers every class")
    balanced = bool(counts.min() == counts.max())
    # A whole train split (the audit's full-data arm) keeps its classes as the dataset has them (SVHN's differ).
    if not balanced and not dset.recipe.get("full_train_set"):
        raise DataError(f"{where}: IPC is not constant across classes (min {int(counts.min())}, max {int(counts.max())})")
    if protocol.labels.kind == "soft_logits" and not dset.soft:
        raise DataError(f"{where}: {protocol.ref} trains on stored soft logits, but the set has hard labels")
    return {"n": int(x.shape[0]), "ipc": int(counts[0]) if balanced else None}


def require_train(protocol: CoupledProtocol, train: RealSplit | None) -> None:
    """A ZCA protocol fits its whitening on the full train split: refuse to start without it."""
    if protocol.data.zca is not None and train is None:
        raise ConfigError(f"{protocol.ref} whitens with ZCA fitted on the full train set: pass --train")


def resolve_lr(protocol: CoupledProtocol, dset: DistilledSet) -> tuple[float, str]:
    """The learning rate and where it came from; a missing learned lr falls back only if the protocol allows."""
    source = protocol.optimizer.lr_source
    if source == "protocol":
        return protocol.optimizer.lr, "protocol"
    if dset.lr is not None:
        return dset.lr, "artifact"
    if source == "artifact":
        raise DataError(f"{dset.origin}: {protocol.ref} needs the learned lr shipped with the set (lr_best.pt)")
    return protocol.optimizer.lr, "protocol-fallback (artifact has no learned lr; flagged)"


def run_key(phash: str, dset: DistilledSet, test: RealSplit, train: RealSplit | None, seed: int,
            engine: str = PER_SEED) -> str:
    """Cache key of one seed's run: everything that can change its number, the engine's float order included."""
    ident = {
        "evaluator": EVALUATOR_VERSION, "protocol": phash, "set": sorted(dset.files.values()),
        "set_space": dset.space, "set_content": _content_hash(dset), "test": test.sha256,
        "train": train.sha256 if train is not None else None, "seed": seed,
    }
    if engine != PER_SEED:  # the per-seed key is left as it was: existing caches stay valid
        ident["engine"] = engine
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()


def _content_hash(dset: DistilledSet) -> str:
    # Files alone do not pin the tensors: --select picks one of several sets in a DC file.
    h = hashlib.sha256(dset.images.numpy().tobytes())
    h.update(dset.labels.numpy().tobytes())
    return h.hexdigest()


def evaluate(
    dset: DistilledSet,
    protocol: CoupledProtocol | str,
    test: RealSplit,
    *,
    train: RealSplit | None = None,
    seeds: Sequence[int] | None = None,
    runtime: Runtime = Runtime(),
) -> dict:
    """Train one network per seed on `dset` under `protocol`, test at the final epoch, return the record."""
    if isinstance(protocol, str):
        protocol = get_protocol(protocol)
    summary = check_set(dset, protocol)
    seeds = list(protocol.seeds if seeds is None else seeds)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds has duplicates: {seeds}")
    require_train(protocol, train)
    phash, device = protocol_hash(protocol), torch.device(runtime.device)
    lr, lr_source = resolve_lr(protocol, dset)
    started = time.perf_counter()
    engine, trainer = _engine_name(runtime, protocol), None
    per_seed, prepared, pending = [], None, []
    for seed in seeds:
        hit, cache_path = _lookup(runtime, phash, dset, test, train, seed, engine)
        if hit is not None:
            per_seed.append(hit)
            continue
        if prepared is None:
            prepared = _prepare(dset, protocol, test, train, device)
        if runtime.engine == "multiseed" and engine != PER_SEED:  # trained together below
            pending.append((_multiseed_run(prepared, seed, dset), cache_path))
            continue
        if runtime.engine == "compiled" and trainer is None:
            from rd3kit.train.compiled import Compiled

            trainer = Compiled(protocol, device)
        run = _run_seed(protocol, prepared, seed, lr, runtime, trainer) | {"engine": engine}
        if cache_path is not None:
            write_json(cache_path, run)
        per_seed.append(run | {"cached": False})
    if pending:  # multiseed hook (Runtime.engine)
        per_seed = sorted(per_seed + _run_batched(protocol, prepared[2:], pending, lr, runtime, engine),
                          key=lambda r: seeds.index(r["seed"]))
    return _record(protocol, phash, dset, test, train, summary, per_seed, (lr, lr_source), runtime,
                   time.perf_counter() - started)


def evaluate_runs(
    runs: Sequence[tuple[DistilledSet, int]],
    protocol: CoupledProtocol | str,
    test: RealSplit,
    *,
    train: RealSplit | None = None,
    runtime: Runtime = Runtime(),
) -> list[dict]:
    """`evaluate(dset, protocol, test, seeds=[seed])` for each (set, seed) of `runs`, in order: one record each.

    Under `Runtime(engine="multiseed")` on a protocol it can stack, the uncached runs whose sets share one shape
    and lr train side by side (an audit's distilled set and its random subsets: `multiseed.train_runs`), in
    chunks of `multiseed.seeds_per_pass` (one on CPU), each run cached under its own key as its chunk ends. Any
    other engine evaluates the runs one by one.
    """
    if isinstance(protocol, str):
        protocol = get_protocol(protocol)
    engine = _engine_name(runtime, protocol)
    if runtime.engine != "multiseed" or engine == PER_SEED:
        return [evaluate(dset, protocol, test, train=train, seeds=[seed], runtime=runtime) for dset, seed in runs]
    require_train(protocol, train)
    summaries = [check_set(dset, protocol) for dset, _ in runs]
    phash, device = protocol_hash(protocol), torch.device(runtime.device)
    zca = ZCA(train, protocol.data.zca.eps) if protocol.data.zca is not None else None
    done, groups, test_xy = {}, {}, None
    for i, (dset, seed) in enumerate(runs):
        hit, cache_path = _lookup(runtime, phash, dset, test, train, seed, engine)
        if hit is not None:
            done[i] = hit
            continue
        test_xy = test_xy or (prepare_test(test, protocol.data, zca).to(device), test.labels.to(device))
        run = _multiseed_run(_prepare_set(dset, protocol, zca, device), seed, dset)
        key = (tuple(run.images.shape), tuple(run.labels.shape), resolve_lr(protocol, dset)[0])
        groups.setdefault(key, []).append((i, run, cache_path))
    for (_, _, lr), members in groups.items():
        trained = _run_batched(protocol, test_xy, [(run, path) for _, run, path in members], lr, runtime, engine)
        done.update({i: run for (i, _, _), run in zip(members, trained)})
    # Each record's wall time is its run's (a stacked chunk's time split evenly; a cached run's original time).
    return [_record(protocol, phash, dset, test, train, summary, [done[i]], resolve_lr(protocol, dset), runtime,
                    done[i].get("wall_s", 0.0)) for i, ((dset, _), summary) in enumerate(zip(runs, summaries))]


def _lookup(runtime: Runtime, phash: str, dset, test, train, seed: int, engine: str) -> tuple[dict | None, Path | None]:
    """(the cached run, None) or (None, where to cache it). Another engine reuses a per-seed result (the
    reference) before its own; a per-seed run reads only its own."""
    keys = dict.fromkeys([run_key(phash, dset, test, train, seed), run_key(phash, dset, test, train, seed, engine)])
    paths = [runtime.cache_dir / f"{key}.json" for key in keys] if runtime.cache_dir else [None]
    hit = next((path for path in paths if path is not None and path.exists()), None)
    if hit is not None:  # entries from before engines were recorded are per-seed ones (the only engine then)
        return {"engine": PER_SEED} | read_json(hit) | {"cached": True}, None
    return None, paths[-1]


def _prepare_set(dset, protocol, zca, device) -> tuple[torch.Tensor, torch.Tensor]:
    x_set = prepare_set(dset, protocol.data, zca).to(device)
    y_set = dset.labels.to(device)
    if protocol.labels.kind == "hard" and dset.soft:
        y_set = y_set.argmax(dim=1)  # a hard-label protocol takes the argmax of stored logits
    return x_set, y_set


def _prepare(dset, protocol, test, train, device):
    zca = ZCA(train, protocol.data.zca.eps) if protocol.data.zca is not None else None
    return (*_prepare_set(dset, protocol, zca, device), prepare_test(test, protocol.data, zca).to(device),
            test.labels.to(device))


def _multiseed_run(prepared, seed: int, dset: DistilledSet):
    """A `multiseed.Run` of `seed` on a prepared set, tagged with the set's origin for `batched_with`."""
    from rd3kit.train import multiseed

    return multiseed.Run(prepared[0], prepared[1], seed, dset.origin)


def _run_seed(protocol: CoupledProtocol, prepared, seed: int, lr: float, runtime: Runtime, trainer=None) -> dict:
    """One seed, eager (`coupled`) or through `trainer` (a `compiled.Compiled`)."""
    from rd3kit.train.coupled import top1, train

    x_set, y_set, x_test, y_test = prepared
    t0 = time.perf_counter()
    bar = tqdm(total=protocol.run_epochs, desc=f"seed {seed}", unit="ep", leave=False, disable=not runtime.progress)
    if trainer is None:
        net = train(protocol, x_set, y_set, seed, lr, on_epoch=lambda _ep: bar.update())
    else:  # the first seed of a process includes the compile (cached on disk by Inductor for later processes)
        net = trainer.train(x_set, y_set, seed, lr, on_epoch=lambda _ep: bar.update())
    bar.close()
    train_s = time.perf_counter() - t0
    acc = top1(net, x_test, y_test, protocol.test_batch_size) if trainer is None else \
        trainer.top1(x_test, y_test, protocol.test_batch_size)
    # The thread count is per seed: a cached seed may come from a run with other threads, and CPU convolutions sum
    # in a thread-count-dependent order (README: the IPC10 seeds moved by up to 0.12 pp between 1 and 2 threads).
    return {"seed": seed, "top1": acc, "train_s": round(train_s, 3), "wall_s": round(time.perf_counter() - t0, 3),
            "torch_threads": torch.get_num_threads()}


def _engine_name(runtime: Runtime, protocol: CoupledProtocol) -> str:
    """The engine that will compute the seeds: part of their cache key and recorded with each seed."""
    if runtime.engine == "compiled":
        from rd3kit.train.compiled import ENGINE

        return ENGINE
    if runtime.engine == "multiseed" and _stackable(protocol):  # else its seeds run one by one, per-seed
        from rd3kit.train.multiseed import ENGINE

        return ENGINE + ("+compile" if runtime.torch_compile else "")
    return PER_SEED


def _stackable(protocol: CoupledProtocol) -> bool:
    from rd3kit.train.multiseed import supports

    return supports(protocol)


def _run_batched(protocol: CoupledProtocol, test_xy, pending: list, lr: float, runtime: Runtime,
                 name: str) -> list[dict]:
    """Train the pending (multiseed.Run, cache path) pairs stacked, chunk by chunk, caching each chunk as it ends.

    `batched_with` lists the chunk's seeds when its runs share one set, else "origin#seed" per run."""
    from rd3kit.train import multiseed

    x_test, y_test = test_xy
    engine = multiseed.Engine(torch_compile=runtime.torch_compile)
    first = pending[0][0].images
    size, runs = multiseed.seeds_per_pass(protocol, first.shape[0], first.device), []
    for start in range(0, len(pending), size):
        chunk = pending[start:start + size]
        seeds = [run.seed for run, _ in chunk]
        together = seeds if len({run.origin for run, _ in chunk}) == 1 else \
            [f"{run.origin}#{run.seed}" for run, _ in chunk]
        t0 = time.perf_counter()
        bar = tqdm(total=protocol.run_epochs, desc=f"seeds {seeds}", unit="ep", leave=False, disable=not runtime.progress)
        stacked = multiseed.train_runs(protocol, [run for run, _ in chunk], lr, lambda _ep: bar.update(), engine)
        bar.close()
        train_s = time.perf_counter() - t0
        accs = multiseed.top1_all(stacked, x_test, y_test, multiseed.test_batch(protocol, stacked, x_test.device))
        share, precision = 1 / len(chunk), multiseed.precision(first.device)  # times: the chunk's, split evenly
        for (run_in, cache_path), acc in zip(chunk, accs):
            run = {"seed": run_in.seed, "top1": acc, "train_s": round(train_s * share, 3),
                   "wall_s": round((time.perf_counter() - t0) * share, 3), "engine": name, "precision": precision,
                   "torch_threads": torch.get_num_threads(), "batched_with": together}
            if cache_path is not None:
                write_json(cache_path, run)
            runs.append(run | {"cached": False})
    return runs


def _record(protocol, phash, dset, test, train, summary, per_seed, lr_info, runtime, wall_s) -> dict:
    accs = np.array([r["top1"] for r in per_seed], dtype=np.float64)
    return {
        "schema": SCHEMA,
        "created": now(),
        "protocol": {"ref": protocol.ref, "sha256": phash, "kind": protocol.kind, "spec": protocol.model_dump(mode="json")},
        "inputs": {
            "set": {"origin": dset.origin, "space": dset.space, "files": dset.files, "content_sha256": _content_hash(dset),
                    **dset.recipe, **summary},
            "test": test.describe(),
            "train": train.describe() if train is not None else None,
        },
        "lr": {"value": lr_info[0], "source": lr_info[1]},
        "seeds": [r["seed"] for r in per_seed],
        "top1": [r["top1"] for r in per_seed],
        "mean": float(accs.mean()),
        "std": float(accs.std(ddof=0)),  # population std (np.std), as DC/MTT report
        "n": len(accs),
        "metric": protocol.metric,
        "per_seed": per_seed,
        # What computed the seeds (float order): "per-seed" is the reference; "unrecorded" where an entry lacks it.
        "engine": ",".join(sorted({r.get("engine", "unrecorded") for r in per_seed})),
        "environment": environment(runtime.device),
        "runtime": {"device": runtime.device, "cache_dir": str(runtime.cache_dir) if runtime.cache_dir else None,
                    "engine": runtime.engine, "torch_compile": runtime.torch_compile},
        "wall_s": round(wall_s, 3),
    }
