"""Coreset selections as small JSON files (reference/baselines/), a strict loader, and exact subset rebuild.

Must not: select (rd3kit.baselines.select does), download, or rebuild from a train split whose sha256
differs from the one the selection was made on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import torch

from rd3kit import __version__
from rd3kit.baselines.select import METHODS
from rd3kit.errors import ConfigError, DataError
from rd3kit.sources.realdata import RealSplit

FORMAT = "rd3kit-baseline-selection/1"
# Written into every file so the indices explain themselves without this code.
INDEX_ORDER = ("positions in the train split as loaded (pinned CIFAR-10 npz: class-sorted, official order "
               "within a class); per class, in selection order")
_KEYS = ("format", "method", "dataset", "train_sha256", "ipc", "seed", "feature_space", "rd3kit_version",
         "index_order", "indices")
_SHA = re.compile(r"^[0-9a-f]{64}$")
# Forgetting selections carry one more key, "run": the training run that scored the examples.
STORED_METHODS = METHODS + ("forgetting",)
_SEEDED = ("random", "forgetting")


def file_name(dataset: str, method: str, ipc: int, seed: int | None) -> str:
    """`<dataset>-<method>-ipc<N>[-seed<S>].json`: the seed part only for seeded (random, forgetting) ones."""
    return f"{dataset}-{method}-ipc{ipc}{'' if seed is None else f'-seed{seed}'}.json"


@dataclass(frozen=True)
class Selection:
    """One stored coreset: which train images (by index), how they were chosen, and on which exact file."""

    method: str
    dataset: str
    train_sha256: str
    ipc: int
    seed: int | None
    feature_space: str | None
    rd3kit_version: str
    indices: Mapping[int, tuple[int, ...]]
    run: Mapping | None = None

    def __post_init__(self) -> None:
        frozen = {int(c): tuple(int(i) for i in idx) for c, idx in sorted(self.indices.items())}
        object.__setattr__(self, "indices", MappingProxyType(frozen))

    @property
    def name(self) -> str:
        """Canonical file name, e.g. cifar10-random-ipc10-seed0.json or cifar10-herding-ipc10.json."""
        return file_name(self.dataset, self.method, self.ipc, self.seed)

    def flat(self) -> list[int]:
        """All indices, classes ascending, each class in selection order."""
        return [i for c in sorted(self.indices) for i in self.indices[c]]

    def as_dict(self) -> dict:
        head = {k: getattr(self, k) for k in _KEYS if k not in ("format", "index_order", "indices")}
        extra = {} if self.run is None else {"run": dict(self.run)}
        return {"format": FORMAT, **head, "index_order": INDEX_ORDER, **extra,
                "indices": {str(c): list(v) for c, v in self.indices.items()}}


def make_selection(picks: Mapping[int, list[int]], *, method: str, train: RealSplit, ipc: int,
                   seed: int | None, feature_space: str | None, run: Mapping | None = None) -> Selection:
    """Wrap selector output with its provenance; validates it as the loader would."""
    sel = Selection(method, train.dataset, train.sha256, ipc, seed, feature_space, __version__, picks, run)
    _validate(sel, "<new selection>")
    return sel


def to_json(sel: Selection) -> str:
    """Stable text: header fields one per line, one line of indices per class, trailing newline."""
    data = sel.as_dict()
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in data.items() if k != "indices"]
    rows = [f"    {json.dumps(c)}: {json.dumps(v)}" for c, v in data["indices"].items()]
    return "{\n" + "\n".join(lines) + '\n  "indices": {\n' + ",\n".join(rows) + "\n  }\n}\n"


def save(sel: Selection, path: Path, overwrite: bool = False) -> bool:
    """Write `sel` to `path`; returns False when an identical file is already there.

    Refuses to replace a different file unless `overwrite` is True: stored selections are reference data.
    """
    text = to_json(sel)
    if path.exists():
        if path.read_text() == text:
            return False
        if not overwrite:
            raise ConfigError(f"{path}: a different selection is already stored there; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def load(path: Path) -> Selection:
    """Read a selection file strictly: exact key set, exact types, indices consistent with ipc."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    return parse(data, str(path))


