"""Scores on fractions against the DD-Ranking leaderboard rows (shared/research/ddranking.md), bounds,
the percent-variant saturation, and bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rd3kit.errors import ConfigError
from rd3kit.metrics import ddranking as dd

# (method, IPC, HLR %, IOR %, LRS on fractions x100) from the CIFAR-10 leaderboard table, w = 0.5.
LEADERBOARD = [
    ("DC", 1, 52.66, 12.40, 19.14), ("DSA", 1, 58.93, 13.16, 18.19), ("DM", 1, 61.37, 8.73, 17.05),
    ("MTT", 1, 42.21, 27.62, 23.90), ("SRe2L", 1, 69.86, -0.27, 14.31), ("RDED", 1, 60.58, 2.38, 16.15),
    ("D4M", 1, 51.06, 6.68, 18.43), ("DC", 10, 36.70, 18.54, 23.20), ("DSA", 10, 35.14, 19.62, 23.72),
    ("DM", 10, 39.37, 16.12, 22.22), ("MTT", 10, 23.73, 30.90, 28.45), ("DATM", 10, 26.84, 35.05, 28.68),
    ("SRe2L", 10, 67.82, -5.77, 13.80), ("RDED", 10, 50.65, 1.11, 17.56), ("D4M", 10, 39.88, 9.12, 20.83),
    ("DC", 50, 26.31, 12.34, 24.02), ("DSA", 50, 27.41, 10.96, 23.53), ("DM", 50, 25.06, 12.66, 24.34),
    ("MTT", 50, 16.52, 20.52, 27.75), ("DATM", 50, 18.89, 23.89, 27.97),
]
# The table rounds to two decimals, so 0.005 is the rounding bound; 0.01 allows the input rounding too.
TABLE_TOL = 0.01


@pytest.mark.parametrize("method,ipc,hlr_pct,ior_pct,lrs_x100", LEADERBOARD)
def test_lrs_matches_leaderboard_table(method, ipc, hlr_pct, ior_pct, lrs_x100):
    got = 100 * dd.lrs(hlr_pct / 100, ior_pct / 100, w=dd.DEFAULT_W)
    assert abs(got - lrs_x100) <= TABLE_TOL, f"{method} IPC{ipc}: {got:.4f} vs table {lrs_x100}"


def test_table_test_catches_a_wrong_formula():
    # Guards the table test itself: with HLR's sign flipped, or on percent, no row reproduces.
    for _, _, hlr_pct, ior_pct, lrs_x100 in LEADERBOARD:
        flipped = 100 * dd.normalise(0.5 * ior_pct / 100 + 0.5 * hlr_pct / 100)
        on_percent = 100 * dd.lrs_percent_compat(hlr_pct, ior_pct, w=0.5)
        assert abs(flipped - lrs_x100) > TABLE_TOL and abs(on_percent - lrs_x100) > TABLE_TOL


def test_percent_variant_saturates_like_ddranking_0_2_0():
    saturation = -math.exp(-1) / (math.e - math.exp(-1))
    assert round(saturation, 4) == -0.1565
    for _, _, hlr_pct, ior_pct, _ in LEADERBOARD:
        if ior_pct - hlr_pct < -20:  # exponent below -10: e^a is under 5e-5, i.e. saturated to 4 decimals
            assert round(dd.lrs_percent_compat(hlr_pct, ior_pct, w=0.5), 4) == -0.1565
    assert round(dd.ars_percent_compat(-40.0, -30.0, g=0.5), 4) == -0.1565


def test_bounds_and_endpoints():
    assert dd.normalise(-1.0) == pytest.approx(0.0, abs=1e-12)
    assert dd.normalise(1.0) == pytest.approx(1.0, abs=1e-12)
    assert dd.lrs(1.0, -1.0, w=0.5) == pytest.approx(0.0, abs=1e-12)
    assert dd.lrs(-1.0, 1.0, w=0.5) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    for a in rng.uniform(0, 1, size=(200, 4)):
        assert 0.0 <= dd.lrs(dd.hlr(a[0], a[1]), dd.ior(a[2], a[3]), w=0.5) <= 1.0
        assert 0.0 <= dd.ars(*a, g=0.5) <= 1.0


def test_ars_formula():
    got = dd.ars(0.50, 0.30, 0.40, 0.35, g=0.5)
    want = (math.exp(0.5 * 0.2 + 0.5 * 0.05) - math.exp(-1)) / (math.e - math.exp(-1))
    assert got == pytest.approx(want, rel=1e-12)
    assert dd.hlr(0.85, 0.30) == pytest.approx(0.55)
    assert dd.ior(0.30, 0.15) == pytest.approx(0.15)


@pytest.mark.parametrize("call", [
    lambda: dd.hlr(84.8, 28.3),                       # percent passed as fraction
    lambda: dd.ior(0.3, -0.1),                        # negative accuracy
    lambda: dd.lrs(52.66, 12.40, w=0.5),              # percent HLR/IOR
    lambda: dd.lrs(0.5, 0.1, w=1.5),                  # weight out of range
    lambda: dd.ars(0.5, 0.3, 0.4, float("nan"), g=0.5),
    lambda: dd.lrs_interval([], [0.3], [0.3], [0.2], w=0.5),
    lambda: dd.ior_interval([0.3], [0.2], level=1.0),
    lambda: dd.ior_interval([0.3], [0.2], n_boot=10),
])
def test_bad_inputs_are_rejected(call):
    with pytest.raises(ConfigError):
        call()


def test_percent_hint_in_message():
    with pytest.raises(ConfigError, match="percent"):
        dd.hlr(84.8, 0.3)


FULL = [0.842, 0.848, 0.851, 0.845, 0.847]
SYN_HARD = [0.281, 0.287, 0.279, 0.290, 0.284]
RAND = [0.150, 0.158, 0.149, 0.155, 0.152]


def test_lrs_interval_contains_point_and_is_reproducible():
    ci = dd.lrs_interval(FULL, SYN_HARD, SYN_HARD, RAND, w=0.5)
    point = dd.lrs(dd.hlr(np.mean(FULL), np.mean(SYN_HARD)), dd.ior(np.mean(SYN_HARD), np.mean(RAND)), w=0.5)
    assert ci.point == pytest.approx(point, abs=1e-12)
    assert 0.0 <= ci.low <= ci.point <= ci.high <= 1.0
    assert ci.high - ci.low < 0.02  # seeds spread ~0.5 points, so the score moves by well under 2 points
    assert dd.lrs_interval(FULL, SYN_HARD, SYN_HARD, RAND, w=0.5) == ci
    assert "bootstrap" in ci.method and "seed 0" in ci.method


def test_interval_width_follows_spread_and_constants_collapse():
    narrow = dd.ior_interval(SYN_HARD, RAND)
    wide = dd.ior_interval([0.20, 0.35, 0.28, 0.25, 0.33], RAND)
    assert wide.high - wide.low > narrow.high - narrow.low
    fixed = dd.hlr_interval([0.848], [0.284])  # single values are known constants: zero-width interval
    assert fixed.low == fixed.point == fixed.high == pytest.approx(0.564)


def test_ars_interval_contains_point():
    ci = dd.ars_interval([0.52, 0.50, 0.51], RAND, [0.45, 0.44, 0.46], RAND, g=0.5)
    assert ci.low <= ci.point <= ci.high
    assert ci.point == pytest.approx(dd.ars(0.51, np.mean(RAND), 0.45, np.mean(RAND), g=0.5))
