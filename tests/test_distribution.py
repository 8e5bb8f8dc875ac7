"""Coverage, diversity and MMD on small synthetic feature sets, and the pixel feature space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rd3kit.errors import ConfigError
from rd3kit.metrics import distribution as dist


def _gauss(n: int, d: int = 4, shift: float = 0.0, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, scale, size=(n, d))


REAL = _gauss(400)


def test_pixel_space_downsamples_and_scales():
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    images[1, :, :16] = 255  # top half white: the 8x8 grid's top 4 rows are 1, bottom 4 rows 0
    space = dist.pixel_space(8)
    feats = space(images)
    assert space.name == "pixels-avgpool8-unit" and feats.shape == (2, 192) and feats.dtype == np.float64
    grid = feats[1].reshape(3, 8, 8)
    assert np.all(grid[:, :4] == 1.0) and np.all(grid[:, 4:] == 0.0) and np.all(feats[0] == 0.0)
    assert np.allclose(space(images.float() / 255), feats)  # float input in [0, 1] gives the same features
    with pytest.raises(ConfigError):
        space(images.to(torch.int32))


def test_knn_radius_excludes_the_point_itself():
    line = np.arange(6, dtype=float)[:, None]
    assert np.allclose(dist.knn_radii(line, 1), 1.0)
    assert np.allclose(dist.knn_radii(line, 2), [2, 1, 1, 1, 1, 2])


def test_coverage_full_for_real_and_low_for_collapsed_set():
    assert dist.coverage(REAL, REAL, k=5) == 1.0
    collapsed = np.repeat(REAL[:1], 50, axis=0)
    assert dist.coverage(REAL, collapsed, k=5) < 0.05
    far = _gauss(100, shift=10.0, seed=1)
    assert dist.coverage(REAL, far, k=5) == 0.0
    fresh = _gauss(400, seed=2)  # same distribution, new draw: most k-NN balls are hit
    assert dist.coverage(REAL, fresh, k=5) > 0.8


def test_coverage_hand_example():
    real = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    # k = 1: every radius is 1. One set point at 0.5 lies within 1 of the points 0 and 1 only.
    assert dist.coverage(real, np.array([[0.5]]), k=1) == pytest.approx(2 / 6)


def test_diversity_ratio():
    assert dist.diversity(REAL, REAL) == pytest.approx(1.0)
    assert dist.diversity(REAL, _gauss(100, scale=0.1, seed=3)) < 0.2
    assert dist.mean_pairwise_distance(np.array([[0.0], [3.0]])) == pytest.approx(3.0)
    with pytest.raises(ConfigError):
        dist.diversity(REAL, REAL[:1])


def test_mmd_near_zero_for_same_distribution_and_grows_with_shift():
    same = dist.mmd2(REAL, _gauss(200, seed=4))
    near = dist.mmd2(REAL, _gauss(200, shift=0.5, seed=5))
    far = dist.mmd2(REAL, _gauss(200, shift=3.0, seed=6))
    assert abs(same) < 0.01 < near < far


def test_mmd_hand_example_and_bandwidth_rule():
    real = np.array([[0.0], [2.0]])
    sample = np.array([[0.0], [2.0]])
    sigma = dist.median_bandwidth(real)
    assert sigma == pytest.approx(2.0)
    k02 = np.exp(-4.0 / 8.0)
    # Unbiased: xx = yy = k(0,2); xy = mean of {1, k02, k02, 1}.
    assert dist.mmd2(real, sample) == pytest.approx(2 * k02 - 2 * (1 + k02) / 2)
    with pytest.raises(ConfigError):
        dist.median_bandwidth(np.zeros((5, 2)))


def test_summary_records_space_and_settings():
    ref = dist.prepare(REAL, space="pixels-avgpool8-unit", k=5)
    sample = _gauss(60, shift=0.3, seed=7)
    out = dist.summary(ref, sample)
    assert out["feature_space"] == "pixels-avgpool8-unit" and out["n_set"] == 60 and out["coverage_k"] == 5
    # The prepared path must give exactly what the standalone functions give.
    assert out["coverage"] == dist.coverage(REAL, sample, k=5)
    assert out["diversity"] == pytest.approx(dist.diversity(REAL, sample), rel=1e-12)
    assert out["mmd2"] == pytest.approx(dist.mmd2(REAL, sample), rel=1e-12)


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_frechet_matches_closed_form_for_gaussians():
    # Commuting covariances (same eigenbasis Q): d^2 = ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    d = 6
    q = _rotation(d, 0)
    a, b = np.array([1.0, 2.0, 0.5, 3.0, 0.1, 4.0]), np.array([2.0, 0.5, 0.5, 1.0, 0.4, 9.0])
    mu1, mu2 = np.zeros(d), np.arange(d) / 10.0
    want = float((mu2 ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    got = dist.frechet_gaussians(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(want, rel=1e-10)
    assert dist.frechet_gaussians(mu1, q @ np.diag(a) @ q.T, mu1, q @ np.diag(a) @ q.T) == pytest.approx(0.0, abs=1e-10)


def test_frechet_agrees_with_scipy_sqrtm_on_non_commuting_covariances():
    linalg = pytest.importorskip("scipy.linalg", reason="scipy is not installed")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    c1, c2 = x @ x.T + 0.1 * np.eye(5), y @ y.T + 0.1 * np.eye(5)
    want = float(np.trace(c1) + np.trace(c2) - 2.0 * np.real(np.trace(linalg.sqrtm(c1 @ c2))))
    assert dist.frechet_gaussians(np.zeros(5), c1, np.zeros(5), c2) == pytest.approx(want, rel=1e-8)


def test_frechet_is_guarded_for_singular_covariances_and_wrong_shapes():
    # 3 points in 10 dimensions: rank-2 covariance; the value must stay finite and non-negative.
    small = _gauss(3, d=10, seed=8)
    big = _gauss(500, d=10, seed=9)
    value = dist.frechet(big, small)
    assert np.isfinite(value) and value > 0.0
    assert dist.frechet(small, small) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ConfigError):
        dist.frechet_gaussians(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_frechet_from_samples_approaches_the_population_value():
    # N(0, I) vs N(1, 4I) in 4 dims: d^2 = 4 * 1^2 + 4 * (1 - 2)^2 = 8. 20,000 points: sampling error ~1%.
    real = _gauss(20000, d=4, seed=10)
    sample = _gauss(20000, d=4, shift=1.0, scale=2.0, seed=11)
    assert dist.frechet(real, sample) == pytest.approx(8.0, rel=0.03)
    ref = dist.prepare(real[:400], space="test", k=5)
    assert dist.summary(ref, sample[:50])["frechet"] == pytest.approx(dist.frechet(real[:400], sample[:50]), rel=1e-9)