def _need(cond: bool, where: str, key: str, expected: str, got: object) -> None:
    if not cond:
        raise DataError(f"{where}: key {key!r}: expected {expected}, got {got!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse(data: object, where: str) -> Selection:
    """Build a Selection from decoded JSON; every deviation is a DataError naming the key."""
    _need(isinstance(data, dict), where, "<top level>", "an object", type(data).__name__)
    keys = set(data)
    want = set(_KEYS) | ({"run"} if data.get("method") == "forgetting" else set())
    _need(keys == want, where, "<keys>", f"exactly {sorted(want)}",
          f"missing {sorted(want - keys)}, unknown {sorted(keys - want)}")
    _need(data["format"] == FORMAT, where, "format", repr(FORMAT), data["format"])
    _need(data["index_order"] == INDEX_ORDER, where, "index_order", "the documented order text", data["index_order"])
    for key in ("method", "dataset", "train_sha256", "rd3kit_version"):
        _need(isinstance(data[key], str), where, key, "a string", data[key])
    _need(_is_int(data["ipc"]), where, "ipc", "an integer", data["ipc"])
    _need(data["seed"] is None or _is_int(data["seed"]), where, "seed", "an integer or null", data["seed"])
    _need(data["feature_space"] is None or isinstance(data["feature_space"], str), where, "feature_space",
          "a string or null", data["feature_space"])
    raw = data["indices"]
    _need(isinstance(raw, dict) and all(re.fullmatch(r"0|[1-9][0-9]*", k) for k in raw), where, "indices",
          "an object keyed by class ids", raw if not isinstance(raw, dict) else sorted(raw))
    for c, idx in raw.items():
        _need(isinstance(idx, list) and all(_is_int(i) for i in idx), where, f"indices.{c}", "a list of integers", idx)
    if "run" in data:
        _need(isinstance(data["run"], dict), where, "run", "an object describing the scoring run", data["run"])
    sel = Selection(data["method"], data["dataset"], data["train_sha256"], data["ipc"], data["seed"],
                    data["feature_space"], data["rd3kit_version"], {int(c): v for c, v in raw.items()},
                    data.get("run"))
    _validate(sel, where)
    return sel


def _validate(sel: Selection, where: str) -> None:
    _need(sel.method in STORED_METHODS, where, "method", f"one of {list(STORED_METHODS)}", sel.method)
    _need(bool(_SHA.match(sel.train_sha256)), where, "train_sha256", "64 lowercase hex digits", sel.train_sha256)
    _need(sel.ipc >= 1, where, "ipc", "at least 1", sel.ipc)
    seeded, in_space = sel.method in _SEEDED, sel.method in ("herding", "kcenter")
    _need((sel.seed is None) != seeded, where, "seed",
          "an integer for random/forgetting, null for herding/kcenter", sel.seed)
    _need((sel.feature_space is None) != in_space, where, "feature_space",
          "a named space for herding/kcenter, null otherwise", sel.feature_space)
    _need((sel.run is None) != (sel.method == "forgetting"), where, "run",
          "the scoring run for forgetting, absent otherwise", sel.run)
    _need(len(sel.indices) > 0, where, "indices", "at least one class", {})
    for c, idx in sel.indices.items():
        _need(len(idx) == sel.ipc, where, f"indices.{c}", f"{sel.ipc} indices (ipc)", len(idx))
    flat = sel.flat()
    _need(min(flat) >= 0, where, "indices", "non-negative indices", min(flat))
    _need(len(set(flat)) == len(flat), where, "indices", "no index twice", len(flat) - len(set(flat)))


def rebuild(sel: Selection, train: RealSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact subset: uint8 images (n,C,H,W) and int64 labels, classes ascending, selection order within.

    Raises DataError when `train` is not the file the selection was made on or a label does not match.
    """
    if train.sha256 != sel.train_sha256:
        raise DataError(f"selection {sel.name} was made on train sha256 {sel.train_sha256}, but {train.origin} "
                        f"has {train.sha256}; load the pinned train file")
    if train.dataset != sel.dataset:
        raise DataError(f"selection {sel.name} is for {sel.dataset}, got a {train.dataset} split")
    idx = torch.tensor(sel.flat(), dtype=torch.int64)
    if int(idx.max()) >= train.labels.numel():
        raise DataError(f"selection {sel.name}: index {int(idx.max())} past the {train.labels.numel()} train images")
    expected = torch.tensor([c for c in sorted(sel.indices) for _ in sel.indices[c]], dtype=torch.int64)
    labels = train.labels[idx]
    if not torch.equal(labels, expected):
        raise DataError(f"selection {sel.name}: the train labels at its indices do not match its class keys")
    return train.images[idx].clone(), labels.clone()
