"""The written acceptance rule: does a result reproduce a reference entry? (see docs/acceptance.md)

Must not: run anything or read files; it compares a result record with an entry and explains the verdict.

Rules, checked in order (each failure names itself in the verdict):
  V1 protocol: the result's protocol sha256 equals the entry's (else: not reproduced, numbers incomparable).
  V2 inputs (reproductions): the result's set and test sha256 equal the entry's pinned ones (and, for
     decoupled entries, the teacher's sha256).
  V3 seeds (reproductions): the result's seeds are exactly the entry's seeds, no duplicates, none missing.
  V4 power: fewer than MIN_SEEDS seeds -> inconclusive (a spread cannot be estimated).
  V5 band: |mean_new - mean_ref| <= band, where
       claims:        band = max(floor, k * std_claim)                   floor 1.0 pp, k 2
       reproductions: band = max(floor, k * sqrt(s_ref^2/n_ref + s_new^2/n_new))   floor 0.5 pp, k 3
     (s = sample std, ddof 1). A claim without a std gets band = CLAIM_NO_STD_BAND.
     An entry may override floor/k only with a written reason, which every verdict repeats.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from rd3kit.reference.store import Claim, Entry, Reproduction

# Claims: the issue-2 band, mean within max(1.0 pp, 2 x claimed std). Papers report run-to-run std
# (population, over evaluation runs), so 2 std covers a faithful rerun's mean with room for
# set-to-set variation the claim folds in.
CLAIM_FLOOR, CLAIM_K = 0.010, 2.0
# A claim with no std (README numbers) cannot scale its band: 2 pp is the widest band issue 2 allows
# for the DC claims (2 x 0.5 pp std -> 1 pp, floor 1 pp), doubled for the missing spread.
CLAIM_NO_STD_BAND = 0.020
# Reproductions: Welch-style standard error of the difference of two means; k = 3 keeps the false
# alarm rate near 0.3 % per entry under normality, so `make verify` over dozens of entries rarely
# fails by chance. The 0.5 pp floor absorbs cross-machine float drift on bitwise-identical seeds.
REPRO_FLOOR, REPRO_K = 0.005, 3.0
MIN_SEEDS = 3


@dataclass
class Verdict:
    entry: str
    status: str  # "reproduced" | "not reproduced" | "inconclusive"
    mean_new: float
    mean_ref: float
    delta: float
    band: float
    z: float | None
    rule: str
    reasons: list[str] = field(default_factory=list)
    override: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "reproduced"

    def as_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}

    def render(self) -> str:
        z = "n/a" if self.z is None else f"{self.z:+.2f}"
        line = (f"{self.status.upper()}: {self.entry}: new {100 * self.mean_new:.2f} % vs ref {100 * self.mean_ref:.2f} %, "
                f"delta {100 * self.delta:+.2f} pp, band +-{100 * self.band:.2f} pp, z {z} [{self.rule}]")
        extra = [f"  - {r}" for r in self.reasons]
        if self.override:
            extra.append(f"  - acceptance override: {self.override}")
        return "\n".join([line, *extra])


def _sample_std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def set_files(result: dict) -> dict[str, str]:
    """The set's files and sha256: stored sets list them; a decoupled random subset pins its real split."""
    s = result["inputs"]["set"]
    if "files" in s:
        return s["files"]
    split = s.get("split") or {}
    return {split["origin"]: split["sha256"]} if "sha256" in split else {}


def _structural(result: dict, entry: Entry) -> list[str]:
    problems = []
    if result["protocol"]["sha256"] != entry.protocol_sha256:
        problems.append(f"V1 protocol sha256 {result['protocol']['sha256'][:12]} != entry's {entry.protocol_sha256[:12]} "
                        f"({result['protocol']['ref']} vs {entry.protocol})")
    if isinstance(entry, Reproduction):
        files = set(set_files(result).values())
        if entry.set.sha256 is not None and entry.set.sha256 not in files:
            problems.append(f"V2 set sha256 {sorted(files)} does not include the entry's {entry.set.sha256[:12]}")
        if result["inputs"]["test"]["sha256"] != entry.test.sha256:
            problems.append(f"V2 test sha256 {result['inputs']['test']['sha256'][:12]} != entry's {entry.test.sha256[:12]}")
        if entry.teacher is not None:
            got = (result["inputs"].get("teacher") or {}).get("sha256")
            if got != entry.teacher.sha256:
                problems.append(f"V2 teacher sha256 {str(got)[:12]} != entry's {entry.teacher.sha256[:12]}")
        seeds = result["seeds"]
        if len(set(seeds)) != len(seeds):
            problems.append(f"V3 duplicated seeds in result: {seeds}")
        missing, extra = sorted(set(entry.seeds) - set(seeds)), sorted(set(seeds) - set(entry.seeds))
        if missing or extra:
            problems.append(f"V3 seeds differ from the entry's {entry.seeds}: missing {missing}, unexpected {extra}")
    return problems


def _band(result: dict, entry: Entry) -> tuple[float, float | None, str]:
    new = result["top1"]
    if isinstance(entry, Claim):
        floor, k = (entry.acceptance.floor, entry.acceptance.k) if entry.acceptance else (CLAIM_FLOOR, CLAIM_K)
        if entry.std is None:
            return max(floor, CLAIM_NO_STD_BAND), None, "claim without std: fixed band"
        se = math.sqrt(entry.std ** 2 + _sample_std(new) ** 2 / len(new))
        return max(floor, k * entry.std), se, f"claim: max({100 * floor:.1f} pp, {k:g} x std)"
    floor, k = (entry.acceptance.floor, entry.acceptance.k) if entry.acceptance else (REPRO_FLOOR, REPRO_K)
    se = math.sqrt(_sample_std(entry.top1) ** 2 / len(entry.top1) + _sample_std(new) ** 2 / len(new))
    return max(floor, k * se), se, f"reproduction: max({100 * floor:.1f} pp, {k:g} x se)"


def verify(result: dict, entry: Entry) -> Verdict:
    """Apply rules V1-V5 to a result record against one entry."""
    mean_ref = entry.mean
    mean_new = float(np.mean(result["top1"]))
    delta = mean_new - mean_ref
    band, se, rule = _band(result, entry)
    z = delta / se if se else None
    override = entry.acceptance.reason if entry.acceptance else None
    problems = _structural(result, entry)
    if problems:
        return Verdict(entry.name, "not reproduced", mean_new, mean_ref, delta, band, z, rule, problems, override)
    if len(result["top1"]) < MIN_SEEDS:
        why = [f"V4 only {len(result['top1'])} seed(s); at least {MIN_SEEDS} are needed to judge a spread"]
        return Verdict(entry.name, "inconclusive", mean_new, mean_ref, delta, band, z, rule, why, override)
    if abs(delta) > band:
        why = [f"V5 |delta| {100 * abs(delta):.2f} pp exceeds the band {100 * band:.2f} pp"]
        return Verdict(entry.name, "not reproduced", mean_new, mean_ref, delta, band, z, rule, why, override)
    return Verdict(entry.name, "reproduced", mean_new, mean_ref, delta, band, z, rule, [], override)


def candidates(result: dict, entries: dict[str, Entry]) -> list[Entry]:
    """Entries a result can be checked against without being told: reproductions of the same set under the
    same protocol hash, and the claims those reproductions are linked to."""
    files = set(set_files(result).values())
    repros = [e for e in entries.values() if isinstance(e, Reproduction)
              and e.protocol_sha256 == result["protocol"]["sha256"] and e.set.sha256 in files]
    claims = [entries[r.claim] for r in repros if r.claim and r.claim in entries]
    return repros + claims
