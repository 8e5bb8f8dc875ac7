"""The catalogue of known published distilled sets and teachers: one JSON file per entry, strictly loaded.

Must not: download, load tensors or hold facts in code. Entries are data; `rd3kit.sources.hub.load_entry`
turns one into a DistilledSet. A `null` commit is honest ("not pinned yet"): the pull resolves it and records
the commit it got in its lock.
"""

from __future__ import annotations

import difflib
import os
import re
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rd3kit.errors import ConfigError, DataError

CATALOG_DIR = Path(__file__).parent
NAME = r"^[a-z0-9]+(-[a-z0-9]+)*$"
REF = re.compile(r"[a-z0-9][a-z0-9-]*@v\d+")


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HubSource(Strict):
    """Files in a Hub repo. `files` are paths or glob patterns; `revision` is resolved only when `commit` is null."""

    repo: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
    repo_type: Literal["dataset"] = "dataset"  # model repos (teachers' weights) are not pulled yet
    commit: str | None = Field(pattern=r"^[0-9a-f]{40}$")
    revision: str = "main"
    files: tuple[str, ...] = Field(min_length=1)


class LocalSource(Strict):
    """A file under the data root ($RD3KIT_DATA, else ../shared/data next to the checkout), pinned by sha256."""

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Entry(Strict):
    name: str = Field(pattern=NAME)
    kind: Literal["distilled-set", "teacher"]
    description: str = Field(min_length=10)
    hub: HubSource | None = None
    local: LocalSource | None = None
    format: Literal["dc", "pt", "parquet", "imagefolder", "imagefolder-zip", "safetensors", "checkpoint"]
    space: Literal["raw01", "normalized", "zca"] | None
    dataset: str
    ipc: int | None = Field(ge=1)
    method: str
    select: int | None = None
    idc_factor: int | None = None
    image_size: tuple[int, int] | None
    label_type: Literal["hard", "soft_logits"] | None
    protocols: tuple[str, ...]
    protocols_note: str | None = None
    claims: tuple[str, ...] = ()
    source: str = Field(min_length=5)
    notes: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Entry":
        if (self.hub is None) == (self.local is None):
            raise ValueError("exactly one of 'hub' and 'local' must be given")
        bad = [p for p in self.protocols if not REF.fullmatch(p)]
        if bad:
            raise ValueError(f"protocols must be id@vN, got {bad}")
        if not self.protocols and not self.protocols_note:
            raise ValueError("an entry with no protocols needs a protocols_note saying why")
        if self.kind == "distilled-set" and self.space is None:
            raise ValueError("a distilled set must state its normalisation space")
        return self

    @property
    def location(self) -> str:
        if self.hub is not None:
            return f"{self.hub.repo}@{self.hub.commit or self.hub.revision + ' (unpinned)'}"
        return f"local:{self.local.file}"


def parse_entry(path: Path) -> Entry:
    """Load one catalogue file strictly; its file name must be `{name}.json`."""
    try:
        entry = Entry.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: invalid catalogue entry: {problems}") from None
    if path.name != f"{entry.name}.json":
        raise ConfigError(f"{path}: file name must be {entry.name}.json to match its name")
    return entry


@cache
def entries() -> dict[str, Entry]:
    """All catalogue entries by name (sorted)."""
    return {e.name: e for e in (parse_entry(p) for p in sorted(CATALOG_DIR.glob("*.json")))}


def get_entry(name: str) -> Entry:
    """Look up an entry by name, saying 'did you mean' on a miss."""
    table = entries()
    if name not in table:
        close = difflib.get_close_matches(name, table, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else " See `rd3kit catalog list`."
        raise ConfigError(f"{name!r} is not a catalogue name, a local path or an hf:// URI.{hint}")
    return table[name]


def data_root() -> Path:
    """$RD3KIT_DATA, else the shared data folder next to the source checkout (../shared/data)."""
    env = os.environ.get("RD3KIT_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def local_path(entry: Entry) -> Path:
    """The local file of a `local` entry, checked against its pinned sha256."""
    from rd3kit.sources.formats import sha256_file

    path = data_root() / entry.local.file
    if not path.exists():
        raise DataError(f"catalogue entry {entry.name}: {path} not found; set RD3KIT_DATA to the folder holding "
                        f"{entry.local.file}, or pass the file's path instead of the name")
    digest = sha256_file(path)
    if digest != entry.local.sha256:
        raise DataError(f"catalogue entry {entry.name}: {path} has sha256 {digest[:12]}..., expected "
                        f"{entry.local.sha256[:12]}...; the file is not the pinned one")
    return path
