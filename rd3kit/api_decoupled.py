"""Decoupled evaluation as a library call: inputs (set, teacher or FKD labels, test split) -> students over
seeds -> the result record. `rd3kit eval`/`eval-decoupled` and the reference store's reruns call `run_eval`.

Must not: parse command lines or print (progress goes to the caller's callback), or hold training logic
(rd3kit.train.decoupled, rd3kit.teacher).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from rd3kit.errors import ConfigError, DataError

RESULT_SCHEMA = "rd3kit.decoupled-result/v1"


def _floats(text: Optional[str], flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def _seeds(text: Optional[str], default: tuple[int, ...]) -> list[int]:
    if text is None:
        return list(default)
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be non-empty without duplicates, got {seeds}")
    return seeds


def _real_subset(path: Path, proto, ipc: Optional[int], subset_seed: Optional[int]):
    """A class-balanced random subset of a real split, in [0,1], with its indices recorded."""
    import torch

    from rd3kit.baselines.select import select_random
    from rd3kit.sources.realdata import from_npz

    if ipc is None or subset_seed is None:
        raise ConfigError(f"{path}: a real .npz needs --ipc and --subset-seed to draw a random subset from it")
    split = from_npz(path, proto.data.name, "train")
    picks = select_random(split.labels, ipc, subset_seed)
    index = torch.tensor([i for c in sorted(picks) for i in picks[c]])
    info = {"origin": str(path), "kind": "random-subset", "split": split.describe(), "ipc": ipc,
            "subset_seed": subset_seed, "indices": index.tolist(), "space": "raw01 (uint8/255)"}
    return split.images[index].to(torch.float32) / 255.0, split.labels[index], info


def _distilled(path: Path, space: Optional[str], select: Optional[int], norm: tuple | None):
    """A stored distilled set, brought to [0,1] (de-normalised with the producer's constants if needed)."""
    import torch

    from rd3kit.sources.formats import load_local

    if space not in ("raw01", "normalized"):
        raise ConfigError(f"{path}: --space must be raw01 or normalized for the decoupled pipeline, got {space!r}")
    dset = load_local([path], space, select)  # type: ignore[arg-type]
    images = dset.images
    if space == "normalized":
        if norm is None or norm[0] is None or norm[1] is None:
            raise ConfigError(f"{path}: --space normalized needs the producer's --set-mean and --set-std")
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in norm)
        images = images * std + mean  # undo the producer's normalisation; not clamped (optimised pixels)
    info = {"origin": dset.origin, "kind": "distilled", "files": dset.files, "space": space, "select": select,
            "denormalised_with": None if space == "raw01" else {"mean": list(norm[0]), "std": list(norm[1])}}
    return images.contiguous(), dset.labels, info


def _image_set(path: Path, space: Optional[str], device: str):
    """An ImageFolder (plain/zipped) or parquet set: streamed by decode workers when large, else decoded once."""
    import os

    import torch

    from rd3kit.sources.stream import STREAM_MIN_IMAGES, open_stream, streamed

    if space not in (None, "raw01"):
        raise ConfigError(f"{path}: image files hold [0,1] pixels (space raw01), not {space!r}")
    dataset = open_stream(path)
    info = dataset.describe() | {"space": "raw01"}
    if len(dataset) > STREAM_MIN_IMAGES:
        workers = min(8, os.cpu_count() or 1)  # runtime choice: recorded, never changes a number
        return streamed(dataset, workers, torch.device(device)), dataset.labels, info | {"workers": workers}
    images = torch.stack([dataset[i] for i in range(len(dataset))]).to(torch.float32).div_(255.0)
    return images, dataset.labels, info | {"streamed": False}


def _check_set(images, labels, proto) -> int:
    import torch

    d = proto.data
    if len(images.shape) != 4 or tuple(images.shape[1:]) != (d.channels, *d.image_size):
        raise DataError(f"set images {tuple(images.shape)}: {proto.ref} expects (N, {d.channels}, {d.image_size[0]}, "
                        f"{d.image_size[1]})")
    hard = labels.argmax(dim=1) if labels.ndim == 2 else labels
    counts = torch.bincount(hard, minlength=d.num_classes)
    if counts.numel() != d.num_classes or counts.min() == 0 or counts.min() != counts.max():
        raise DataError(f"set labels: expected the same number of images in each of {d.num_classes} classes, "
                        f"got counts {counts.tolist()[:20]}")
    return int(counts[0])


def _record(proto, set_info, teacher_info, test, rows, device, wall_s) -> dict:
    import numpy as np

    from rd3kit.protocols import protocol_hash
    from rd3kit.record import environment, now

    accs = np.array([r["top1"] for r in rows], dtype=np.float64)
    return {
        "schema": RESULT_SCHEMA, "created": now(), "command": " ".join(["rd3kit", *sys.argv[1:]]),
        "protocol": {"ref": proto.ref, "sha256": protocol_hash(proto), "kind": proto.kind},
        "inputs": {"set": set_info, "teacher": teacher_info, "test": test.describe()},
        "seeds": [r["seed"] for r in rows], "top1": [r["top1"] for r in rows],
        "mean": float(accs.mean()), "std": float(accs.std(ddof=0)), "n": len(rows),  # population std, as DC/MTT
        "metric": proto.metric, "per_seed": rows, "environment": environment(device), "wall_s": round(wall_s, 3),
        "note": "diagnostic_* fields are best-over-probed-epochs values, selected on the test set: never the metric",
    }


