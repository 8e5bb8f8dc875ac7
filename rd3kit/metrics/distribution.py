"""Coverage, diversity, MMD and Fréchet distance of an image set relative to real train images, in a named feature space.

Must not: read files, pick data itself, or draw randomness: the caller passes the real reference features
(for example a seeded class-balanced subsample of the train set) and the set's features.

Feature spaces (docs/metrics.md):
    `pixel_space(size)`: images in [0, 1] (uint8 / 255; float sets must be de-normalised first), area-averaged
    to size x size per channel, flattened: C * size * size dimensions. Default size 8 (192 dims for CIFAR):
    coarse enough that L2 distances reflect layout and colour rather than pixel-level noise.
    `FeatureSpace(name, embed)`: any callable (e.g. a pinned model's penultimate layer) under a stated name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from rd3kit.errors import ConfigError

# Rows per block when forming distance matrices: 1024 x 10,000 float64 distances is 80 MB.
_BLOCK = 1024
# Pairs used for the median-distance bandwidth: the first 1000 reference points give ~500k distances,
# enough for a stable median, and the rule stays cheap for any reference size.
_BANDWIDTH_POINTS = 1000


@dataclass(frozen=True)
class FeatureSpace:
    """A named map from images (N,C,H,W) to features (N,D) float64; the name is recorded with every number."""

    name: str
    embed: Callable[[torch.Tensor], np.ndarray]

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        feats = np.asarray(self.embed(images), dtype=np.float64)
        if feats.ndim != 2 or feats.shape[0] != images.shape[0]:
            raise ConfigError(f"feature space {self.name}: expected ({images.shape[0]}, D) features, got {feats.shape}")
        return feats


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.to(torch.float64) / 255.0
    if not images.is_floating_point():
        raise ConfigError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    return images.to(torch.float64)


def pixel_space(size: int = 8) -> FeatureSpace:
    """Raw pixels in [0, 1], area-averaged to size x size, flattened (name 'pixels-avgpool{size}-unit')."""

    def embed(images: torch.Tensor) -> np.ndarray:
        pooled = F.adaptive_avg_pool2d(_to_unit(images), size)
        return pooled.reshape(images.shape[0], -1).numpy()

    return FeatureSpace(f"pixels-avgpool{size}-unit", embed)


def _check(feats: np.ndarray, name: str, at_least: int) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < at_least:
        raise ConfigError(f"{name}: expected features (N, D) with N >= {at_least}, got shape {feats.shape}")
    return feats


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between rows of a and b (clamped at 0 against rounding)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def knn_radii(real: np.ndarray, k: int) -> np.ndarray:
    """Distance from each real point to its k-th nearest other real point (the point itself is excluded)."""
    real = _check(real, "real", k + 1)
    radii = np.empty(real.shape[0])
    for start in range(0, real.shape[0], _BLOCK):
        d = _distances(real[start:start + _BLOCK], real)
        # Index k of the sorted row: index 0 is the point itself at distance 0.
        radii[start:start + _BLOCK] = np.partition(d, k, axis=1)[:, k]
    return radii


def coverage(real: np.ndarray, sample: np.ndarray, k: int = 5) -> float:
    """Coverage (Naeem et al. 2020): fraction of real points whose k-NN ball holds at least one set point.

    A real point r counts when min_j ||r - s_j|| < (distance from r to its k-th nearest real neighbour).
    k = 5 is the paper's default. In [0, 1]; 1 means the set touches every region of the real data.
    """
    real = _check(real, "real", k + 1)
    return _covered(real, knn_radii(real, k), _check(sample, "sample", 1))


def _covered(real: np.ndarray, radii: np.ndarray, sample: np.ndarray) -> float:
    # Strict '<' as in the paper's reference code: a set point exactly on the ball's edge does not count.
    covered = 0
    for start in range(0, real.shape[0], _BLOCK):
        nearest = _distances(real[start:start + _BLOCK], sample).min(axis=1)
        covered += int((nearest < radii[start:start + _BLOCK]).sum())
    return covered / real.shape[0]


def mean_pairwise_distance(feats: np.ndarray) -> float:
    """Mean Euclidean distance over all unordered pairs of distinct rows."""
    feats = _check(feats, "features", 2)
    n, total = feats.shape[0], 0.0
    for start in range(0, n, _BLOCK):
        total += _distances(feats[start:start + _BLOCK], feats).sum()
    return float(total / (n * (n - 1)))


def diversity(real: np.ndarray, sample: np.ndarray) -> float:
    """Diversity: mean pairwise distance within the set over mean pairwise distance within the real points.

    1 means the set is as spread out as the real reference; below 1 it is more concentrated. It rewards
    spread, not fidelity: read it next to coverage.
    """
    return mean_pairwise_distance(sample) / mean_pairwise_distance(real)


def median_bandwidth(real: np.ndarray) -> float:
    """RBF bandwidth: median pairwise distance among the first 1000 real reference points.

    Fixed by the real data alone, so every set scored against the same reference gets the same kernel.
    """
    head = _check(real, "real", 2)[:_BANDWIDTH_POINTS]
    d = _distances(head, head)
    sigma = float(np.median(d[np.triu_indices(head.shape[0], k=1)]))
    if sigma <= 0.0:
        raise ConfigError("real features: median pairwise distance is 0 (all points equal); no bandwidth")
    return sigma


def _kernel_sum(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
    total = 0.0
    for start in range(0, a.shape[0], _BLOCK):
        d = _distances(a[start:start + _BLOCK], b)
        total += np.exp(-(d * d) / (2.0 * sigma * sigma)).sum()
    return total


def mmd2(real: np.ndarray, sample: np.ndarray, sigma: float | None = None) -> float:
    """Unbiased squared MMD with k(x, y) = exp(-||x - y||^2 / (2 sigma^2)).

    sigma defaults to `median_bandwidth(real)`. Unbiased: diagonal terms are dropped, so the estimate can be
    slightly negative when the two samples come from the same distribution.
    """
    real, sample = _check(real, "real", 2), _check(sample, "sample", 2)
    sigma = median_bandwidth(real) if sigma is None else float(sigma)
    return _mmd2_with(real, _self_kernel_mean(real, sigma), sample, sigma)


def _self_kernel_mean(feats: np.ndarray, sigma: float) -> float:
    # k(x, x) = 1, so dropping the diagonal subtracts n from the full sum.
    n = feats.shape[0]
    return (_kernel_sum(feats, feats, sigma) - n) / (n * (n - 1))


def _mmd2_with(real: np.ndarray, real_term: float, sample: np.ndarray, sigma: float) -> float:
    cross = _kernel_sum(real, sample, sigma) / (real.shape[0] * sample.shape[0])
    return float(real_term + _self_kernel_mean(sample, sigma) - 2.0 * cross)


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance via eigh; eigenvalues below 0 (rounding) are clipped to 0."""
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_gaussians(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance d^2 = ||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2).

    tr((C1 C2)^1/2) is taken as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    C1^1/2 C2 C1^1/2 (same spectrum as C1 C2), which avoids the complex output and the ill-conditioning of a
    general `sqrtm(C1 @ C2)` when the covariances are singular, as they are for sets smaller than the dimension.
    Clipping negative rounding eigenvalues to 0 is the numerical guard; the result is clipped at 0 too.
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    cov1, cov2 = np.asarray(cov1, dtype=np.float64), np.asarray(cov2, dtype=np.float64)
    d = mu1.shape[0]
    if mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ConfigError(f"frechet: expected means ({d},) and covariances ({d}, {d}), got {mu2.shape}, "
                          f"{cov1.shape}, {cov2.shape}")
    root1 = _psd_sqrt(cov1)
    cross = np.linalg.eigvalsh(root1 @ ((cov2 + cov2.T) / 2.0) @ root1)
    trace_sqrt = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)
    return max(value, 0.0)


