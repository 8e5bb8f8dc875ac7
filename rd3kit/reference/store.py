"""The reference store: claims (papers' numbers) and reproductions (the kit's runs), one JSON file per entry.

Must not: compute verdicts (rd3kit.reference.verdict does) or overwrite an entry without a written reason.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from rd3kit.errors import ConfigError
from rd3kit.record import read_json, write_json

NAME = r"^[a-z0-9]+([.-][a-z0-9]+)*$"


def reference_root() -> Path:
    """`$RD3KIT_REFERENCE`, else the `reference/` folder of the source checkout."""
    env = os.environ.get("RD3KIT_REFERENCE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "reference"


def rd3kit_home() -> Path:
    """`$RD3KIT_HOME`, else ~/.cache/rd3kit: where a decoupled entry's teacher may live (root "rd3kit-home")."""
    return Path(os.environ.get("RD3KIT_HOME", Path.home() / ".cache" / "rd3kit"))


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Source(Strict):
    id: str
    type: str
    citation: str
    table: str | None = None


class Acceptance(Strict):
    """An entry's override of the default rule; a reason is mandatory and shown in every verdict."""

    floor: float = Field(ge=0)
    k: float = Field(gt=0)
    reason: str = Field(min_length=10)


class Claim(Strict):
    """A published number: mean and std as fractions, with its source. Never averaged with another source."""

    kind: Literal["claim"]
    name: str = Field(pattern=NAME)
    method: str
    dataset: str
    ipc: int
    arch: str
    protocol: str
    protocol_sha256: str
    mean: float = Field(ge=0, le=1)
    std: float | None = Field(default=None, ge=0, le=1)
    n: int | None = None
    source: Source
    artifact: str | None = None
    notes: str = ""
    acceptance: Acceptance | None = None


class SetInput(Strict):
    """Where a reproduction's distilled set comes from, pinned by sha256."""

    source: Literal["shared-data", "embedded", "catalog", "hub"]
    path: str
    sha256: str | None
    space: Literal["raw01", "normalized", "zca"]
    select: int | None = None
    idc_factor: int | None = None
    # Decoupled runs only (each moves the number): the producer's normalisation undone before training
    # (--set-mean/--set-std for space "normalized"), and, for a random subset of a real train .npz
    # (`path`), the subset seed and the sha256 of its drawn indices (json list) as a check on the draw.
    set_mean: list[float] | None = None
    set_std: list[float] | None = None
    subset_seed: int | None = None
    indices_sha256: str | None = None


class TeacherInput(Strict):
    """A decoupled run's teacher: the file pinned by sha256, found under the shared data folder or $RD3KIT_HOME."""

    root: Literal["shared-data", "rd3kit-home"]
    path: str
    sha256: str
    source: str  # the --teacher-source of the recorded run (hf://..., torchvision:..., rd3kit-teacher:REC.json)
    record: str | None = None  # rd3kit-teacher: its record, relative to the same root
    protocol: str | None = None  # rd3kit-teacher: the teacher protocol id@vN it was trained under


class SplitInput(Strict):
    source: Literal["shared-data", "embedded", "torchvision"]
    path: str
    sha256: str


class Reproduction(Strict):
    """A run of the kit: raw per-seed values plus everything needed to rerun it."""

    kind: Literal["reproduction"]
    name: str = Field(pattern=NAME)
    claim: str | None
    method: str
    dataset: str
    ipc: int
    protocol: str
    protocol_sha256: str
    set: SetInput
    test: SplitInput
    train: SplitInput | None = None
    teacher: TeacherInput | None = None  # set for decoupled-family runs (`rd3kit eval-decoupled`), else None
    seeds: list[int]
    top1: list[float]
    tier: Literal["cpu", "gpu", "heavy"]
    command: str
    rd3kit: str
    git_sha: str | None
    device: str
    torch: str
    cuda: str | None
    wall_s: float
    created: str
    notes: str = ""
    acceptance: Acceptance | None = None
    history: list[dict] = Field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.top1))

    @property
    def std(self) -> float:
        return float(np.std(self.top1, ddof=0))


Entry = Union[Claim, Reproduction]
_ADAPTER = TypeAdapter(Entry)
FOLDERS = {"claim": "claims", "reproduction": "reproductions"}


def parse_entry(path: Path) -> Entry:
    try:
        entry = _ADAPTER.validate_python(read_json(path))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: invalid reference entry: {problems}") from None
    if path.stem != entry.name:
        raise ConfigError(f"{path}: file name must be {entry.name}.json")
    return entry


@cache
def _load_all(root: Path) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for folder in FOLDERS.values():
        for path in sorted((root / folder).glob("*.json")):
            entry = parse_entry(path)
            if entry.name in entries:
                raise ConfigError(f"{path}: duplicate entry name {entry.name}")
            entries[entry.name] = entry
    return entries


def load_all(root: Path | None = None) -> dict[str, Entry]:
    """All entries under `root` by name (cached per root; call `load_all.cache_clear()` after writes)."""
    return _load_all((root or reference_root()).resolve())


load_all.cache_clear = _load_all.cache_clear  # type: ignore[attr-defined]


def get_entry(name: str, root: Path | None = None) -> Entry:
    import difflib

    entries = load_all(root)
    if name not in entries:
        close = difflib.get_close_matches(name, entries, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else " See `rd3kit reference list`."
        raise ConfigError(f"no reference entry {name!r}.{hint}")
    return entries[name]


def entry_path(entry: Entry, root: Path | None = None) -> Path:
    return (root or reference_root()) / FOLDERS[entry.kind] / f"{entry.name}.json"


def save_entry(entry: Entry, root: Path | None = None, replace_reason: str | None = None) -> Path:
    """Write an entry; an existing one is replaced only with a reason, kept in the entry's history."""
    path = entry_path(entry, root)
    doc = entry.model_dump(mode="json", exclude_none=False)
    if path.exists():
        if not replace_reason:
            raise ConfigError(f"{path}: entry {entry.name} exists; pass --replace --reason '...' to overwrite it")
        old = read_json(path)
        history = old.pop("history", [])
        doc["history"] = history + [{"replaced": old, "reason": replace_reason}]
    write_json(path, doc)
    _load_all.cache_clear()
    return path
