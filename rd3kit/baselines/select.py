"""Class-balanced coreset selection: random, herding and k-center greedy, as indices into a real train set.

Must not: read files, train, or draw randomness from anything but the seed passed in.

Every selector returns {class id: [train-set index, ...]}, classes ascending, each list in selection order
(the first element was picked first). Indices point into the train set in the order it was given, which for
the pinned CIFAR-10 npz is class-sorted, official order within a class (shared/data/README.md).

Feature space for herding and k-center: `pixel_embed` (uint8 pixels / 255, flattened C*H*W, float64),
or any embedding passed in under a stated name. Distances are Euclidean in that space.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from rd3kit.errors import ConfigError

METHODS = ("random", "herding", "kcenter")
PIXEL_SPACE = "pixels-flat-unit"
Embed = Callable[[torch.Tensor], np.ndarray]


def pixel_embed(images: torch.Tensor) -> np.ndarray:
    """uint8 images (n,C,H,W) -> float64 (n, C*H*W) in [0, 1]."""
    if images.dtype != torch.uint8:
        raise ConfigError(f"pixel features expect uint8 images (n,C,H,W), got {images.dtype}")
    return images.reshape(images.shape[0], -1).numpy().astype(np.float64) / 255.0


def class_positions(labels: torch.Tensor | np.ndarray, ipc: int) -> dict[int, np.ndarray]:
    """Train-set positions of each class, ascending; checks every class has at least `ipc` images."""
    if ipc < 1:
        raise ConfigError(f"ipc must be at least 1, got {ipc}")
    y = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    if y.ndim != 1 or y.size == 0:
        raise ConfigError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    out = {int(c): np.flatnonzero(y == c) for c in np.unique(y)}
    short = {c: len(p) for c, p in out.items() if len(p) < ipc}
    if short:
        raise ConfigError(f"ipc={ipc} exceeds the images available in class(es) {short}; lower --ipc")
    return out


def select_random(labels: torch.Tensor | np.ndarray, ipc: int, seed: int) -> dict[int, list[int]]:
    """`ipc` images per class drawn without replacement.

    Class c uses its own `numpy.random.default_rng([seed, c])`, so a class's draw does not depend on which
    other classes exist. The stored index lists, not a re-draw, define a published subset (NumPy does not
    promise identical Generator streams across releases).
    """
    picks = {}
    for c, pos in class_positions(labels, ipc).items():
        rng = np.random.default_rng([int(seed), c])
        picks[c] = [int(i) for i in pos[rng.permutation(len(pos))[:ipc]]]
    return picks


def herding_order(feats: np.ndarray, ipc: int) -> list[int]:
    """Greedy mean matching (Welling 2009; the herding baseline of the DC/DM papers), without replacement.

    Step t picks the unpicked x minimising ||mu - (sum of picked + x) / t||, mu the mean of all rows; the
    first pick is therefore the row closest to mu. Ties go to the lowest row.
    """
    mu = feats.mean(axis=0)
    sq_norms = (feats * feats).sum(axis=1)
    picked_sum = np.zeros_like(mu)
    taken = np.zeros(feats.shape[0], dtype=bool)
    order = []
    for t in range(1, ipc + 1):
        centre = mu - picked_sum / t
        # ||centre - x/t||^2 expanded; the ||centre||^2 term is the same for every x and is dropped.
        score = sq_norms / (t * t) - 2.0 * (feats @ centre) / t
        score[taken] = np.inf
        best = int(np.argmin(score))
        order.append(best)
        taken[best] = True
        picked_sum += feats[best]
    return order


def kcenter_order(feats: np.ndarray, ipc: int) -> list[int]:
    """k-center greedy (Sener & Savarese 2018): start at the row closest to the mean, then repeatedly add
    the row farthest from everything picked so far. Deterministic (no random start); ties go to the lowest row.
    """
    first = int(np.argmin(((feats - feats.mean(axis=0)) ** 2).sum(axis=1)))
    order = [first]
    nearest = np.sqrt(((feats - feats[first]) ** 2).sum(axis=1))
    for _ in range(ipc - 1):
        nearest[order] = -np.inf
        nxt = int(np.argmax(nearest))
        order.append(nxt)
        nearest = np.minimum(nearest, np.sqrt(((feats - feats[nxt]) ** 2).sum(axis=1)))
    return order


def _select_by(order_fn: Callable[[np.ndarray, int], list[int]], images: torch.Tensor,
               labels: torch.Tensor | np.ndarray, ipc: int, embed: Embed) -> dict[int, list[int]]:
    if images.shape[0] != len(labels):
        raise ConfigError(f"images ({images.shape[0]}) and labels ({len(labels)}) differ in length")
    picks = {}
    # One class at a time: CIFAR-10 pixels of a single class are 123 MB in float64, all classes 1.2 GB.
    for c, pos in class_positions(labels, ipc).items():
        feats = np.asarray(embed(images[torch.from_numpy(pos)]), dtype=np.float64)
        picks[c] = [int(pos[i]) for i in order_fn(feats, ipc)]
    return picks


def select_herding(images: torch.Tensor, labels: torch.Tensor | np.ndarray, ipc: int,
                   embed: Embed = pixel_embed) -> dict[int, list[int]]:
    """Herding per class in the `embed` feature space (default: flattened pixels in [0, 1])."""
    return _select_by(herding_order, images, labels, ipc, embed)


def select_kcenter(images: torch.Tensor, labels: torch.Tensor | np.ndarray, ipc: int,
                   embed: Embed = pixel_embed) -> dict[int, list[int]]:
    """k-center greedy per class in the `embed` feature space (default: flattened pixels in [0, 1])."""
    return _select_by(kcenter_order, images, labels, ipc, embed)


def select(method: str, images: torch.Tensor, labels: torch.Tensor | np.ndarray, ipc: int,
           seed: int | None, embed: Embed = pixel_embed) -> dict[int, list[int]]:
    """Dispatch by method name; random needs a seed, herding and k-center are deterministic and take none."""
    if method == "random":
        if seed is None:
            raise ConfigError("method random needs a seed (--seed N); no seed is chosen for you")
        return select_random(labels, ipc, seed)
    if seed is not None:
        raise ConfigError(f"method {method} is deterministic and takes no seed; drop --seed")
    if method == "herding":
        return select_herding(images, labels, ipc, embed)
    if method == "kcenter":
        return select_kcenter(images, labels, ipc, embed)
    raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
