"""The coupled-family training loop (DC's evaluate_synset), one seed at a time.

Must not: read or write files, print, or touch global RNG state: every random draw comes from generators
derived from the seed passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from rd3kit.models import build_model
from rd3kit.protocols.spec import CoupledProtocol
from rd3kit.train.augment import augment


@dataclass(frozen=True)
class SeedStreams:
    """Independent generators for one seed: model init, batch order, augmentation."""

    init: int
    shuffle: torch.Generator
    aug: torch.Generator


def streams(seed: int, device: torch.device) -> SeedStreams:
    # SeedSequence spawns statistically independent child seeds from one recorded integer.
    init, shuffle, aug = (int(s.generate_state(1, np.uint64)[0] >> 1) for s in np.random.SeedSequence(seed).spawn(3))
    gen_dev = device if device.type == "cuda" else torch.device("cpu")
    return SeedStreams(init, torch.Generator().manual_seed(shuffle), torch.Generator(gen_dev).manual_seed(aug))


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """DATM's SoftCrossEntropy: -sum(log_softmax(out) * softmax(target)) / B (temperature 1)."""
    return -(F.log_softmax(logits, dim=1) * F.softmax(target_logits, dim=1)).sum(dim=1).mean()


def build_seeded(protocol: CoupledProtocol, seed_init: int, device: torch.device) -> torch.nn.Module:
    """Build the protocol's network with its init drawn from `seed_init`, leaving global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_init)
        net = build_model(protocol.model, protocol.data.channels, protocol.data.num_classes,
                          tuple(protocol.data.image_size))
    return net.to(device)


def sgd(params, protocol: CoupledProtocol, lr: float) -> torch.optim.Optimizer:
    """The protocol's SGD (momentum, weight decay on every parameter) over `params` at `lr`."""
    o = protocol.optimizer
    return torch.optim.SGD(list(params), lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)


def end_epoch(protocol: CoupledProtocol, epoch: int, lr: float, optimizer: torch.optim.Optimizer,
              params) -> tuple[float, torch.optim.Optimizer]:
    """Apply the step schedule after `epoch`: (lr, optimizer) for the next epoch.

    At a milestone the lr is multiplied by gamma; DC re-creates SGD there (`reset_optimizer`), dropping the
    momentum buffers, so the new optimizer is built over `params`.
    """
    if epoch not in protocol.schedule.milestones:
        return lr, optimizer
    lr *= protocol.schedule.gamma
    if protocol.schedule.reset_optimizer:
        return lr, sgd(params, protocol, lr)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr, optimizer


def train(
    protocol: CoupledProtocol,
    images: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    lr: float,
    on_epoch: Callable[[int], None] | None = None,
) -> torch.nn.Module:
    """Train one network on (images, labels) under `protocol`; returns it after the last epoch."""
    rng = streams(seed, images.device)
    net = build_seeded(protocol, rng.init, images.device)
    fit(protocol, net, net, images, labels, rng, lr, on_epoch)
    return net


def fit(
    protocol: CoupledProtocol,
    net: torch.nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    rng: SeedStreams,
    lr: float,
    on_epoch: Callable[[int], None] | None = None,
    chunk: int | None = None,
) -> None:
    """The training loop on `net`'s parameters, computing logits with `forward` (`net` itself, or a compiled
    wrapper of it: rd3kit.train.compiled); batch order and augmentation draw from `rng`.

    `chunk`: run each (augmented) batch's forward and backward in pieces of this many images, each piece's mean
    loss weighted by its share of the batch, so the gradients sum to the whole batch's (the same math, another
    float order). Only for networks that are per-sample in train mode (no BatchNorm); None: whole batches, as
    the per-seed reference does.
    """
    device = images.device
    loss_fn = soft_cross_entropy if protocol.labels.kind == "soft_logits" else F.cross_entropy
    optimizer = sgd(net.parameters(), protocol, lr)
    n, batch = images.shape[0], protocol.batch_size
    for ep in range(protocol.run_epochs):
        net.train()
        order = torch.randperm(n, generator=rng.shuffle).to(device)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            x = augment(images[idx], protocol.augmentation, rng.aug)
            optimizer.zero_grad(set_to_none=True)
            if chunk is None or x.shape[0] <= chunk:
                loss_fn(forward(x), labels[idx]).backward()
            else:
                for piece in range(0, x.shape[0], chunk):
                    rows = slice(piece, piece + chunk)
                    share = x[rows].shape[0] / x.shape[0]
                    (loss_fn(forward(x[rows]), labels[idx][rows]) * share).backward()
            optimizer.step()
        lr, optimizer = end_epoch(protocol, ep, lr, optimizer, net.parameters())
        if on_epoch is not None:
            on_epoch(ep)


# Images per forward of the CPU test pass, per 32x32 of input: a first activation of ~2**22 elements (16 MiB for
# DC's ConvNet-128 on CIFAR) stays in cache through norm, ReLU and pooling. Measured on the 2-core EPYC (docs/
# speed.md): 0.94 ms per CIFAR test image at 32 vs 1.63 at 256. These nets are per-sample in eval mode, and the
# logits were bitwise equal to batch 256 for chunks of 8 to 512 (not for 1), and the stored DC CIFAR-10 IPC1
# per-seed accuracies reproduce exactly; the protocol's test_batch_size stays the upper bound.
CPU_TEST_PIXELS = 32 * 32 * 32
CPU_TEST_MIN_BATCH = 8


def eval_batch(images: torch.Tensor, batch: int) -> int:
    """Images per forward in `top1`: the protocol's test batch, capped on CPU to keep activations in cache."""
    if images.device.type != "cpu":
        return batch
    return min(batch, max(CPU_TEST_MIN_BATCH, CPU_TEST_PIXELS // (images.shape[-1] * images.shape[-2])))


@torch.inference_mode()
def top1(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int,
         forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Top-1 accuracy as a fraction, in eval mode, no augmentation; logits from `forward` (default `net`)."""
    net.eval()
    forward = net if forward is None else forward
    correct, batch = 0, eval_batch(images, batch)
    for start in range(0, images.shape[0], batch):
        pred = forward(images[start:start + batch]).argmax(dim=1)
        correct += int((pred == labels[start:start + batch]).sum())
    return correct / images.shape[0]