def gaussian_fit(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (ddof = 1) of the rows; needs at least 2 rows."""
    feats = _check(feats, "features", 2)
    return feats.mean(axis=0), np.cov(feats, rowvar=False, ddof=1).reshape(feats.shape[1], feats.shape[1])


def frechet(real: np.ndarray, sample: np.ndarray) -> float:
    """Fréchet (FID-style) distance between Gaussians fitted to `real` and `sample` features.

    Biased upward for small samples (the covariance of m points has rank <= m - 1): compare sets of the same
    size only, as with coverage.
    """
    return frechet_gaussians(*gaussian_fit(real), *gaussian_fit(sample))


@dataclass(frozen=True)
class Reference:
    """Real reference features with everything that does not depend on the scored set computed once."""

    feats: np.ndarray
    space: str
    k: int
    radii: np.ndarray
    mean_distance: float
    sigma: float
    kernel_mean: float
    mean: np.ndarray
    cov: np.ndarray


def prepare(real: np.ndarray, *, space: str, k: int = 5) -> Reference:
    """Precompute k-NN radii, mean pairwise distance, bandwidth and the real-real kernel term of `real`.

    Scoring many sets against one reference (an audit) then costs only set-vs-real distances.
    """
    real = _check(real, "real", k + 1)
    sigma = median_bandwidth(real)
    return Reference(real, space, k, knn_radii(real, k), mean_pairwise_distance(real), sigma,
                     _self_kernel_mean(real, sigma), *gaussian_fit(real))


def summary(ref: Reference, sample: np.ndarray) -> dict:
    """All distribution metrics of one set against a prepared reference, with the space and settings used."""
    sample = _check(sample, "sample", 2)
    return {
        "feature_space": ref.space,
        "n_real": int(ref.feats.shape[0]),
        "n_set": int(sample.shape[0]),
        "coverage": _covered(ref.feats, ref.radii, sample),
        "coverage_k": ref.k,
        "diversity": mean_pairwise_distance(sample) / ref.mean_distance,
        "mmd2": _mmd2_with(ref.feats, ref.kernel_mean, sample, ref.sigma),
        "mmd_bandwidth": ref.sigma,
        "mmd_kernel": "rbf exp(-d^2 / (2 sigma^2)), sigma = median pairwise distance of the first 1000 real points",
        "frechet": frechet_gaussians(ref.mean, ref.cov, *gaussian_fit(sample)),
    }
