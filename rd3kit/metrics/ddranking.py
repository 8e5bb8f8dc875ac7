"""DD-Ranking's scores (HLR, IOR, LRS, ARS) on top-1 fractions, with bootstrap intervals over seeds.

Must not: train, read files, or accept percent where a fraction is expected. The percent-based variant that
DD-Ranking 0.2.0 computes lives only in the `*_percent_compat` functions, for comparison with its outputs.

Definitions (docs/metrics.md; ../shared/research/ddranking.md):
    HLR = A_full - A_syn_hard                      (hard label recovery; lower is better)
    IOR = A_syn - A_rand                           (improvement over random; higher is better)
    LRS = N(w * IOR - (1 - w) * HLR)               (label robust score)
    ARS = N(g * (A_syn_aug - A_rand_aug) + (1 - g) * (A_syn_noaug - A_rand_noaug))
    N(x) = (exp(x) - exp(-1)) / (exp(1) - exp(-1)), which maps [-1, 1] onto [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from rd3kit.errors import ConfigError

# DD-Ranking's published weights. Callers pass w and g explicitly (a protocol or a command line names them);
# these constants only say what the leaderboard used.
DEFAULT_W = 0.5
DEFAULT_G = 0.5

# Bootstrap defaults: 2000 resamples keep the Monte Carlo error of a 95% percentile bound well below the
# 0.01 (one percentage point of LRS x100) that anyone reads off a table; seed 0 makes the interval repeatable.
DEFAULT_LEVEL = 0.95
DEFAULT_N_BOOT = 2000
DEFAULT_BOOT_SEED = 0

_E_LOW, _E_HIGH = math.exp(-1.0), math.exp(1.0)


@dataclass(frozen=True)
class Interval:
    """A point estimate (the score of the per-arm means) and a two-sided interval around it."""

    point: float
    low: float
    high: float
    level: float
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


def normalise(x: float | np.ndarray) -> float | np.ndarray:
    """N(x) = (e^x - e^-1) / (e - e^-1): 0 at x = -1, 1 at x = 1, monotone; works on arrays."""
    return (np.exp(x) - _E_LOW) / (_E_HIGH - _E_LOW)


def _check_fraction(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        hint = " (this looks like percent: divide by 100)" if 1.0 < value <= 100.0 else ""
        raise ConfigError(f"{name}: top-1 must be a fraction in [0, 1], got {value}{hint}")
    return value


def _check_difference(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        hint = " (this looks like percent: divide by 100)" if 1.0 < abs(value) <= 100.0 else ""
        raise ConfigError(f"{name}: a difference of fractions must lie in [-1, 1], got {value}{hint}")
    return value


def _check_weight(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: weight must lie in [0, 1], got {value} (DD-Ranking uses {DEFAULT_W})")
    return value


def hlr(top1_full: float, top1_syn_hard: float) -> float:
    """Hard label recovery A_full - A_syn_hard on fractions, in [-1, 1]."""
    return _check_fraction(top1_full, "top1_full") - _check_fraction(top1_syn_hard, "top1_syn_hard")


def ior(top1_syn: float, top1_rand: float) -> float:
    """Improvement over random A_syn - A_rand on fractions, in [-1, 1]."""
    return _check_fraction(top1_syn, "top1_syn") - _check_fraction(top1_rand, "top1_rand")


def lrs(hlr_value: float, ior_value: float, *, w: float) -> float:
    """Label robust score N(w * IOR - (1 - w) * HLR) from HLR and IOR given as fractions; lies in [0, 1]."""
    h = _check_difference(hlr_value, "hlr")
    i = _check_difference(ior_value, "ior")
    w = _check_weight(w, "w")
    return float(normalise(w * i - (1.0 - w) * h))


def ars(top1_syn_aug: float, top1_rand_aug: float, top1_syn_noaug: float, top1_rand_noaug: float, *,
        g: float) -> float:
    """Augmentation robust score N(g * IOR_aug + (1 - g) * IOR_noaug) on fractions; lies in [0, 1]."""
    g = _check_weight(g, "g")
    gain_aug = ior(top1_syn_aug, top1_rand_aug)
    gain_noaug = ior(top1_syn_noaug, top1_rand_noaug)
    return float(normalise(g * gain_aug + (1.0 - g) * gain_noaug))


def lrs_percent_compat(hlr_pct: float, ior_pct: float, *, w: float) -> float:
    """COMPATIBILITY ONLY: LRS as DD-Ranking 0.2.0 computes it, on percent (its unit bug).

    With HLR and IOR in percent the exponent is tens of units negative for nearly every method, so the value
    saturates at -e^-1 / (e - e^-1) = -0.1565 instead of lying in [0, 1]. Shown next to the real score only
    so that numbers from DD-Ranking 0.2.0 can be recognised; never use it to rank sets.
    """
    w = _check_weight(w, "w")
    return float(normalise(w * float(ior_pct) - (1.0 - w) * float(hlr_pct)))


def ars_percent_compat(gain_aug_pct: float, gain_noaug_pct: float, *, g: float) -> float:
    """COMPATIBILITY ONLY: ARS as DD-Ranking 0.2.0 computes it from percent gains over random (unit bug)."""
    g = _check_weight(g, "g")
    return float(normalise(g * float(gain_aug_pct) + (1.0 - g) * float(gain_noaug_pct)))


def _as_samples(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray([_check_fraction(v, f"{name}[{i}]") for i, v in enumerate(values)], dtype=np.float64)
    if arr.size == 0:
        raise ConfigError(f"{name}: needs at least one per-seed top-1 value, got none")
    return arr


def _bootstrap(score: Callable[..., np.ndarray], arms: dict[str, Sequence[float]], level: float,
               n_boot: int, seed: int) -> Interval:
    """Percentile bootstrap: resample each arm's seeds with replacement, independently, and score the means.

    Arms are resampled independently because runs in different arms train on different data; a seed number
    shared between arms fixes only initialisation and batch order. An arm with one value (for example a
    full-data reference known only as a mean) contributes no spread: it is treated as a known constant.
    """
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must lie in (0, 1), got {level}")
    if n_boot < 100:
        raise ConfigError(f"n_boot must be at least 100 for a usable percentile interval, got {n_boot}")
    samples = {name: _as_samples(values, name) for name, values in arms.items()}
    point = float(score(*(s.mean() for s in samples.values())))
    rng = np.random.default_rng(seed)
    # Arms are drawn in the caller's fixed argument order, so (seed, inputs) fixes the interval.
    means = [s[rng.integers(0, s.size, size=(n_boot, s.size))].mean(axis=1) for s in samples.values()]
    draws = score(*means)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    sizes = ", ".join(f"{k} n={v.size}" for k, v in samples.items())
    method = f"percentile bootstrap over seeds, per-arm independent, {n_boot} resamples, seed {seed} ({sizes})"
    return Interval(point, float(low), float(high), level, method)


def hlr_interval(full: Sequence[float], syn_hard: Sequence[float], *, level: float = DEFAULT_LEVEL,
                 n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_BOOT_SEED) -> Interval:
    """HLR with a bootstrap interval from per-seed top-1 fractions of each arm."""
    return _bootstrap(lambda f, s: f - s, {"full": full, "syn_hard": syn_hard}, level, n_boot, seed)


def ior_interval(syn: Sequence[float], rand: Sequence[float], *, level: float = DEFAULT_LEVEL,
                 n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_BOOT_SEED) -> Interval:
    """IOR with a bootstrap interval from per-seed top-1 fractions of each arm."""
    return _bootstrap(lambda s, r: s - r, {"syn": syn, "rand": rand}, level, n_boot, seed)


def lrs_interval(full: Sequence[float], syn_hard: Sequence[float], syn: Sequence[float],
                 rand: Sequence[float], *, w: float, level: float = DEFAULT_LEVEL,
                 n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_BOOT_SEED) -> Interval:
    """LRS with a bootstrap interval; each argument is the per-seed top-1 fractions of one arm."""
    w = _check_weight(w, "w")

    def score(f, sh, s, r):
        return normalise(w * (s - r) - (1.0 - w) * (f - sh))

    arms = {"full": full, "syn_hard": syn_hard, "syn": syn, "rand": rand}
    return _bootstrap(score, arms, level, n_boot, seed)


def ars_interval(syn_aug: Sequence[float], rand_aug: Sequence[float], syn_noaug: Sequence[float],
                 rand_noaug: Sequence[float], *, g: float, level: float = DEFAULT_LEVEL,
                 n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_BOOT_SEED) -> Interval:
    """ARS with a bootstrap interval; each argument is the per-seed top-1 fractions of one arm."""
    g = _check_weight(g, "g")

    def score(sa, ra, sn, rn):
        return normalise(g * (sa - ra) + (1.0 - g) * (sn - rn))

    arms = {"syn_aug": syn_aug, "rand_aug": rand_aug, "syn_noaug": syn_noaug, "rand_noaug": rand_noaug}
    return _bootstrap(score, arms, level, n_boot, seed)
