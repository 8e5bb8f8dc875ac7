"""The decoupled-family training loop: a student learns a distilled set from a teacher's soft labels.

Must not: read or write files, print, or touch global RNG state: every random draw comes from generators
derived from the seed passed in. The teacher never receives gradients and, unless the protocol says
otherwise (SRe2L's CIFAR script), runs in eval mode on exactly the augmented batch the student sees.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rd3kit.errors import ConfigError
from rd3kit.models.students import build_net
from rd3kit.protocols.decoupled import AdamWSpec, BatchSpec, DecoupledProtocol, EvalSpec, SGDSpec, SoftLabelSpec
from rd3kit.protocols.spec import DataSpec
from rd3kit.sources.realdata import RealSplit
from rd3kit.train.batchaug import Augmented, augment_batch, mix_targets, normalize
from rd3kit.train.coupled import streams
from rd3kit.train.replay import FkdBatch, ReplaySource, augment_recorded, replay_augment
from rd3kit.train.schedules import lr_factor


@dataclass(frozen=True)
class EpochLog:
    """One epoch: lr factor used, mean training loss, and the test probe if one ran (a diagnostic only)."""

    epoch: int
    lr: float
    loss: float
    probe_top1: float | None


@dataclass(frozen=True)
class Hooks:
    """Optional callbacks: `on_epoch` for progress, `probe` (model -> top1) for the best-epoch diagnostic, and
    `record(epoch, step, indices, FkdBatch)` to keep each online-teacher batch in FKD form (the draws are the same
    with or without it, so recording never changes the run)."""

    on_epoch: Callable[[EpochLog], None] | None = None
    probe: Callable[[nn.Module], float] | None = None
    record: Callable[[int, int, Tensor, FkdBatch], None] | None = None


@dataclass(frozen=True)
class RunResult:
    """The model to evaluate (the EMA copy when the protocol uses EMA), per-epoch logs and the batch size used."""

    model: nn.Module
    log: tuple[EpochLog, ...]
    batch_size: int


def kl_loss(student_logits: Tensor, target_probs: Tensor, temperature: float, t2_factor: bool) -> Tensor:
    """KLDivLoss(batchmean)(log_softmax(s/T), p); multiplied by T^2 only when the protocol says so."""
    loss = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), target_probs, reduction="batchmean")
    return loss * temperature * temperature if t2_factor else loss


def soft_loss(spec: SoftLabelSpec, student_logits: Tensor, target_logits: Tensor, mix_hard: Tensor,
              mix_stored: Callable[[Tensor], Tensor]) -> Tensor:
    """The protocol's loss. `mix_stored` mixes per-image stored targets like the images (identity when online)."""
    if spec.loss == "kl":
        assert spec.temperature is not None  # SoftLabelSpec's validator guarantees it
        probs = mix_stored(F.softmax(target_logits / spec.temperature, dim=1))
        return kl_loss(student_logits, probs, spec.temperature, spec.t2_factor)
    assert spec.ce_weight is not None
    mse = F.mse_loss(student_logits, mix_stored(target_logits))
    return mse + spec.ce_weight * F.cross_entropy(student_logits, mix_hard)


def resolve_batch(spec: BatchSpec, n: int, ipc: int) -> int:
    """The batch size for a set of `n` images at `ipc` images per class."""
    if spec.size is not None:
        batch = spec.size
    else:
        table = dict(spec.by_ipc)
        if ipc not in table:
            raise ConfigError(f"batch.by_ipc: the protocol defines a batch size for IPC {sorted(table)}, got IPC {ipc}")
        batch = table[ipc]
    return min(batch, n) if spec.cap_at_set_size else batch


