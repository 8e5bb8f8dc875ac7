"""The acceptance rule: results that must pass and results that must fail, for claims and reproductions."""

from __future__ import annotations

import copy

import pytest

from rd3kit.reference.store import Acceptance, Claim, Reproduction, SetInput, Source, SplitInput
from rd3kit.reference.verdict import CLAIM_FLOOR, verify

SEEDS = list(range(10))
TOP1 = [0.281, 0.285, 0.279, 0.290, 0.283, 0.277, 0.286, 0.282, 0.288, 0.280]
PHASH, SET_SHA, TEST_SHA = "a" * 64, "b" * 64, "c" * 64


def repro(**changes) -> Reproduction:
    doc = dict(kind="reproduction", name="dc-test", claim=None, method="DC", dataset="cifar10", ipc=1,
               protocol="dc-cifar10@v1", protocol_sha256=PHASH,
               set=SetInput(source="shared-data", path="x.pt", sha256=SET_SHA, space="normalized", select=-1),
               test=SplitInput(source="shared-data", path="t.npz", sha256=TEST_SHA), seeds=SEEDS, top1=TOP1,
               tier="cpu", command="rd3kit eval ...", rd3kit="0.1.0", git_sha=None, device="cpu", torch="2.14.1",
               cuda=None, wall_s=1.0, created="2026-11-24T00:00:00+00:00")
    doc.update(changes)
    return Reproduction(**doc)


def claim(mean=0.283, std=0.005, **changes) -> Claim:
    doc = dict(kind="claim", name="dc-claim", method="DC", dataset="cifar10", ipc=1, arch="ConvNet-3",
               protocol="dc-cifar10@v1", protocol_sha256=PHASH, mean=mean, std=std,
               source=Source(id="S1", type="primary", citation="DATM table 1"))
    doc.update(changes)
    return Claim(**doc)


def result(top1=TOP1, seeds=SEEDS, phash=PHASH, set_sha=SET_SHA, test_sha=TEST_SHA) -> dict:
    return {"protocol": {"ref": "dc-cifar10@v1", "sha256": phash}, "seeds": list(seeds), "top1": list(top1),
            "inputs": {"set": {"files": {"x.pt": set_sha}, "ipc": 1}, "test": {"sha256": test_sha}}}


def shifted(delta: float) -> list[float]:
    return [v + delta for v in TOP1]


def test_identical_rerun_reproduces():
    v = verify(result(), repro())
    assert v.status == "reproduced" and v.passed and v.delta == pytest.approx(0.0)


def test_small_shift_within_floor_reproduces():
    assert verify(result(shifted(0.004)), repro()).passed


def test_shifted_mean_fails_with_reason():
    v = verify(result(shifted(-0.03)), repro())
    assert v.status == "not reproduced" and "V5" in v.reasons[0]
    assert v.z is not None and v.z < -3


def test_wrong_protocol_hash_fails():
    v = verify(result(phash="d" * 64), repro())
    assert not v.passed and v.reasons[0].startswith("V1")


def test_wrong_input_sha_fails():
    assert verify(result(set_sha="e" * 64), repro()).reasons[0].startswith("V2 set")
    assert verify(result(test_sha="e" * 64), repro()).reasons[0].startswith("V2 test")


def test_missing_seed_fails():
    v = verify(result(TOP1[:9], SEEDS[:9]), repro())
    assert not v.passed and "missing [9]" in v.reasons[0]


def test_duplicated_seed_fails():
    v = verify(result(TOP1, SEEDS[:9] + [8]), repro())
    assert not v.passed and any("duplicated" in r for r in v.reasons)


def test_claim_band_is_max_of_floor_and_two_std():
    assert verify(result(shifted(0.283 - sum(TOP1) / 10 + 0.0099)), claim()).passed
    v = verify(result(shifted(0.283 - sum(TOP1) / 10 + 0.0101)), claim())
    assert not v.passed and v.band == pytest.approx(CLAIM_FLOOR)
    wide = claim(std=0.008)
    assert verify(result(shifted(0.283 - sum(TOP1) / 10 + 0.015)), wide).passed  # band 2 x 0.8 pp


def test_five_pp_below_claim_fails():
    v = verify(result(shifted(-0.05)), claim())
    assert v.status == "not reproduced" and "exceeds the band" in v.reasons[0]


def test_too_few_seeds_is_inconclusive():
    assert verify(result(TOP1[:2], SEEDS[:2]), claim()).status == "inconclusive"


def test_override_needs_reason_and_is_reported():
    with pytest.raises(Exception):
        Acceptance(floor=0.05, k=2, reason="")
    entry = claim(acceptance=Acceptance(floor=0.05, k=2, reason="set re-distilled by a third party; see notes"))
    v = verify(result(shifted(-0.03)), entry)
    assert v.passed and v.override and "re-distilled" in v.render()


def test_render_names_entry_delta_band_and_z():
    text = verify(result(shifted(-0.03)), repro()).render()
    assert text.startswith("NOT REPRODUCED: dc-test") and "delta -3.00 pp" in text and "z " in text


def test_result_is_not_mutated():
    r = result()
    before = copy.deepcopy(r)
    verify(r, repro())
    assert r == before
