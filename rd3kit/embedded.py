"""The embedded default: scikit-learn's digits (shipped inside the package), split and subsetted by rule.

Must not: download anything. Everything here is rebuilt bit-for-bit from sklearn's bundled file and the
seed, so `rd3kit reproduce` works on a fresh offline machine.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from rd3kit.sources.formats import DistilledSet
from rd3kit.sources.realdata import RealSplit

# Every 5th image (index % 5 == 0) is test: 360 test and 1437 train images, a fixed, documented split.
TEST_EVERY = 5


def digits_split(split: str) -> RealSplit:
    """sklearn digits as uint8 (N,1,8,8): grey levels 0..16 scaled by 255/16 and rounded."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    is_test = np.arange(len(y)) % TEST_EVERY == 0
    keep = is_test if split == "test" else ~is_test
    x, y = np.ascontiguousarray(x[keep]), y[keep]
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    return RealSplit(torch.from_numpy(x), torch.from_numpy(y), "digits", split, "embedded:sklearn.load_digits",
                     digest, f"scikit-learn digits {split} (index % {TEST_EVERY} {'==' if split == 'test' else '!='} 0)")


def random_subset_indices(labels: np.ndarray, ipc: int, seed: int) -> np.ndarray:
    """Class-balanced random subset: for each class in order, `ipc` indices drawn without replacement."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), size=ipc, replace=False) for c in np.unique(labels)]
    return np.concatenate(picks)


def digits_subset(method: str, ipc: int, seed: int) -> DistilledSet:
    """A real subset of the digits train split as a 'distilled set' in raw01 space."""
    train = digits_split("train")
    if method != "random":
        from rd3kit.errors import ConfigError

        raise ConfigError(f"embedded subsets support method 'random', got {method!r}")
    idx = random_subset_indices(train.labels.numpy(), ipc, seed)
    images = train.images[idx].to(torch.float32) / 255.0
    ident = f"embedded:digits/{method}/ipc{ipc}/seed{seed}"
    digest = hashlib.sha256(train.sha256.encode() + np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()
    return DistilledSet(images, train.labels[idx], "raw01", None, {ident: digest}, ident)
