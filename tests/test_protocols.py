"""Released protocols: strict loading, hashing, the lock, and a snapshot of every resolved protocol."""

from __future__ import annotations

import json

import pytest

from rd3kit.errors import ConfigError
from rd3kit.protocols import (canonical_json, check_lock, get_protocol, parse_protocol, protocol_hash, read_lock,
                              released)


def test_every_released_protocol_is_in_the_lock_with_its_hash():
    assert check_lock() == []
    assert set(read_lock()) == set(released())


def test_a_changed_released_protocol_is_caught(monkeypatch):
    import rd3kit.protocols as protocols

    original = released()
    changed = dict(original)
    ref = "dc-cifar10@v1"
    doc = original[ref].model_dump(mode="json")
    doc["batch_size"] = 128
    changed[ref] = parse_protocol(json.dumps(doc), "edited")
    monkeypatch.setattr(protocols, "released", lambda: changed)
    problems = check_lock()
    assert len(problems) == 1 and problems[0].startswith("dc-cifar10@v1: released with sha256")
    assert "new version" in problems[0]


@pytest.mark.parametrize("ref", sorted(released()))
def test_resolved_protocol_snapshot(ref, data_regression):
    protocol = get_protocol(ref)
    data_regression.check({"ref": ref, "sha256": protocol_hash(protocol), "spec": protocol.model_dump(mode="json")},
                          basename=f"protocol_{ref.replace('@', '_')}")


def test_hash_is_canonical_json_sha256():
    import hashlib

    p = get_protocol("dc-cifar10@v1")
    text = canonical_json(p.model_dump(mode="json"))
    assert " " not in text.replace("DC (Zhao", "").split('"description"')[0]
    assert protocol_hash(p) == hashlib.sha256(text.encode()).hexdigest()


def _doc(**changes):
    doc = get_protocol("dc-cifar10@v1").model_dump(mode="json")
    doc.update(changes)
    return doc


def test_unknown_key_is_an_error_naming_file_and_key():
    with pytest.raises(ConfigError, match=r"my\.json: invalid protocol: lr_decay: Extra inputs"):
        parse_protocol(json.dumps(_doc(lr_decay=0.5)), "my.json")


def test_missing_key_is_an_error_naming_it():
    doc = _doc()
    del doc["optimizer"]["momentum"]
    with pytest.raises(ConfigError, match=r"optimizer\.momentum: Field required"):
        parse_protocol(json.dumps(doc), "my.json")


def test_wrong_type_is_an_error_with_got_value():
    with pytest.raises(ConfigError, match=r"batch_size: .*got '256'"):
        parse_protocol(json.dumps(_doc(batch_size="256")), "my.json")


def test_inconsistent_schedule_is_rejected():
    with pytest.raises(ConfigError, match="milestones"):
        parse_protocol(json.dumps(_doc(schedule={"name": "step", "milestones": [400], "gamma": 0.1,
                                                 "reset_optimizer": True})), "my.json")


def test_protocols_are_immutable():
    p = get_protocol("dc-cifar10@v1")
    with pytest.raises(Exception):
        p.batch_size = 1  # type: ignore[misc]


def test_lookup_needs_version_and_suggests():
    with pytest.raises(ConfigError, match="needs a version.*dc-cifar10@v1"):
        get_protocol("dc-cifar10")
    with pytest.raises(ConfigError, match="Did you mean dc-cifar10@v1"):
        get_protocol("dc-cifar1@v1")


def test_dc_protocol_matches_the_dc_code():
    """The facts of protocols.md A.1: 300 epochs (+1), no augmentation, one x0.1 decay after epoch E//2+1."""
    p = get_protocol("dc-cifar10@v1")
    assert (p.epochs, p.run_epochs, p.batch_size) == (300, 301, 256)
    assert p.augmentation.name == "none" and p.schedule.milestones == (151,) and p.schedule.reset_optimizer
    assert p.model.norm == "instancenorm" and p.model.width == 128 and p.model.depth == 3
    assert len(p.seeds) >= 10 and p.metric == "top1_final_epoch"
    mnist = get_protocol("dc-mnist@v1")
    assert mnist.augmentation.name == "dc" and mnist.epochs == 1000
    assert get_protocol("dsa-mnist@v1").augmentation.strategy == ("color", "crop", "cutout", "scale", "rotate")
    datm = get_protocol("datm-cifar100@v1")
    assert datm.batch_size == 128 and datm.data.zca is not None and datm.labels.kind == "soft_logits"
    assert datm.data.mean == get_protocol("dc-cifar10@v1").data.mean  # DATM uses CIFAR-10 constants for C100
