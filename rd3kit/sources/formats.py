"""Readers for the tensor formats DD authors publish (.pt dicts/tuples/tensors, MTT/DATM triples, IDC data.pt).

Must not: unpickle arbitrary objects (always `weights_only=True`, with a named allow-list), touch the network,
or guess a normalisation space: the caller or the catalogue states it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from rd3kit.errors import DataError

Space = Literal["raw01", "normalized", "zca"]
SPACES: tuple[str, ...] = ("raw01", "normalized", "zca")

# DC result files keep `accs_all_exps` as numpy float scalars; these globals are what torch's
# weights_only unpickler names when it refuses them. Nothing else is allowed.
_NUMPY_SAFE = [np.dtype, np.float64, np.float32, np.int64]
try:  # numpy >= 1.25 keeps scalar reconstruction in numpy.core.multiarray / numpy._core.multiarray
    from numpy._core.multiarray import scalar as _np_scalar  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - older numpy
    from numpy.core.multiarray import scalar as _np_scalar  # type: ignore[no-redef]
# Files written under numpy 1.x name the scalar reconstructor numpy.core.multiarray.scalar; under numpy 2
# that module is an alias, so allow the function under both of its pickled names.
_NUMPY_SAFE += [_np_scalar, (_np_scalar, "numpy.core.multiarray.scalar")]
_NUMPY_SAFE += [type(np.dtype(t)) for t in ("float64", "float32", "int64")]


@dataclass(frozen=True)
class DistilledSet:
    """A distilled set in memory: images (N,C,H,W) float32 in `space`, labels (N,) int64 or (N,K) logits."""

    images: torch.Tensor
    labels: torch.Tensor
    space: Space
    lr: float | None = None
    files: dict[str, str] = field(default_factory=dict)  # file path -> sha256 of its bytes
    origin: str = ""
    recipe: dict = field(default_factory=dict)  # how it was read (select, idc_factor): recorded, needed to redo it

    @property
    def soft(self) -> bool:
        return self.labels.ndim == 2

    def hard_labels(self) -> torch.Tensor:
        return self.labels.argmax(dim=1) if self.soft else self.labels


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def safe_load(path: Path) -> object:
    """`torch.load` with weights_only=True and only the numpy scalar globals DC's files need."""
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a refused or corrupt pickle
        raise DataError(
            f"{path}: cannot be read safely as a torch file ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            "rd3kit never unpickles arbitrary objects; convert the file to tensors or safetensors."
        ) from None


def _as_tensor(value: object, path: Path, key: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{path}: {key} should be a tensor, got {type(value).__name__}")
    return value


def _pick_dc(obj: dict, path: Path, select: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    data = obj["data"]
    if isinstance(data, (list, tuple)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return _as_tensor(data[0], path, "data[0]"), _as_tensor(data[1], path, "data[1]")  # DataDAM
    if not isinstance(data, (list, tuple)) or not data:
        raise DataError(f"{path}: key 'data' should be a non-empty list of [images, labels] pairs")
    if select is None and len(data) > 1:
        raise DataError(f"{path}: 'data' holds {len(data)} sets; choose one with --select (e.g. -1 for the last)")
    index = -1 if select is None else select
    try:
        pair = data[index]
    except IndexError:
        raise DataError(f"{path}: --select {index} out of range for {len(data)} sets in 'data'") from None
    return _as_tensor(pair[0], path, f"data[{index}][0]"), _as_tensor(pair[1], path, f"data[{index}][1]")


def read_pt(path: Path, select: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a .pt in any published tensor layout; returns (images, labels or None)."""
    obj = safe_load(path)
    if isinstance(obj, dict) and "data" in obj:
        return _pick_dc(obj, path, select)
    if isinstance(obj, dict) and {"images", "labels"} <= obj.keys():
        return _as_tensor(obj["images"], path, "images"), _as_tensor(obj["labels"], path, "labels")
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return _as_tensor(obj[0], path, "[0]"), _as_tensor(obj[1], path, "[1]")
    if isinstance(obj, torch.Tensor):
        return obj, None
    keys = sorted(obj.keys()) if isinstance(obj, dict) else type(obj).__name__
    raise DataError(
        f"{path}: unknown layout {keys}; expected {{'data': [[x, y], ...]}}, {{'images', 'labels'}}, (x, y) or a tensor"
    )


def decode_zoom(images: torch.Tensor, labels: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """IDC multi-formation decode: split each image into factor x factor tiles, upsample each bilinearly."""
    n, c, h, w = images.shape
    th, tw = h // factor, w // factor
    tiles = images[:, :, : th * factor, : tw * factor].reshape(n, c, factor, th, factor, tw)
    tiles = tiles.permute(2, 4, 0, 1, 3, 5).reshape(factor * factor * n, c, th, tw)
    # IDC upsamples every tile back to the stored resolution (bilinear, as decode_zoom does).
    out = F.interpolate(tiles, size=(h, w), mode="bilinear")
    return out, labels.repeat(factor * factor, *([1] * (labels.ndim - 1)))


def load_local(
    paths: list[Path],
    space: Space,
    select: int | None = None,
    idc_factor: int | None = None,
) -> DistilledSet:
    """Load a distilled set from local files.

    `paths` is one file holding images and labels, or MTT/DATM's `images_best.pt` with `labels_best.pt` and
    optionally `lr_best.pt` in the same folder (pass the folder or the images file).
    """
    if space not in SPACES:
        raise DataError(f"normalisation space must be one of {SPACES}, got {space!r}")
    files = _expand(paths)
    images, labels = read_pt(files[0], select)
    lr = None
    for extra in files[1:]:
        if extra.name.startswith("labels"):
            labels = _as_tensor(safe_load(extra), extra, "labels")
        elif extra.name.startswith("lr"):
            lr = float(_as_tensor(safe_load(extra), extra, "lr").reshape(-1)[0])
    if labels is None:
        raise DataError(f"{files[0]}: holds images only; pass the labels file as well (e.g. labels_best.pt)")
    images = images.detach().to(torch.float32).contiguous()
    labels = labels.detach()
    labels = labels.to(torch.int64) if labels.ndim == 1 else labels.to(torch.float32)
    if idc_factor:
        images, labels = decode_zoom(images, labels, idc_factor)
    recipe = {"select": select, "idc_factor": idc_factor}
    return DistilledSet(images, labels, space, lr, {str(f): sha256_file(f) for f in files}, str(files[0]), recipe)


def _expand(paths: list[Path]) -> list[Path]:
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        found = [folder / n for n in ("images_best.pt", "labels_best.pt", "lr_best.pt") if (folder / n).exists()]
        if not found:
            raise DataError(f"{folder}: a folder must hold images_best.pt (+ labels_best.pt, lr_best.pt)")
        return found
    if len(paths) == 1 and paths[0].name.startswith("images_"):
        folder, tag = paths[0].parent, paths[0].name[len("images_"):]
        return [paths[0]] + [folder / f"{k}_{tag}" for k in ("labels", "lr") if (folder / f"{k}_{tag}").exists()]
    for path in paths:
        if not path.exists():
            raise DataError(f"{path}: file not found")
    return list(paths)
