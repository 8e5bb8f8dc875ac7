"""Shared fixtures: where the shared data lives (tests skip when it is absent) and tiny protocols."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rd3kit.protocols import get_protocol, parse_protocol

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(rel: str) -> Path:
    """A file of ../shared/data, or a skip saying what is missing (a user's machine has no such folder)."""
    path = SHARED_DATA / rel
    if not path.is_file():
        pytest.skip(f"needs {path} (the project's shared data folder); absent on this machine")
    return path


def tiny_protocol(base: str = "coupled-digits@v1", **changes):
    """A released protocol with some fields changed, re-validated strictly (tests only, never released)."""
    doc = get_protocol(base).model_dump(mode="json")
    for key, value in changes.items():
        target = doc
        *parents, leaf = key.split("__")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return parse_protocol(json.dumps(doc), f"tiny variant of {base}")


@pytest.fixture
def tiny():
    """coupled-digits with 4 epochs and 3 seeds: seconds, not minutes."""
    return tiny_protocol(run_epochs=4, epochs=3, schedule__milestones=[2], seeds=[0, 1, 2])


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Keep every test's run cache and records out of the user's home."""
    monkeypatch.setenv("RD3KIT_HOME", str(tmp_path / "rd3kit-home"))
