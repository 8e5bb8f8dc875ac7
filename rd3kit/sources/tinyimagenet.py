"""TinyImageNet real splits from the official `tiny-imagenet-200/` folder, a plain ImageFolder, or HF parquet.

Must not: download (rd3kit fetches no TinyImageNet archive), normalise (it returns uint8 (N,3,64,64)), or
pick a class order without recording it (the order is part of the split's origin string).

The test split of TinyImageNet is its val split: the official test images carry no labels. Splits "test" and
"val" both read the val images; the RealSplit keeps the name asked for and its origin says "val".

Class order (which wnid is label 0) moves accuracy from chance to real, so it is explicit:
  * "sorted": wnids in sorted order, torchvision's ImageFolder rule. MTT (`utils.py` @0c424937) and DATM
    (`utils/utils_baseline.py` @b1d48238) `get_dataset` read Tiny with `datasets.ImageFolder(train)` and
    `ImageFolder(val/images)` (val images moved into wnid folders), so they label classes this way, and
    zh-plus/tiny-imagenet's ClassLabel names are sorted wnids too. Default.
  * "wnids": the line order of the official `wnids.txt`.
A plain ImageFolder is always read with the sorted rule (it has no wnids.txt to follow); parquet labels are
used as stored. Images are ordered by (label, file name) in every layout, so one set of images gives one
digest whichever layout it came in. The digest is `realdata.tensor_digest` over the decoded uint8 arrays
and int64 labels, not over the files (a parquet re-encoding of the same pixels hashes the same).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from rd3kit.errors import ConfigError, DataError
from rd3kit.sources.images import decode_image, is_image, read_parquet_columns
from rd3kit.sources.realdata import RealSplit, tensor_digest

NUM_CLASSES = 200
IMAGE_SHAPE = (64, 64, 3)
CLASS_ORDERS = ("sorted", "wnids")
_VAL_SHARDS = ("valid", "val")  # zh-plus/tiny-imagenet names its val split "valid"


def load_tinyimagenet(source: Path, split: str, *, num_classes: int = NUM_CLASSES, class_order: str = "sorted",
                      workers: int | None = None) -> RealSplit:
    """Read one TinyImageNet split from a folder (official layout or ImageFolder), a .parquet file or shards.

    Args:
        source: `tiny-imagenet-200/` (or a folder holding it), an ImageFolder (class folders, or `train/` and
            `val/` of class folders), a .parquet file, or a folder of .parquet shards.
        split: "train", or "test"/"val" (both read the val images).
        num_classes: classes the split must have (200 for TinyImageNet; tests pass fewer).
        class_order: "sorted" or "wnids"; see the module docstring. Only the official layout can use "wnids".
        workers: threads decoding JPEGs (default: up to 8, one per CPU).
    """
    if split not in ("train", "val", "test"):
        raise ConfigError(f"TinyImageNet split {split!r}: expected train, val or test (test reads the val images)")
    if class_order not in CLASS_ORDERS:
        raise ConfigError(f"class_order {class_order!r}: expected one of {CLASS_ORDERS}")
    part = "train" if split == "train" else "val"
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: not found (expected tiny-imagenet-200/, an ImageFolder or .parquet files); "
                        "rd3kit does not download TinyImageNet")
    workers = workers or min(8, os.cpu_count() or 1)
    official = _official_root(source)
    if official is not None:
        x, y, how = _from_official(official, part, num_classes, class_order, workers)
    elif source.suffix == ".parquet" or (source.is_dir() and any(source.rglob("*.parquet"))):
        if class_order != "sorted":
            raise ConfigError(f"{source}: parquet labels are used as stored (zh-plus: sorted wnids); "
                              "class_order 'wnids' applies only to the official folder")
        x, y, how = _from_parquet(source, part, num_classes, workers)
    else:
        if class_order != "sorted":
            raise ConfigError(f"{source}: a plain ImageFolder has no wnids.txt; only class_order 'sorted' applies")
        folder = source / part if (source / part).is_dir() else source
        x, y, how = _from_imagefolder(folder, num_classes, workers)
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    origin = f"tinyimagenet:{part}@{source} [{how}]"
    label = f"TinyImageNet {part}" + (" (the test split)" if split == "test" else "") + f" from {how}"
    return RealSplit(images, torch.from_numpy(y), "tinyimagenet", split, origin, tensor_digest(x, y), label)


def _official_root(source: Path) -> Path | None:
    for root in (source, source / "tiny-imagenet-200"):
        if (root / "wnids.txt").is_file():
            return root
    return None


# -- official tiny-imagenet-200/ ------------------------------------------------------------------------
def _from_official(root: Path, part: str, num_classes: int, class_order: str, workers: int):
    wnids = read_wnids(root / "wnids.txt", num_classes)
    order = sorted(wnids) if class_order == "sorted" else wnids
    index = {w: i for i, w in enumerate(order)}
    how = f"official folder, classes: {class_order} wnids"
    if part == "train":
        files = _class_files(root / "train", index)
    else:
        images_dir = root / "val" / "images"
        if images_dir.is_dir() and not any(is_image(p.name) for p in images_dir.iterdir() if p.is_file()):
            # val images already moved into wnid folders (the layout MTT/DATM read with ImageFolder)
            files = _class_files(images_dir, index)
        else:
            files = _val_files(root / "val", index)
    x = _decode_files([f for f, _ in files], workers)
    return x, np.array([label for _, label in files], dtype=np.int64), how


def read_wnids(path: Path, num_classes: int = NUM_CLASSES) -> list[str]:
    """The wnids of `wnids.txt` in line order; exactly `num_classes` distinct ones."""
    if not path.is_file():
        raise DataError(f"{path}: not found (tiny-imagenet-200/ needs wnids.txt, one wnid per line)")
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        dupes = sorted({w for w in wnids if wnids.count(w) > 1})
        raise DataError(f"{path}: duplicate wnid(s) {dupes[:5]}")
    if len(wnids) != num_classes:
        raise DataError(f"{path}: expected {num_classes} wnids (classes), got {len(wnids)}")
    return wnids


def _class_files(folder: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    """Images under folder/<class>/ (any depth, e.g. train/<wnid>/images/), ordered by (label, file name)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not found (expected one folder per class)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise DataError(f"{folder}: class folder(s) {unknown[:5]} are not in the class list ({len(index)} wnids)")
    missing = sorted(set(index) - set(classes))
    if missing:
        raise DataError(f"{folder}: expected {len(index)} class folders, got {len(classes)}; missing {missing[:5]}")
    found = [(p, index[c]) for c in classes for p in (folder / c).rglob("*") if p.is_file() and is_image(p.name)]
    if not found:
        raise DataError(f"{folder}: no images inside the class folders")
    return sorted(found, key=lambda item: (item[1], item[0].name))


