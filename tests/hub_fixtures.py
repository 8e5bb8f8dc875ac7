"""Fixtures for the Hub tests: a loopback Hub, an isolated kit/HF home, tiny generated sets.

Must not: reach anything but 127.0.0.1. The client gets the endpoint explicitly (HubConfig.endpoint), so the
import-time read of HF_ENDPOINT does not matter; Xet (read from the environment at import) is switched off
for the test's duration through the constant the client consults at call time.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from hub_server import LoopbackHub
from rd3kit.sources.formats import DistilledSet
from rd3kit.sources.hub import HubConfig

# A token-shaped secret that must never show up in output, logs, cards or records.
TOKEN = "hf_rd3kitTestSecret0123456789abcdefXYZ"
_names = itertools.count()


@pytest.fixture(scope="module")
def hub():
    with LoopbackHub(token=TOKEN) as server:
        yield server


@pytest.fixture
def hub_config(hub, tmp_path: Path, monkeypatch) -> HubConfig:
    """Environment of a user logged in to the loopback Hub; returns the matching HubConfig."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the loopback Hub speaks LFS, not Xet
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    for key, value in {"HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.endpoint, "RD3KIT_HOME": str(tmp_path / "home"),
                       "RD3KIT_HF_CACHE": str(tmp_path / "hf-cache"), "RD3KIT_DATA": str(tmp_path / "no-data")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return HubConfig.from_env()


def repo_name(prefix: str = "set") -> str:
    return f"rd3kit-test/{prefix}-{next(_names)}"


def tiny_set(space: str = "normalized", classes: int = 10, ipc: int = 1, size: int = 32, seed: int = 0,
             lr: float | None = None) -> DistilledSet:
    """A CIFAR-shaped set: `classes * ipc` images, class-blocked hard labels."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(classes * ipc, 3, size, size, generator=gen)
    if space != "raw01":
        images = (images - 0.5) / 0.25
    labels = torch.arange(classes).repeat_interleave(ipc)
    return DistilledSet(images, labels, space, lr, {"generated": "0" * 64}, "generated")
