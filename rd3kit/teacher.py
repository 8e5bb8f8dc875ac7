"""Teachers with provenance: load a checked teacher file, and train/save the kit's own teacher under a protocol.

Must not: download anything, unpickle arbitrary objects (safetensors, or torch.load(weights_only=True) only),
or accept a teacher whose source, sha256 or recorded protocol does not match what the protocol requires.
File I/O lives in `load_teacher` and `save_teacher`; `train_teacher` is pure computation.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rd3kit.errors import ConfigError, DataError
from rd3kit.protocols.decoupled import TeacherProtocol, TeacherSpec
from rd3kit.protocols.spec import DataSpec
from rd3kit.sources.formats import sha256_file
from rd3kit.sources.realdata import RealSplit

RECORD_SCHEMA = "rd3kit.teacher/v1"
_SOURCES = {
    "hub": re.compile(r"^hf://[\w.-]+/[\w.-]+@[0-9a-f]{40}/\S+$"),
    "torchvision": re.compile(r"^torchvision:[A-Za-z0-9_]+_Weights\.[A-Z0-9_]+$"),
    "rd3kit-teacher": re.compile(r"^rd3kit-teacher:\S+\.json$"),
}
_STATE_KEYS = ("state_dict", "model", "net", "state_dict_ema")  # wrappers SRe2L/RDED-style checkpoints use


@dataclass(frozen=True)
class TeacherRun:
    """A teacher trained by the kit: the model, its final-epoch test top1 and what it cost."""

    model: nn.Module
    top1: float
    train_s: float
    epoch_loss: tuple[float, ...]


def source_kind(source: str) -> str:
    """Which accepted form `source` is: hub (hf://owner/repo@<commit>/path), torchvision:<enum>, rd3kit-teacher:<record>."""
    for kind, pattern in _SOURCES.items():
        if pattern.match(source):
            return kind
    raise ConfigError(f"--teacher-source {source!r}: expected hf://OWNER/REPO@<40-hex commit>/PATH, "
                      "torchvision:<Arch>_Weights.<NAME> or rd3kit-teacher:<record.json>")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a weights-only torch file; DataParallel 'module.' prefixes dropped."""
    if not path.is_file():
        raise DataError(f"{path}: teacher file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a refused or corrupt pickle
            raise DataError(f"{path}: not a weights-only torch file ({type(exc).__name__}); convert it to "
                            "safetensors") from None
        for key in _STATE_KEYS:
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: expected a mapping of parameter names to tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _check_torchvision(spec: TeacherSpec, source: str, digest: str, path: Path) -> dict:
    import torchvision.models as tvm

    name = source.split(":", 1)[1]
    if name != spec.torchvision_weights:
        raise ConfigError(f"--teacher-source: the protocol requires torchvision:{spec.torchvision_weights}, got {name}")
    url = tvm.get_weight(name).url
    prefix = url.rsplit("-", 1)[-1].split(".")[0]  # torchvision names files <arch>-<sha256 prefix>.pth
    if not digest.startswith(prefix):
        raise DataError(f"{path}: sha256 {digest[:12]}... does not start with {prefix}, the hash torchvision "
                        f"publishes for {name} ({url})")
    return {"torchvision_url": url}


def _check_record(spec: TeacherSpec, source: str, digest: str, path: Path) -> dict:
    from rd3kit.protocols import read_lock
    from rd3kit.record import read_json

    record_path = Path(source.split(":", 1)[1])
    record = read_json(record_path)
    where = f"{record_path}"
    if record.get("schema") != RECORD_SCHEMA:
        raise DataError(f"{where}: schema expected {RECORD_SCHEMA!r}, got {record.get('schema')!r}")
    ref = record["protocol"]["ref"]
    if ref != spec.trained_under:
        raise ConfigError(f"{where}: teacher trained under {ref}, the protocol requires {spec.trained_under}")
    if read_lock().get(ref) != record["protocol"]["sha256"]:
        raise DataError(f"{where}: protocol.sha256 does not match the released {ref} in lock.json")
    if record["weights"]["sha256"] != digest:
        raise DataError(f"{path}: sha256 {digest[:12]}... but {where} records {record['weights']['sha256'][:12]}...")
    if record["model"] != spec.model.model_dump(mode="json"):
        raise ConfigError(f"{where}: model differs from the protocol's teacher.model")
    return {"record": str(record_path), "record_top1": record["top1"], "record_seed": record["seed"]}


def check_teacher_file(spec: TeacherSpec, path: Path, source: str) -> dict:
    """Check a teacher file against what the protocol requires; returns the provenance to record."""
    kind = source_kind(source)
    if kind not in spec.accepts:
        raise ConfigError(f"--teacher-source: the protocol accepts {list(spec.accepts)} teachers, got a {kind} source")
    digest = sha256_file(path) if path.is_file() else ""
    if not digest:
        raise DataError(f"{path}: teacher file not found")
    if spec.sha256 is not None and digest != spec.sha256:
        raise DataError(f"{path}: sha256 {digest[:12]}..., the protocol pins {spec.sha256[:12]}...")
    info = {"source": source, "kind": kind, "file": str(path), "sha256": digest}
    if kind == "torchvision":
        info |= _check_torchvision(spec, source, digest, path)
    elif kind == "rd3kit-teacher":
        info |= _check_record(spec, source, digest, path)
    return info


def load_teacher(spec: TeacherSpec, data: DataSpec, path: Path, source: str) -> tuple[nn.Module, dict]:
    """Build the protocol's teacher network, load the checked file into it (strict), freeze it in eval mode."""
    from rd3kit.models.students import build_net

    info = check_teacher_file(spec, path, source)
    with torch.random.fork_rng(devices=[]):
        net = build_net(spec.model, data.channels, tuple(data.image_size))
    try:
        net.load_state_dict(read_state_dict(path), strict=True)
    except RuntimeError as exc:
        raise DataError(f"{path}: does not fit teacher.model {spec.model.source}:{spec.model.name} "
                        f"({str(exc).splitlines()[0]})") from None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, info


def _teacher_epoch(protocol: TeacherProtocol, net: nn.Module, train: RealSplit, epoch: int, rngs,
                   optimizer: torch.optim.Optimizer) -> float:
    from rd3kit.train.batchaug import augment_batch
    from rd3kit.train.decoupled import set_lr
    from rd3kit.train.schedules import lr_factor

    device = next(net.parameters()).device
    n, batch = train.images.shape[0], protocol.batch_size
    steps = math.ceil(n / batch)
    order = torch.randperm(n, generator=rngs.shuffle)
    net.train()
    total = 0.0
    for step in range(steps):
        set_lr(optimizer, protocol.optimizer.lr * lr_factor(protocol.schedule, epoch, step, steps, protocol.epochs))
        idx = order[step * batch:(step + 1) * batch]
        x = train.images[idx].to(device).to(torch.float32) / 255.0
        aug = augment_batch(x, protocol.augmentation, protocol.data.mean, protocol.data.std, rngs.aug)
        loss = F.cross_entropy(net(aug.images), train.labels[idx].to(device), label_smoothing=protocol.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total / steps


def train_teacher(protocol: TeacherProtocol, train: RealSplit, test: RealSplit, seed: int,
                  device: torch.device = torch.device("cpu"),
                  on_epoch: Callable[[int, float], None] | None = None) -> TeacherRun:
    """Train the kit's teacher on a real train split with hard labels; test it once, at the final epoch."""
    from rd3kit.train.coupled import streams
    from rd3kit.train.decoupled import build_seeded, evaluate_top1, make_optimizer

    if train.dataset != protocol.data.name or test.dataset != protocol.data.name:
        raise DataError(f"{protocol.ref} trains on {protocol.data.name}, got {train.dataset}/{test.dataset} splits")
    rngs = streams(seed, torch.device("cpu"))
    net = build_seeded(protocol.model, protocol.data, rngs.init, device)
    optimizer = make_optimizer(net, protocol.optimizer)
    t0, losses = time.perf_counter(), []
    for epoch in range(protocol.epochs):
        losses.append(_teacher_epoch(protocol, net, train, epoch, rngs, optimizer))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    train_s = time.perf_counter() - t0
    top1 = evaluate_top1(net, test, protocol.data, protocol.eval, device)
    return TeacherRun(net, top1, train_s, tuple(losses))


def save_teacher(run: TeacherRun, protocol: TeacherProtocol, seed: int, splits: tuple[RealSplit, RealSplit],
                 out_dir: Path, wall_s: float, device: str) -> Path:
    """Write `<id>-v<N>-seed<S>.safetensors` and its JSON record; returns the record's path. Never overwrites."""
    from safetensors.torch import save_file

    from rd3kit.protocols import protocol_hash
    from rd3kit.record import environment, now, write_json

    stem = f"{protocol.id}-v{protocol.version}-seed{seed}"
    weights, record_path = out_dir / f"{stem}.safetensors", out_dir / f"{stem}.json"
    for path in (weights, record_path):
        if path.exists():
            raise ConfigError(f"{path}: exists; teachers are never overwritten, choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
    save_file(state, str(weights))
    write_json(record_path, {
        "schema": RECORD_SCHEMA, "created": now(),
        "weights": {"file": weights.name, "sha256": sha256_file(weights), "format": "safetensors"},
        "protocol": {"ref": protocol.ref, "sha256": protocol_hash(protocol)},
        "model": protocol.model.model_dump(mode="json"), "seed": seed, "top1": run.top1,
        "metric": protocol.metric, "train": splits[0].describe(), "test": splits[1].describe(),
        "epoch_loss": list(run.epoch_loss), "train_s": round(run.train_s, 3), "wall_s": round(wall_s, 3),
        "environment": environment(device),
    })
    return record_path