@dataclass(frozen=True)
class EvalArgs:
    """Everything a decoupled evaluation takes from the command line (shared by `eval` and `eval-decoupled`)."""

    set_path: Path
    teacher: Optional[Path]
    teacher_source: Optional[str]
    test: Optional[Path]
    space: Optional[str] = None
    set_norm: tuple[Optional[str], Optional[str]] = (None, None)
    select: Optional[int] = None
    subset: tuple[Optional[int], Optional[int]] = (None, None)  # (ipc, subset_seed) for a real .npz SET
    seeds: Optional[str] = None
    device: str = "cpu"
    out: Optional[Path] = None
    fkd: Optional[Path] = None  # stored FKD labels, for fkd_replay protocols


def _load_inputs(proto, args: EvalArgs):
    """The set in [0,1] with its labels and provenance, the checked teacher, and the test split."""
    from rd3kit.sources.realdata import load_split
    from rd3kit.teacher import load_teacher

    replay = proto.soft_labels.source == "fkd_replay"
    if (args.fkd is not None) != replay:
        raise ConfigError(f"{proto.ref}: --fkd DIR is " + ("required: the protocol replays stored FKD labels" if replay
                          else f"only for fkd_replay protocols; this one's soft labels are {proto.soft_labels.source!r}"))
    if not replay and (args.teacher is None or args.teacher_source is None):
        raise ConfigError(f"{proto.ref}: a decoupled protocol needs --teacher FILE and --teacher-source SRC")
    if args.test is None:
        raise ConfigError(f"{proto.ref}: a decoupled protocol needs --test TEST.npz (the real test split)")
    if args.set_path.suffix == ".npz":
        images, labels, set_info = _real_subset(args.set_path, proto, *args.subset)
    elif args.set_path.is_dir() or args.set_path.suffix.lower() in (".zip", ".parquet"):
        images, labels, set_info = _image_set(args.set_path, args.space, args.device)
    else:
        norm = (_floats(args.set_norm[0], "--set-mean"), _floats(args.set_norm[1], "--set-std"))
        images, labels, set_info = _distilled(args.set_path, args.space, args.select, norm)
    set_info["ipc_checked"] = _check_set(images, labels, proto)
    if replay:  # the logits were made by the artifact's teacher; a --teacher given here is checked and recorded
        net = _open_fkd(proto, args.fkd, images.shape[0], set_info["ipc_checked"])
        teacher_info = {"fkd": net.describe()}
        if args.teacher is not None and args.teacher_source is not None:
            teacher_info |= load_teacher(proto.teacher, proto.data, args.teacher, args.teacher_source)[1]
    else:
        net, teacher_info = load_teacher(proto.teacher, proto.data, args.teacher, args.teacher_source)
    test_split = load_split(proto.data.name, proto.data.test_split, args.test, None)
    return (images, labels, set_info), (net, teacher_info), test_split


def _open_fkd(proto, root: Path, n: int, ipc: int):
    from rd3kit.sources.fkd import open_fkd
    from rd3kit.train.decoupled import resolve_batch

    return open_fkd(root, n, resolve_batch(proto.batch, n, ipc), proto.data.num_classes)


def run_eval(proto, args: EvalArgs, progress: Callable[[str], None] | None = None) -> dict:
    """Train students under a decoupled protocol over seeds; write the record if asked and return it.

    `progress` receives a line every 50 epochs of each seed (the CLI prints it on stderr).
    """
    import torch

    from rd3kit.protocols.decoupled import DecoupledProtocol
    from rd3kit.record import write_json
    from rd3kit.train.decoupled import run_seeds

    if not isinstance(proto, DecoupledProtocol):
        raise ConfigError(f"--protocol {proto.ref}: expected a 'decoupled' protocol, got {proto.family!r}"
                          + ("; train teachers with `rd3kit teacher train`" if proto.family == "teacher" else ""))
    t0 = time.perf_counter()
    (images, labels, set_info), (net, teacher_info), test_split = _load_inputs(proto, args)
    dev = torch.device(args.device)

    def report(seed, e) -> None:
        if progress is not None and (e.epoch + 1) % 50 == 0:
            progress(f"seed {seed} epoch {e.epoch + 1}/{proto.epochs} loss {e.loss:.4f}"
                     + (f" probe top1 {100 * e.probe_top1:.2f} %" if e.probe_top1 is not None else "")
                     + f" ({time.perf_counter() - t0:.0f} s)")

    images = images.to(dev) if isinstance(images, torch.Tensor) else images  # a Streamed set carries its device
    rows = run_seeds(proto, images, labels.to(dev), net.to(dev) if hasattr(net, "to") else net, test_split,
                     _seeds(args.seeds, proto.seeds), report)
    if "fkd" in teacher_info:
        teacher_info["fkd"] = net.describe()  # now with the sha256 of every FKD file the seeds read
    result = _record(proto, set_info, teacher_info, test_split, rows, args.device, time.perf_counter() - t0)
    if args.out is not None:
        write_json(args.out, result)
    return result
