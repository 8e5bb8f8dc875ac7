"""The catalogue: every file parses strictly, names released protocols and existing reference entries, local
pins match the shared data, lookups say 'did you mean', and `catalog list|show` render (human and --json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rd3kit.catalog import CATALOG_DIR, Entry, data_root, entries, get_entry, local_path, parse_entry
from rd3kit.errors import ConfigError, DataError
from rd3kit.protocols import released


def _app() -> typer.Typer:
    from rd3kit.cli_hub import register

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Throwaway root."""

    register(app)
    return app


def test_every_file_parses_and_is_named_after_its_entry():
    files = sorted(CATALOG_DIR.glob("*.json"))
    assert len(files) == len(entries()) >= 20
    kinds = {(e.format, e.hub is not None) for e in entries().values()}
    assert {("parquet", True), ("dc", True), ("imagefolder-zip", True), ("dc", False)} <= kinds


def test_protocols_are_released_and_match_the_dataset():
    table = released()
    for entry in entries().values():
        for ref in entry.protocols:
            assert ref in table, f"{entry.name}: {ref} is not a released protocol"
            assert table[ref].data.name == entry.dataset, f"{entry.name}: {ref} evaluates another dataset"


def test_claims_name_existing_reference_entries():
    store = pytest.importorskip("rd3kit.reference.store", reason="the reference store is not in this checkout")
    known = store.load_all()
    for entry in entries().values():
        for claim in entry.claims:
            assert claim in known, f"{entry.name}: claim {claim} is not in reference/"
            assert known[claim].protocol in entry.protocols and known[claim].ipc == entry.ipc


def test_known_pins():
    sre2l = get_entry("rethinkdc-sre2l-imagenet-ipc10")
    assert sre2l.hub.repo == "he-yang/2025-rethinkdc-imagenet-sre2l-ipc-10"
    assert sre2l.hub.commit == "e27fd816ac9bb2076b5c0c87e921d3f5903fbb5f"
    dc = get_entry("dc-cifar10-ipc10-local")
    assert (dc.format, dc.space, dc.select, dc.protocols) == ("dc", "normalized", -1, ("dc-cifar10@v1",))
    assert dc.local.sha256 == "952659a6d6e04eb98042066133ab4b0875e2e75c48510af76349994058362077"


@pytest.mark.parametrize("name", [e.name for e in entries().values() if e.local is not None])
def test_local_entries_match_the_shared_data(name):
    entry = get_entry(name)
    if not (data_root() / entry.local.file).exists():
        pytest.skip(f"{data_root() / entry.local.file} absent (shared data not on this machine)")
    assert local_path(entry).name == Path(entry.local.file).name


def test_local_entry_with_wrong_bytes_is_refused(tmp_path, monkeypatch):
    entry = get_entry("dc-cifar10-ipc1-local")
    (tmp_path / "distilled" / "dc").mkdir(parents=True)
    (tmp_path / entry.local.file).write_bytes(b"not the pinned file")
    monkeypatch.setenv("RD3KIT_DATA", str(tmp_path))
    with pytest.raises(DataError, match="not the pinned one"):
        local_path(entry)
    monkeypatch.setenv("RD3KIT_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="set RD3KIT_DATA"):
        local_path(entry)


def test_lookup_says_did_you_mean():
    with pytest.raises(ConfigError, match="Did you mean rethinkdc-sre2l-imagenet-ipc10"):
        get_entry("rethinkdc-sre2l-imagenet-ipc1O")


def _doc(**changes) -> dict:
    doc = json.loads((CATALOG_DIR / "datadam-cifar10-ipc10.json").read_text())
    doc.update(changes)
    return doc


@pytest.mark.parametrize("changes, message", [
    ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ({"local": {"file": "x.pt", "sha256": "0" * 64}}, "exactly one of 'hub' and 'local'"),
    ({"protocols": ["dm-cifar10"]}, "id@vN"),
    ({"protocols": [], "protocols_note": None}, "needs a protocols_note"),
    ({"space": "rgb"}, "space"),
    ({"hub": {"repo": "a/b", "commit": "main", "files": ["x"]}}, "hub.commit"),
])
def test_strict_loader_rejects(tmp_path, changes, message):
    path = tmp_path / "datadam-cifar10-ipc10.json"
    path.write_text(json.dumps(_doc(**changes)))
    with pytest.raises(ConfigError, match=message):
        parse_entry(path)


def test_file_name_must_match(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps(_doc()))
    with pytest.raises(ConfigError, match="must be datadam-cifar10-ipc10.json"):
        parse_entry(path)


def test_entries_are_frozen():
    with pytest.raises(Exception):
        get_entry("datadam-cifar10-ipc10").ipc = 3  # type: ignore[misc]
    assert isinstance(get_entry("datadam-cifar10-ipc10"), Entry)


def test_cli_catalog_list_and_show():
    runner = CliRunner()
    listing = runner.invoke(_app(), ["catalog", "list"])
    assert listing.exit_code == 0 and "rethinkdc-sre2l-imagenet-ipc10" in listing.output
    rows = json.loads(runner.invoke(_app(), ["catalog", "list", "--json"]).output)
    assert {r["name"] for r in rows} == set(entries())
    shown = runner.invoke(_app(), ["catalog", "show", "datadam-cifar10-ipc10", "--json"])
    assert json.loads(shown.output)["hub"]["files"] == ["cifar10/syn_data_cifar10_ipc_10.pt"]
    human = runner.invoke(_app(), ["catalog", "show", "datadam-cifar10-ipc10"])
    assert human.exit_code == 0 and "uoft-dsp-lab/DataDAM@main (unpinned)" in human.output
    missing = runner.invoke(_app(), ["catalog", "show", "datadam-cifar10-ipc11"])
    assert missing.exit_code == 2 and "Did you mean" in missing.output and "Traceback" not in missing.output
