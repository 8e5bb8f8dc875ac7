"""Forgetting selections end to end: load the train split, run (or read the cached) scoring run, store the
selections. The only module of rd3kit.baselines that reads and writes files.

Must not: download, or reuse cached correctness computed on another train file or another run definition
(the cache key hashes the train sha256 and the full run description).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from rd3kit.baselines import forgetting as fg
from rd3kit.baselines import store
from rd3kit.errors import ConfigError


def default_cache() -> Path:
    return Path(os.environ.get("RD3KIT_HOME", Path.home() / ".cache" / "rd3kit")) / "forgetting"


def cached_correctness(run: fg.ForgettingRun, train, cache_dir: Path | None) -> tuple[np.ndarray, float, bool]:
    """(correctness, wall_s of the run that made it, read from cache?) for `run` on `train`."""
    key = hashlib.sha256(json.dumps({"train": train.sha256, "run": run.describe()}, sort_keys=True).encode())
    path = (cache_dir or default_cache()) / f"{key.hexdigest()}.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["correct"], float(data["wall_s"]), True
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"forgetting run: epoch {done}/{total} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    correct = fg.record_correctness(run, train.images, train.labels, progress)
    wall_s = round(time.perf_counter() - started, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, correct=correct, wall_s=wall_s)
    return correct, wall_s, False


def forgetting_selections(dataset: str, train_path: Path, protocol_ref: str, epochs: int, seed: int,
                          ipcs: list[int], cache_dir: Path | None, out_dir: Path, overwrite: bool) -> list[str]:
    """Run/reuse the scoring run and store one selection per IPC; returns one line per file."""
    from rd3kit.protocols import get_protocol
    from rd3kit.sources.realdata import load_split

    protocol = get_protocol(protocol_ref)
    if protocol.family != "coupled" or protocol.data.name != dataset:
        raise ConfigError(f"--protocol {protocol_ref}: expected a coupled protocol for {dataset}, got "
                          f"{protocol.family} for {getattr(protocol, 'data', None) and protocol.data.name}")
    train = load_split(dataset, "train", train_path, None)
    run = fg.ForgettingRun(protocol, epochs, seed)
    correct, wall_s, cached = cached_correctness(run, train, cache_dir)
    counts = fg.forgetting_counts(correct)
    # wall_s stays out of the file: a rerun must reproduce the stored selection byte for byte.
    learned = counts[np.isfinite(counts)]
    described = dict(run.describe(), never_learned=int(counts.size - learned.size),
                     mean_events_of_learned=round(float(learned.mean()), 6) if learned.size else None)
    lines = []
    for ipc in ipcs:
        picks = fg.select_forgetting(counts, train.labels, ipc)
        sel = store.make_selection(picks, method="forgetting", train=train, ipc=ipc, seed=seed, feature_space=None,
                                   run=described)
        path = out_dir / sel.name
        written = store.save(sel, path, overwrite=overwrite)
        lines.append(f"{'wrote' if written else 'unchanged'} {path}: forgetting ipc={ipc} (run {run.protocol.ref}, "
                     f"{epochs} epochs, seed {seed}, {'cached' if cached else f'{wall_s} s'})")
    return lines
