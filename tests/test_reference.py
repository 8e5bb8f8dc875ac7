"""The reference store: every file parses, matches the lock, has one value per seed, and nothing is orphaned."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rd3kit.errors import ConfigError
from rd3kit.protocols import read_lock
from rd3kit.reference.store import Claim, Reproduction, load_all, reference_root, save_entry

ENTRIES = load_all()
KNOWN_FOLDERS = {"claims", "reproductions", "baselines"}


def test_store_is_not_empty():
    kinds = {e.kind for e in ENTRIES.values()}
    assert kinds == {"claim", "reproduction"}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_entry_matches_the_protocol_lock(name):
    entry = ENTRIES[name]
    lock = read_lock()
    assert entry.protocol in lock, f"{name}: protocol {entry.protocol} is not released"
    assert lock[entry.protocol] == entry.protocol_sha256, f"{name}: protocol hash differs from the lock"


@pytest.mark.parametrize("name", sorted(n for n, e in ENTRIES.items() if isinstance(e, Reproduction)))
def test_reproduction_has_one_value_per_seed(name):
    entry = ENTRIES[name]
    assert len(entry.top1) == len(entry.seeds) == len(set(entry.seeds))
    assert all(0.0 <= v <= 1.0 for v in entry.top1)
    if entry.claim is not None:
        assert isinstance(ENTRIES.get(entry.claim), Claim), f"{name}: links to missing claim {entry.claim}"


@pytest.mark.parametrize("name", sorted(n for n, e in ENTRIES.items() if isinstance(e, Claim)))
def test_claim_is_a_fraction_with_a_source(name):
    entry = ENTRIES[name]
    assert 0.0 < entry.mean < 1.0 and entry.source.citation
    assert entry.std is None or entry.std < 0.2


def test_no_orphans():
    """Every file under reference/ is an entry the store loads, or a baseline selection a test reads."""
    root = reference_root()
    for path in root.rglob("*"):
        if path.is_dir() or path.name == "README.md":
            continue
        rel = path.relative_to(root)
        assert rel.parts[0] in KNOWN_FOLDERS, f"orphan file {rel}: not in {sorted(KNOWN_FOLDERS)}"
        if rel.parts[0] in ("claims", "reproductions"):
            assert path.stem in ENTRIES, f"orphan file {rel}: the store does not load it"


def test_record_refuses_overwrite_without_reason(tmp_path):
    entry = next(e for e in ENTRIES.values() if isinstance(e, Reproduction))
    save_entry(entry, root=tmp_path)
    with pytest.raises(ConfigError, match="--replace --reason"):
        save_entry(entry, root=tmp_path)
    path = save_entry(entry, root=tmp_path, replace_reason="rerun on a second machine")
    doc = json.loads(path.read_text())
    assert doc["history"][0]["reason"] == "rerun on a second machine"


def test_editing_a_claim_mean_by_3pp_fails_verification(tmp_path):
    """What `make verify` relies on: a drifted reference number fails with a message naming the entry."""
    from rd3kit.reference.verdict import verify

    repro = ENTRIES["digits-random-ipc10-coupled-digits-v1"]
    result = {"protocol": {"ref": repro.protocol, "sha256": repro.protocol_sha256}, "seeds": repro.seeds,
              "top1": repro.top1, "inputs": {"set": {"files": {"x": repro.set.sha256}, "ipc": 10},
                                             "test": {"sha256": repro.test.sha256}}}
    assert verify(result, repro).passed
    drifted = repro.model_copy(update={"top1": [v + 0.03 for v in repro.top1]})
    verdict = verify(result, drifted)
    assert not verdict.passed and verdict.render().startswith("NOT REPRODUCED: digits-random-ipc10")


def test_cli_record_requires_reason_with_replace(tmp_path):
    from typer.testing import CliRunner

    from rd3kit.cli import app

    res = CliRunner().invoke(app, ["reference", "record", str(tmp_path / "r.json"), "--name", "x", "--method", "m",
                                   "--replace"])
    assert res.exit_code == 2 and "--reason" in res.output
