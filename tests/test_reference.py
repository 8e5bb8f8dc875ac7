"""The reference store: every file parses, matches the lock, has one value per seed, and nothing is orphaned."""

from __future__ import annotations

import json

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


def _faithful_rerun(monkeypatch):
    """Replace training by what a faithful rerun returns: the originally recorded per-seed values.

    The CLI, the store, input loading and the verdicts all run for real; only the (minutes-long) training is
    skipped, so the test sees exactly what `make verify` sees when the reference file, not the code, changed.
    """
    from rd3kit import api

    original = {n: e for n, e in ENTRIES.items() if isinstance(e, Reproduction)}

    def evaluate(dset, protocol, test, train=None, seeds=None, runtime=None):
        entry = next(e for e in original.values() if e.set.sha256 in dset.files.values())
        return {"protocol": {"ref": entry.protocol, "sha256": entry.protocol_sha256}, "seeds": entry.seeds,
                "top1": entry.top1, "inputs": {"set": {"files": dset.files, "ipc": entry.ipc},
                                               "test": test.describe()}}

    monkeypatch.setattr(api, "evaluate", evaluate)


def _copy_store(tmp_path, monkeypatch, shift_pp: float):
    import shutil

    root = tmp_path / "reference"
    shutil.copytree(reference_root(), root)
    path = root / "reproductions" / "digits-random-ipc10-coupled-digits-v1.json"
    doc = json.loads(path.read_text())
    doc["top1"] = [v + shift_pp / 100 for v in doc["top1"]]
    path.write_text(json.dumps(doc, indent=1))
    monkeypatch.setenv("RD3KIT_REFERENCE", str(root))
    return root


@pytest.mark.parametrize("shift_pp, code", [(0.0, 0), (3.0, 1), (-3.0, 1)])
def test_verify_all_fails_naming_the_entry_whose_mean_was_edited(tmp_path, monkeypatch, shift_pp, code):
    """Issue 3's acceptance through the CLI `make verify` calls: a reference mean edited by 3 pp fails, naming it."""
    from typer.testing import CliRunner

    from rd3kit.cli import app

    _copy_store(tmp_path, monkeypatch, shift_pp)
    _faithful_rerun(monkeypatch)
    res = CliRunner().invoke(app, ["reference", "verify-all", "--only", "digits-random-ipc10-coupled-digits-v1",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == code, res.output
    if code:
        assert "NOT REPRODUCED: digits-random-ipc10-coupled-digits-v1" in res.output
        assert "not reproduced: digits-random-ipc10-coupled-digits-v1" in res.output
    else:
        assert "REPRODUCED: digits-random-ipc10-coupled-digits-v1" in res.output and "1 reran, 0 failed" in res.output


def test_verify_all_only_rejects_unknown_and_claim_names():
    from typer.testing import CliRunner

    from rd3kit.cli import app

    res = CliRunner().invoke(app, ["reference", "verify-all", "--only", "digits-random-ipc10-coupled-digit"])
    assert res.exit_code == 2 and "Did you mean digits-random-ipc10-coupled-digits-v1" in res.output
    claim = next(n for n, e in ENTRIES.items() if isinstance(e, Claim))
    res = CliRunner().invoke(app, ["reference", "verify-all", "--only", claim])
    assert res.exit_code == 2 and "a claim, not a reproduction" in res.output


@pytest.mark.parametrize("name", sorted(n for n, e in ENTRIES.items() if isinstance(e, Reproduction) and e.teacher))
def test_decoupled_reproduction_pins_a_released_teacher_and_a_decoupled_protocol(name):
    from rd3kit.protocols import get_protocol
    from rd3kit.protocols.decoupled import DecoupledProtocol

    entry = ENTRIES[name]
    assert isinstance(get_protocol(entry.protocol), DecoupledProtocol), f"{name}: teacher on a coupled protocol"
    assert len(entry.teacher.sha256) == 64 and not entry.teacher.path.startswith("/")
    if entry.teacher.protocol is not None:
        assert entry.teacher.protocol in read_lock(), f"{name}: teacher protocol {entry.teacher.protocol} not released"
