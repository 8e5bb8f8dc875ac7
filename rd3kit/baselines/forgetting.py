"""Forgetting scores (Toneva et al., ICLR'19): forgetting events per train example from one seeded training
run on the full train split, and a class-balanced selection of the most-forgotten examples.

Must not: read or write files, print, download, or touch global RNG state (model init, batch order come from
generators derived from the seed passed in, as in rd3kit.train.coupled).

The run (`ForgettingRun`): the network, optimizer (lr, momentum, weight decay), batch size and data
normalisation of a named coupled evaluation protocol, hard labels, NO augmentation and NO lr schedule, for
`epochs` epochs over the whole train split. That is the cheap, labelled approximation the audit uses on CPU;
Toneva et al. train to convergence (e.g. 200 epochs for CIFAR-10), so counts from a few epochs rank examples
by early forgetting only. A forgetting event is a presentation at which an example is misclassified after it
was classified correctly at its previous presentation; correctness is read from the minibatch forward pass
before the update (as in the authors' code). Examples never classified correctly count as forgotten infinitely
often (the paper's convention), so they are selected first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from rd3kit.baselines.select import class_positions
from rd3kit.errors import ConfigError
from rd3kit.preprocess import normalize, to_unit
from rd3kit.protocols.spec import CoupledProtocol
from rd3kit.train.coupled import build_seeded, streams


@dataclass(frozen=True)
class ForgettingRun:
    """What defines the scoring run: evaluation protocol (network, SGD settings, batch size), epochs, seed."""

    protocol: CoupledProtocol
    epochs: int
    seed: int

    def describe(self) -> dict:
        from rd3kit.protocols import protocol_hash

        return {"protocol": self.protocol.ref, "protocol_sha256": protocol_hash(self.protocol),
                "epochs": self.epochs, "seed": self.seed, "augmentation": "none", "schedule": "constant lr",
                "lr": self.protocol.optimizer.lr, "labels": "hard",
                "correctness": "minibatch forward pass before each update (Toneva et al.)"}


def forgetting_counts(correct: np.ndarray) -> np.ndarray:
    """(presentations, n) booleans -> per-example forgetting events (float; inf for never-correct examples)."""
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2 or correct.shape[0] < 1:
        raise ConfigError(f"correctness must be (presentations >= 1, n) booleans, got shape {correct.shape}")
    events = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.float64)
    events[~correct.any(axis=0)] = np.inf
    return events


def select_forgetting(counts: np.ndarray, labels: torch.Tensor | np.ndarray, ipc: int) -> dict[int, list[int]]:
    """Per class, the `ipc` examples with the most forgetting events (never-learned first); ties: lowest index."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (len(labels),):
        raise ConfigError(f"counts ({counts.shape}) must hold one value per label ({len(labels)})")
    picks = {}
    for c, pos in class_positions(labels, ipc).items():
        # lexsort sorts by the last key first: descending count, then ascending train index.
        order = np.lexsort((pos, -counts[pos]))
        picks[c] = [int(pos[i]) for i in order[:ipc]]
    return picks


def record_correctness(run: ForgettingRun, images: torch.Tensor, labels: torch.Tensor,
                       progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Train per `run` on (uint8 images, labels); returns (epochs, n) booleans: correct at each presentation."""
    p = run.protocol
    if p.data.zca is not None:
        raise ConfigError(f"{p.ref}: forgetting runs support mean/std normalisation only, not ZCA")
    if images.dtype != torch.uint8 or images.shape[0] != labels.shape[0]:
        raise ConfigError(f"expected uint8 images (n,C,H,W) with one label each, got {images.dtype} "
                          f"{tuple(images.shape)} and {tuple(labels.shape)} labels")
    if run.epochs < 2:
        raise ConfigError(f"a forgetting run needs at least 2 epochs (events compare presentations), got {run.epochs}")
    device = torch.device("cpu")
    seeds = streams(run.seed, device)
    net = build_seeded(p, seeds.init, device)
    opt = torch.optim.SGD(net.parameters(), lr=p.optimizer.lr, momentum=p.optimizer.momentum,
                          weight_decay=p.optimizer.weight_decay)
    x_all = normalize(to_unit(images), p.data)
    n = labels.shape[0]
    correct = np.zeros((run.epochs, n), dtype=bool)
    net.train()
    for epoch in range(run.epochs):
        order = torch.randperm(n, generator=seeds.shuffle)
        for start in range(0, n, p.batch_size):
            idx = order[start:start + p.batch_size]
            out = net(x_all[idx])
            y = labels[idx]
            correct[epoch, idx.numpy()] = (out.argmax(dim=1) == y).numpy()
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if progress is not None:
            progress(epoch + 1, run.epochs)
    return correct
