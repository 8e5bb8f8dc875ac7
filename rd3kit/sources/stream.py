"""Large image sets read lazily: a torch Dataset over an ImageFolder (plain or zipped) or parquet row groups.

Only the file list and the labels are held in memory; each image is decoded when a DataLoader worker asks for
it, so an ImageNet-1K IPC50 set (50,000 images) never exists as one float tensor. Items come in exactly the
order and with exactly the labels of rd3kit.sources.images (`load_imagefolder`, `load_parquet`): same class
rules, same (label, name) order, same shard order, so a streamed batch equals the in-memory batch bit for bit.

Must not: touch the network, keep decoded images after returning them, or decide a normalisation space (image
files are raw01 pixels; items are uint8 (C,H,W), turned into [0,1] floats by the caller as `images` does).
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rd3kit.errors import DataError
from rd3kit.sources.formats import sha256_file
from rd3kit.sources.images import LABEL_COLUMNS, _class_of, _manifest_digest, class_index, decode_image, is_image

STREAM_MIN_IMAGES = 20_000  # above this many images the decoupled CLI streams (CIFAR-100 IPC50 = 5,000 stays in memory)


@dataclass(frozen=True)
class Item:
    """Where one image lives: a file (`member` None), a zip member, or a parquet (row group, row) of a shard."""

    source: str
    member: str | None = None
    row_group: int = -1
    row: int = -1


class StreamDataset(torch.utils.data.Dataset):
    """Items decoded on demand into uint8 (C,H,W); labels (N,) are held in memory. Safe to use from workers."""

    def __init__(self, items: list[Item], labels: Tensor, kind: str, files: dict[str, str], origin: str):
        self.items, self.labels, self.kind, self.files, self.origin = items, labels, kind, files, origin
        self._handles: dict[str, object] = {}  # per process: open zips, the last parquet row group read
        self._pid = -1

    def __len__(self) -> int:
        return len(self.items)

    def _handle(self, key: str, opener):
        if self._pid != os.getpid():  # a forked worker must not share the parent's file handles
            self._handles, self._pid = {}, os.getpid()
        if key not in self._handles:
            if len(self._handles) > 8:
                self._handles.clear()
            self._handles[key] = opener()
        return self._handles[key]

    def _bytes(self, item: Item) -> tuple[bytes, str]:
        if self.kind == "imagefolder":
            return Path(item.source).read_bytes(), item.source
        if self.kind == "imagefolder-zip":
            archive = self._handle(item.source, lambda: zipfile.ZipFile(item.source))
            return archive.read(item.member), f"{item.source}:{item.member}"
        column = self._handle(f"{item.source}#{item.row_group}", lambda: _image_column(item.source, item.row_group))
        cell = column[item.row]
        return (cell["bytes"] if isinstance(cell, dict) else cell), f"{item.source} row group {item.row_group} row {item.row}"

    def __getitem__(self, index: int) -> Tensor:
        data, where = self._bytes(self.items[index])
        img = decode_image(data, where)
        img = img[..., None] if img.ndim == 2 else img
        return torch.from_numpy(np.array(img)).permute(2, 0, 1)  # a writable copy: PIL's buffer is read-only

    def describe(self) -> dict:
        return {"origin": self.origin, "kind": self.kind, "files": self.files, "n": len(self.items), "streamed": True}


def _image_column(shard: str, row_group: int) -> list:
    import pyarrow.parquet as pq

    return pq.ParquetFile(shard).read_row_group(row_group, columns=["image"]).column("image").to_pylist()


def _folder(path: Path, classes: list[str] | None) -> StreamDataset:
    found = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and is_image(p.name)]
    index = class_index(path, {_class_of(n) for n in found}, classes)
    order = sorted(found, key=lambda n: (index[_class_of(n)], n))
    labels = torch.tensor([index[_class_of(n)] for n in order], dtype=torch.int64)
    items = [Item(str(path / n)) for n in order]
    return StreamDataset(items, labels, "imagefolder", {f"{path}/**": _manifest_digest(path, order)}, str(path))


def _zip(path: Path, classes: list[str] | None) -> StreamDataset:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if is_image(n)]
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a valid zip file (truncated download?)") from None
    index = class_index(path, {_class_of(n) for n in names}, classes)
    order = sorted(names, key=lambda n: (index[_class_of(n)], n))
    labels = torch.tensor([index[_class_of(n)] for n in order], dtype=torch.int64)
    return StreamDataset([Item(str(path), n) for n in order], labels, "imagefolder-zip",
                         {str(path): sha256_file(path)}, str(path))


def _parquet(path: Path) -> StreamDataset:
    import pyarrow.parquet as pq

    shards = [path] if path.is_file() else sorted(path.rglob("*.parquet"), key=lambda p: p.as_posix())
    shards = [p for p in shards if p.name.startswith("train")] or shards  # as images.load_parquet
    items, labels = [], []
    for shard in shards:
        try:
            handle = pq.ParquetFile(shard)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError for corrupt files
            raise DataError(f"{shard}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
        names = handle.schema_arrow.names
        label_col = next((c for c in LABEL_COLUMNS if c in names), None)
        if "image" not in names or label_col is None:
            raise DataError(f"{shard}: expected columns 'image' and one of {LABEL_COLUMNS}, found {names}")
        for rg in range(handle.num_row_groups):
            column = handle.read_row_group(rg, columns=[label_col]).column(label_col).to_pylist()
            items += [Item(str(shard), None, rg, row) for row in range(len(column))]
            labels += column
    return StreamDataset(items, torch.tensor(labels, dtype=torch.int64), "parquet",
                         {str(s): sha256_file(s) for s in shards}, str(path))


def open_stream(path: Path, classes: list[str] | None = None) -> StreamDataset:
    """Index an ImageFolder, a zipped ImageFolder or parquet shards without decoding any image."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found")
    if path.suffix.lower() == ".zip":
        dataset = _zip(path, classes)
    elif path.suffix.lower() == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet"))):
        dataset = _parquet(path)
    elif path.is_dir():
        dataset = _folder(path, classes)
    else:
        raise DataError(f"{path}: expected a folder of class folders, a .zip of them, or .parquet shards")
    if len(dataset) == 0:
        raise DataError(f"{path}: no images inside class folders / parquet rows")
    return dataset


