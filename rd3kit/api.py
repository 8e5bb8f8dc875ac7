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

from rd3kit.errors import ConfigError, DataError
from rd3kit.preprocess import ZCA, prepare_set, prepare_test
from rd3kit.protocols import canonical_json, get_protocol, protocol_hash
from rd3kit.protocols.spec import CoupledProtocol
from rd3kit.record import SCHEMA, environment, now, read_json, write_json
from rd3kit.sources.formats import DistilledSet
from rd3kit.sources.realdata import RealSplit

# Bumped when the evaluator's numerics change in a way that invalidates cached per-seed runs.
EVALUATOR_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("RD3KIT_HOME", Path.home() / ".cache" / "rd3kit")) / "runs"


@dataclass(frozen=True)
class Runtime:
    """Options that never move a number: recorded in the result, never hashed into the protocol."""

    device: str = "cpu"
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    progress: bool = True


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
    if counts.min() != counts.max():
        raise DataError(f"{where}: IPC is not constant across classes (min {int(counts.min())}, max {int(counts.max())})")
    if protocol.labels.kind == "soft_logits" and not dset.soft:
        raise DataError(f"{where}: {protocol.ref} trains on stored soft logits, but the set has hard labels")
    return {"n": int(x.shape[0]), "ipc": int(counts[0])}


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


def run_key(phash: str, dset: DistilledSet, test: RealSplit, train: RealSplit | None, seed: int) -> str:
    """Cache key of one seed's run: everything that can change its number."""
    ident = {
        "evaluator": EVALUATOR_VERSION, "protocol": phash, "set": sorted(dset.files.values()),
        "set_space": dset.space, "set_content": _content_hash(dset), "test": test.sha256,
        "train": train.sha256 if train is not None else None, "seed": seed,
    }
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
    if protocol.data.zca is not None and train is None:
        raise ConfigError(f"{protocol.ref} whitens with ZCA fitted on the full train set: pass --train")
    phash, device = protocol_hash(protocol), torch.device(runtime.device)
    lr, lr_source = resolve_lr(protocol, dset)
    started = time.perf_counter()
    per_seed, prepared = [], None
    for seed in seeds:
        cache_path = runtime.cache_dir / f"{run_key(phash, dset, test, train, seed)}.json" if runtime.cache_dir else None
        if cache_path is not None and cache_path.exists():
            per_seed.append(read_json(cache_path) | {"cached": True})
            continue
        if prepared is None:
            prepared = _prepare(dset, protocol, test, train, device)
        run = _run_seed(protocol, prepared, seed, lr, runtime)
        if cache_path is not None:
            write_json(cache_path, run)
        per_seed.append(run | {"cached": False})
    return _record(protocol, phash, dset, test, train, summary, per_seed, (lr, lr_source), runtime,
                   time.perf_counter() - started)


def _prepare(dset, protocol, test, train, device):
    zca = ZCA(train, protocol.data.zca.eps) if protocol.data.zca is not None else None
    x_set = prepare_set(dset, protocol.data, zca).to(device)
    y_set = dset.labels.to(device)
    if protocol.labels.kind == "hard" and dset.soft:
        y_set = y_set.argmax(dim=1)  # a hard-label protocol takes the argmax of stored logits
    return x_set, y_set, prepare_test(test, protocol.data, zca).to(device), test.labels.to(device)


def _run_seed(protocol: CoupledProtocol, prepared, seed: int, lr: float, runtime: Runtime) -> dict:
    from rd3kit.train.coupled import top1, train

    x_set, y_set, x_test, y_test = prepared
    t0 = time.perf_counter()
    bar = tqdm(total=protocol.run_epochs, desc=f"seed {seed}", unit="ep", leave=False, disable=not runtime.progress)
    net = train(protocol, x_set, y_set, seed, lr, on_epoch=lambda _ep: bar.update())
    bar.close()
    train_s = time.perf_counter() - t0
    acc = top1(net, x_test, y_test, protocol.test_batch_size)
    return {"seed": seed, "top1": acc, "train_s": round(train_s, 3), "wall_s": round(time.perf_counter() - t0, 3)}


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
        "environment": environment(runtime.device),
        "runtime": {"device": runtime.device, "cache_dir": str(runtime.cache_dir) if runtime.cache_dir else None},
        "wall_s": round(wall_s, 3),
    }