def param_groups(net: nn.Module, weight_decay: float, scope: str) -> list[dict]:
    """'matrices': only >1-D '*weight*' tensors decay (SRe2L/RDED get_parameters); 'all': everything decays."""
    if scope == "all":
        return [{"params": list(net.parameters()), "weight_decay": weight_decay}]
    decay, rest = [], []
    for name, p in net.named_parameters():
        (decay if "weight" in name and p.ndim > 1 else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def make_optimizer(net: nn.Module, spec: AdamWSpec | SGDSpec) -> torch.optim.Optimizer:
    groups = param_groups(net, spec.weight_decay, spec.decay_scope)
    if isinstance(spec, AdamWSpec):
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)
    return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def build_seeded(spec, data: DataSpec, seed_init: int, device: torch.device) -> nn.Module:
    """Build a NetSpec's network with its init drawn from `seed_init`, leaving global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_init)
        net = build_net(spec, data.channels, tuple(data.image_size))
    return net.to(device)


def freeze_teacher(teacher: nn.Module, mode: str) -> nn.Module:
    """No gradients for the teacher; eval mode (BN running stats), or a private train-mode copy (SRe2L CIFAR)."""
    if mode == "train":
        teacher = copy.deepcopy(teacher).train()  # train-mode BN updates buffers: never touch the caller's
    else:
        teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, rate: float) -> None:
    """ema = rate*ema + (1-rate)*model over parameters and float buffers; integer buffers are copied."""
    for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            e.mul_(rate).add_(m, alpha=1.0 - rate)
        else:
            e.copy_(m)


def _targets(protocol: DecoupledProtocol, teacher: nn.Module, aug: Augmented, stored: Tensor | None) -> Tensor:
    if protocol.soft_labels.source == "online_teacher":
        with torch.no_grad():
            return teacher(aug.images)
    assert stored is not None
    return stored


def _optimize(protocol: DecoupledProtocol, student: nn.Module, aug: Augmented, target: Tensor, y: Tensor,
              optimizer: torch.optim.Optimizer) -> float:
    """One step on a prepared batch; `target` is teacher logits (online/replayed) or stored per-image logits."""
    if protocol.student_clean_forward:
        with torch.no_grad():
            student(aug.clean)  # RDED's train-mode forward on the un-mixed batch: only BN running stats move
    hard = y.argmax(dim=1) if y.ndim == 2 else y
    mix_hard = mix_targets(F.one_hot(hard, protocol.data.num_classes).to(aug.images.dtype), aug.mix)
    stored = protocol.soft_labels.source == "stored"
    mixer = (lambda t: mix_targets(t, aug.mix)) if stored else (lambda t: t)
    loss = soft_loss(protocol.soft_labels, student(aug.images), target, mix_hard, mixer)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _train_step(protocol: DecoupledProtocol, student: nn.Module, teacher: nn.Module, batch: tuple[Tensor, Tensor],
                gen: torch.Generator, optimizer: torch.optim.Optimizer) -> float:
    x, y = batch
    aug = augment_batch(x, protocol.augmentation, protocol.data.mean, protocol.data.std, gen)
    target = _targets(protocol, teacher, aug, y if protocol.soft_labels.source == "stored" else None)
    return _optimize(protocol, student, aug, target, y, optimizer)


def _recorded_step(protocol: DecoupledProtocol, student: nn.Module, teacher: nn.Module, batch: tuple[Tensor, Tensor],
                   gen: torch.Generator, optimizer: torch.optim.Optimizer) -> tuple[float, FkdBatch]:
    """An online-teacher step that also returns its FKD record (same draws as _train_step)."""
    x, y = batch
    aug, rec = augment_recorded(x, protocol.augmentation, protocol.data.mean, protocol.data.std, gen)
    target = _targets(protocol, teacher, aug, None)
    rec = FkdBatch(rec.coords, rec.flip, rec.mix_index, rec.mix_lam, rec.mix_box, target.detach().cpu().clone())
    return _optimize(protocol, student, aug, target, y, optimizer), rec


def _replayed_step(protocol: DecoupledProtocol, student: nn.Module, rec: FkdBatch, batch: tuple[Tensor, Tensor],
                   optimizer: torch.optim.Optimizer, where: str) -> float:
    """A step on a stored FKD batch: its augmentation rebuilt, its logits as targets; nothing drawn."""
    x, y = batch
    if rec.soft.shape != (x.shape[0], protocol.data.num_classes):
        raise ConfigError(f"{where}: soft labels {tuple(rec.soft.shape)}, expected ({x.shape[0]}, "
                          f"{protocol.data.num_classes})")
    aug = replay_augment(x, rec, protocol.augmentation, protocol.data.mean, protocol.data.std, where)
    return _optimize(protocol, student, aug, rec.soft.to(x.device, torch.float32), y, optimizer)


def _check_inputs(protocol: DecoupledProtocol, images: Tensor, labels: Tensor) -> int:
    """Validate shapes; return the images per class."""
    if protocol.soft_labels.source == "stored" and labels.ndim != 2:
        raise ConfigError(f"{protocol.ref} trains on stored soft labels, but the set has hard labels")
    if len(images.shape) != 4 or images.shape[0] != labels.shape[0]:
        raise ConfigError(f"images must be (N,C,H,W) with one label each, got {tuple(images.shape)} and "
                          f"{tuple(labels.shape)}")
    hard = labels.argmax(dim=1) if labels.ndim == 2 else labels
    counts = torch.bincount(hard.cpu(), minlength=protocol.data.num_classes)
    return int(counts.max())


def _probe_due(ev: EvalSpec, epoch: int, epochs: int) -> bool:
    # The final epoch is never probed here: run_seeds tests it as the metric and adds it to the diagnostic.
    every = ev.best_epoch_every
    return (every is not None and (epoch + 1) % every == 0 and epoch + 1 > ev.best_epoch_from * epochs
            and epoch + 1 < epochs)


@dataclass(frozen=True)
class _Run:
    """What every step of one run shares."""

    protocol: DecoupledProtocol
    student: nn.Module
    labels_from: nn.Module | ReplaySource
    optimizer: torch.optim.Optimizer
    gen: torch.Generator  # augmentation draws
    shuffle: torch.Generator  # per-epoch order (unused when replaying: the FKD order is stored)
    hooks: Hooks


def _label_source(protocol: DecoupledProtocol, teacher: nn.Module | ReplaySource, hooks: Hooks):
    replay = protocol.soft_labels.source == "fkd_replay"
    if replay == isinstance(teacher, nn.Module):
        raise ConfigError(f"{protocol.ref}: soft_labels.source {protocol.soft_labels.source!r} needs "
                          + ("the stored FKD labels (rd3kit.sources.fkd.open_fkd), not a teacher network" if replay
                             else "a teacher network"))
    if replay and teacher.epochs < protocol.epochs:
        raise ConfigError(f"{protocol.ref}: trains {protocol.epochs} epochs, the FKD labels hold {teacher.epochs}")
    if hooks.record is not None and protocol.soft_labels.source != "online_teacher":
        raise ConfigError(f"{protocol.ref}: recording FKD batches needs an online teacher, got "
                          f"{protocol.soft_labels.source!r}")
    return teacher if replay else freeze_teacher(teacher, protocol.teacher.mode)


def _epoch_order(run: _Run, n: int, epoch: int, device: torch.device) -> Tensor:
    if isinstance(run.labels_from, nn.Module):
        return torch.randperm(n, generator=run.shuffle).to(device)
    order = run.labels_from.order(epoch)
    if order.shape != (n,) or not torch.equal(order.sort().values, torch.arange(n)):
        raise ConfigError(f"FKD order of epoch {epoch}: expected a permutation of the set's {n} images, got shape "
                          f"{tuple(order.shape)}")
    return order.to(device)


def _step(run: _Run, batch: tuple[Tensor, Tensor], epoch: int, step: int, idx: Tensor) -> float:
    if not isinstance(run.labels_from, nn.Module):
        rec = run.labels_from.batch(epoch, step)
        return _replayed_step(run.protocol, run.student, rec, batch, run.optimizer, f"FKD epoch {epoch} batch {step}")
    if run.hooks.record is None:
        return _train_step(run.protocol, run.student, run.labels_from, batch, run.gen, run.optimizer)
    loss, rec = _recorded_step(run.protocol, run.student, run.labels_from, batch, run.gen, run.optimizer)
    run.hooks.record(epoch, step, idx.cpu(), rec)
    return loss


def _batch_images(images, order: Tensor, batch: int):
    """The epoch's image batches: slices of an in-memory tensor, or a streamed set decoded by its workers."""
    if isinstance(images, Tensor):
        return (images[order[s * batch:(s + 1) * batch]] for s in range(math.ceil(len(order) / batch)))
    return images.batches(order.cpu(), batch)