@dataclass(frozen=True)
class Streamed:
    """A streamed set as the training loop takes it: the dataset, decode workers, the device batches go to."""

    dataset: StreamDataset
    workers: int
    device: torch.device
    image_shape: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.dataset), *self.image_shape)

    def batches(self, order: Tensor, batch: int):
        """Float [0,1] batches for consecutive chunks of `order` (what `images[chunk]` gives in memory)."""
        return batches(self, order, batch)


def streamed(dataset: StreamDataset, workers: int, device: torch.device) -> Streamed:
    """Wrap `dataset` for the loop; the image shape is read from its first item."""
    return Streamed(dataset, workers, device, tuple(dataset[0].shape))


def _collate(where: str, shape: tuple[int, ...]):
    def stack(images: list[Tensor]) -> Tensor:
        odd = [tuple(t.shape) for t in images if tuple(t.shape) != shape]
        if odd:
            raise DataError(f"{where}: images differ in size: expected {shape}, got {odd[0]}; a set needs one size")
        return torch.stack(images)

    return stack


def batches(source: Streamed, order: Tensor, batch: int):
    """Yield float [0,1] batches (B,C,H,W) for consecutive chunks of `order`, decoded by `source.workers` workers."""
    chunks = [order[s * batch:(s + 1) * batch].tolist() for s in range(math.ceil(len(order) / batch))]
    loader = torch.utils.data.DataLoader(source.dataset, batch_sampler=chunks, num_workers=source.workers,
                                         collate_fn=_collate(source.dataset.origin, source.image_shape),
                                         persistent_workers=False)
    for x in loader:
        yield x.to(source.device).to(torch.float32).div_(255.0)