def _val_files(val: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    """val/images/*.JPEG labelled by val/val_annotations.txt (file <TAB> wnid <TAB> box), every image once."""
    notes = val / "val_annotations.txt"
    if not notes.is_file():
        raise DataError(f"{notes}: not found; the val images of tiny-imagenet-200 are labelled only by this file")
    labels: dict[str, int] = {}
    for lineno, line in enumerate(notes.read_text().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2:
            raise DataError(f"{notes}:{lineno}: expected 'file<TAB>wnid<TAB>...', got {line[:80]!r}")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise DataError(f"{notes}:{lineno}: wnid {wnid!r} is not in wnids.txt")
        if name in labels:
            raise DataError(f"{notes}:{lineno}: {name} is annotated twice")
        labels[name] = index[wnid]
    images = val / "images"
    present = {p.name for p in images.iterdir() if p.is_file() and is_image(p.name)} if images.is_dir() else set()
    if set(labels) != present:
        absent, extra = sorted(set(labels) - present), sorted(present - set(labels))
        raise DataError(f"{images}: expected the {len(labels)} images named in {notes.name}, got {len(present)}; "
                        f"missing {absent[:3]}, not annotated {extra[:3]}")
    return sorted(((images / n, lab) for n, lab in labels.items()), key=lambda item: (item[1], item[0].name))


# -- plain ImageFolder ---------------------------------------------------------------------------------
def _from_imagefolder(folder: Path, num_classes: int, workers: int):
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) != num_classes:
        raise DataError(f"{folder}: expected {num_classes} class folders, got {len(classes)}")
    files = _class_files(folder, {c: i for i, c in enumerate(classes)})
    x = _decode_files([f for f, _ in files], workers)
    return x, np.array([label for _, label in files], dtype=np.int64), "ImageFolder, classes: sorted folder names"


# -- HF parquet (zh-plus/tiny-imagenet) ----------------------------------------------------------------
def _from_parquet(source: Path, part: str, num_classes: int, workers: int):
    shards = [source] if source.is_file() else _shards(source, part)
    cells, labels, names = [], [], []
    for shard in shards:
        image_col, label_col = read_parquet_columns(shard)
        for row, cell in enumerate(image_col):
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            path = cell.get("path") if isinstance(cell, dict) else None
            cells.append((data, f"{shard} row {row}"))
            names.append(f"{Path(path).name if path else ''}\0{shard.name}\0{row:09d}")
        labels += label_col
    y = np.array(labels, dtype=np.int64)
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        raise DataError(f"{source}: labels must lie in 0..{num_classes - 1}; got {int(y[bad[0]])} (row {int(bad[0])})")
    if len(np.unique(y)) != num_classes:
        raise DataError(f"{source}: expected {num_classes} classes in the {part} split, got {len(np.unique(y))}")
    order = sorted(range(len(y)), key=lambda i: (int(y[i]), names[i]))
    x = _decode_all([cells[i] for i in order], workers)
    return x, y[order], "HF parquet, classes: labels as stored"


def _shards(folder: Path, part: str) -> list[Path]:
    """The folder's shards for `part`: file name `train-*`/`valid-*` or a parent folder named so (refs/convert)."""
    prefixes = ("train",) if part == "train" else _VAL_SHARDS
    found = sorted(folder.rglob("*.parquet"), key=lambda p: p.as_posix())

    def belongs(path: Path) -> bool:
        stem = path.name.split("-")[0].split(".")[0].split("_")[0]
        return stem in prefixes or any(d in prefixes for d in path.relative_to(folder).parts[:-1])

    chosen = [p for p in found if belongs(p)]
    if not chosen:
        names = [p.relative_to(folder).as_posix() for p in found][:5]
        raise DataError(f"{folder}: no parquet shard for the {part} split (names starting with {'/'.join(prefixes)});"
                        f" found {names}")
    return chosen


# -- decoding ------------------------------------------------------------------------------------------
def _decode_files(paths: list[Path], workers: int) -> np.ndarray:
    return _decode_all([(p, str(p)) for p in paths], workers)


def _decode_all(items: list[tuple[bytes | Path | None, str]], workers: int) -> np.ndarray:
    """Decode (bytes or path, where) pairs on a thread pool (PIL releases the GIL while decoding), in order."""
    if not items:
        raise DataError("no images to decode")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.stack(list(pool.map(_decode_one, items)))


def _decode_one(item: tuple[bytes | Path | None, str]) -> np.ndarray:
    data, where = item
    # Grey and CMYK JPEGs exist in TinyImageNet; convert("RGB") replicates grey into 3 channels, exactly what
    # torchvision's ImageFolder default loader (PIL `img.convert("RGB")`) feeds MTT/DATM.
    pixels = decode_image(data.read_bytes() if isinstance(data, Path) else data, where, mode="RGB")
    if pixels.shape != IMAGE_SHAPE:
        raise DataError(f"{where}: expected a {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} RGB image (H,W,C) {IMAGE_SHAPE}, "
                        f"got {pixels.shape}")
    return pixels