def train_decoupled(protocol: DecoupledProtocol, images, labels: Tensor, teacher: nn.Module | ReplaySource,
                    seed: int, hooks: Hooks = Hooks()) -> RunResult:
    """Train one student on `images` ([0,1], N,C,H,W) and `labels` (hard (N,) or stored logits (N,K)).

    `images` is a tensor, or a streamed set (rd3kit.sources.stream.Streamed: `shape`, `device`, and
    `batches(order, batch)` yielding what `images[chunk]` would), whose images are decoded per batch by workers.

    `teacher` is the teacher network, or for `fkd_replay` protocols the stored FKD labels (a ReplaySource: its
    per-epoch order, augmentation parameters and logits are replayed; nothing is drawn but the student's init).
    Returns the final-epoch model (EMA copy if the protocol says so) and per-epoch logs; nothing is evaluated
    here except the optional `hooks.probe` diagnostic.
    """
    ipc = _check_inputs(protocol, images, labels)
    device = images.device
    rng = streams(seed, torch.device("cpu"))  # batch augmentation draws from a CPU generator on any device
    student = build_seeded(protocol.student, protocol.data, rng.init, device)
    run = _Run(protocol, student, _label_source(protocol, teacher, hooks), make_optimizer(student, protocol.optimizer),
               rng.aug, rng.shuffle, hooks)
    ema = copy.deepcopy(student) if protocol.ema is not None else None
    n = images.shape[0]
    batch = resolve_batch(protocol.batch, n, ipc)
    steps = math.ceil(n / batch)
    log: list[EpochLog] = []
    for epoch in range(protocol.epochs):
        student.train()
        order = _epoch_order(run, n, epoch, device)
        losses = []
        for step, x in enumerate(_batch_images(images, order, batch)):
            factor = lr_factor(protocol.schedule, epoch, step, steps, protocol.epochs)
            set_lr(run.optimizer, protocol.optimizer.lr * factor)
            idx = order[step * batch:(step + 1) * batch]
            losses.append(_step(run, (x, labels[idx]), epoch, step, idx))
            if ema is not None:
                ema_update(ema, student, protocol.ema.rate)
        final = ema if ema is not None else student
        probe = hooks.probe(final) if hooks.probe is not None and _probe_due(protocol.eval, epoch, protocol.epochs) else None
        log.append(EpochLog(epoch, factor, sum(losses) / len(losses), probe))
        if hooks.on_epoch is not None:
            hooks.on_epoch(log[-1])
    return RunResult(ema if ema is not None else student, tuple(log), batch)


def _test_batch(images: Tensor, data: DataSpec, ev: EvalSpec, device: torch.device) -> Tensor:
    from torchvision.transforms.v2 import functional as TF

    x = images.to(device).to(torch.float32) / 255.0
    if ev.resize is not None:
        x = TF.resize(x, [ev.resize], antialias=True)
    if ev.center_crop is not None:
        x = TF.center_crop(x, [ev.center_crop])
    return normalize(x, data.mean, data.std)


@torch.no_grad()
def evaluate_top1(model: nn.Module, split: RealSplit, data: DataSpec, ev: EvalSpec,
                  device: torch.device | None = None) -> float:
    """Top-1 (fraction) of `model` in eval mode on a uint8 split, with the protocol's test transform."""
    device = device or next(model.parameters()).device
    model.eval()
    correct = 0
    for start in range(0, split.images.shape[0], ev.batch_size):
        x = _test_batch(split.images[start:start + ev.batch_size], data, ev, device)
        pred = model(x).argmax(dim=1).cpu()
        correct += int((pred == split.labels[start:start + ev.batch_size]).sum())
    return correct / split.images.shape[0]


def run_seeds(protocol: DecoupledProtocol, images: Tensor, labels: Tensor, teacher: nn.Module, test: RealSplit,
              seeds: Sequence[int], on_epoch: Callable[[int, EpochLog], None] | None = None) -> list[dict]:
    """Train and test one student per seed; returns per-seed final-epoch top1 plus labelled diagnostics."""
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        hooks = Hooks(on_epoch=(lambda e, s=seed: on_epoch(s, e)) if on_epoch else None,
                      probe=lambda m: evaluate_top1(m, test, protocol.data, protocol.eval))
        run = train_decoupled(protocol, images, labels, teacher, seed, hooks)
        train_s = time.perf_counter() - t0
        top1 = evaluate_top1(run.model, test, protocol.data, protocol.eval)
        probes = [(e.epoch, e.probe_top1) for e in run.log if e.probe_top1 is not None]
        best_epoch, best = max(probes + [(protocol.epochs - 1, top1)], key=lambda p: p[1])
        rows.append({"seed": seed, "top1": top1, "batch_size": run.batch_size,
                     "diagnostic_best_epoch_top1": best, "diagnostic_best_epoch": best_epoch,
                     "diagnostic_probes": [{"epoch": e, "top1": a} for e, a in probes],
                     "final_train_loss": run.log[-1].loss, "train_s": round(train_s, 3),
                     "wall_s": round(time.perf_counter() - t0, 3)})
    return rows
