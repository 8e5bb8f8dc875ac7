"""Format adapters for what authors publish (HF parquet, ImageFolders plain or zipped, safetensors) and `load_any`.

Must not: touch the network, or guess a normalisation space for tensors (image files are [0,1] pixels by
nature: space "raw01"; a safetensors file states its space in its metadata or the caller does).

Class-folder rules for ImageFolders (the label of an image is decided by its parent folder's name):
  * numeric names, one style per set: `new007`, `class007`, `00007`, `7` -> label 7 (the number itself, not
    the folder's rank, so a missing class never shifts the others);
  * any other names (e.g. wnids `n01440764`) -> the position in the `classes` list the caller provides; rd3kit
    never sorts names on its own (pass `sorted(names)` to get torchvision's rule explicitly).
  Images are ordered by (label, file name); a zip's single wrapping folder is ignored.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from rd3kit.errors import ConfigError, DataError
from rd3kit.sources.formats import SPACES, DistilledSet, load_local, sha256_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LABEL_COLUMNS = ("label", "class_id", "labels", "class", "target")
FORMATS = ("dc", "pt", "parquet", "imagefolder", "imagefolder-zip", "safetensors")
_NUMERIC = re.compile(r"(new|class|)(\d+)")


def load_any(path: Path, space: str | None = None, select: int | None = None, *, fmt: str | None = None,
             idc_factor: int | None = None, classes: list[str] | None = None) -> DistilledSet:
    """Load a distilled set from a local file or folder, picking the adapter by `fmt` or by suffix/contents."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found")
    fmt = fmt or detect_format(path)
    if fmt in ("dc", "pt"):
        if space is None:
            raise ConfigError(f"{path}: a .pt file does not say its space; pass --space ({', '.join(SPACES)})")
        return load_local([path], space, select, idc_factor)  # type: ignore[arg-type]
    if fmt == "safetensors":
        return load_safetensors(_single(path, ".safetensors"), space)
    if space not in (None, "raw01"):
        raise ConfigError(f"{path}: image files hold [0,1] pixels (space raw01), not {space!r}")
    if fmt == "parquet":
        return load_parquet(path)
    if fmt in ("imagefolder", "imagefolder-zip"):
        return load_imagefolder(path, classes)
    raise ConfigError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def detect_format(path: Path) -> str:
    """Pick an adapter from the suffix, or from a folder's contents."""
    by_suffix = {".pt": "pt", ".pth": "pt", ".safetensors": "safetensors", ".parquet": "parquet", ".zip": "imagefolder-zip"}
    if path.is_file():
        if path.suffix.lower() in by_suffix:
            return by_suffix[path.suffix.lower()]
        raise DataError(f"{path}: unknown file type {path.suffix!r}; expected .pt, .safetensors, .parquet or .zip")
    if (path / "images_best.pt").exists():
        return "pt"
    for suffix in (".parquet", ".safetensors"):
        if any(path.rglob(f"*{suffix}")):
            return by_suffix[suffix]
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*")):
        return "imagefolder"
    raise DataError(f"{path}: folder holds no .parquet, .safetensors, images_best.pt or class folders of images")


def _single(path: Path, suffix: str) -> Path:
    if path.is_file():
        return path
    found = sorted(path.rglob(f"*{suffix}"))
    if len(found) != 1:
        raise DataError(f"{path}: expected exactly one {suffix} file, found {len(found)}")
    return found[0]


# -- safetensors --------------------------------------------------------------------------------------
def load_safetensors(path: Path, space: str | None) -> DistilledSet:
    """`images` (N,C,H,W), `labels` (N,) or (N,K), optional scalar `lr`; metadata `space` if written by rd3kit."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta, keys = handle.metadata() or {}, set(handle.keys())
            if not {"images", "labels"} <= keys:
                raise DataError(f"{path}: expected tensors 'images' and 'labels' (optional 'lr'), found {sorted(keys)}")
            tensors = {k: handle.get_tensor(k) for k in keys & {"images", "labels", "lr"}}
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for corrupt headers
        raise DataError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    stated = meta.get("space")
    if stated and space and stated != space:
        raise ConfigError(f"{path}: the file states space {stated!r}, but {space!r} was given")
    space = space or stated
    if space not in SPACES:
        raise ConfigError(f"{path}: the file does not state its space; pass --space ({', '.join(SPACES)})")
    images, labels = tensors["images"].to(torch.float32).contiguous(), tensors["labels"]
    if images.ndim != 4:
        raise DataError(f"{path}: 'images' should be (N,C,H,W), got shape {tuple(images.shape)}")
    labels = labels.to(torch.int64) if labels.ndim == 1 else labels.to(torch.float32)
    lr = float(tensors["lr"].reshape(-1)[0]) if "lr" in tensors else None
    return DistilledSet(images, labels, space, lr, {str(path): sha256_file(path)}, str(path))  # type: ignore[arg-type]


def write_safetensors(dset: DistilledSet, path: Path) -> None:
    """Write `images`, `labels` (and `lr`) with the space in the header metadata."""
    from safetensors.torch import save_file

    tensors = {"images": dset.images.contiguous(), "labels": dset.labels.contiguous()}
    if dset.lr is not None:
        tensors["lr"] = torch.tensor([dset.lr], dtype=torch.float32)
    save_file(tensors, str(path), metadata={"space": dset.space, "format": "rd3kit.set/v1"})


# -- parquet --------------------------------------------------------------------------------------------
def load_parquet(path: Path) -> DistilledSet:
    """HF parquet shards with an `image` column (struct bytes/path or binary) and a label/class_id column.

    A folder's shards are read in name order; when some names start with `train`, only those are read.
    """
    shards = [path] if path.is_file() else sorted(path.rglob("*.parquet"), key=lambda p: p.as_posix())
    train = [p for p in shards if p.name.startswith("train")]
    shards = train or shards
    images, labels = [], []
    for shard in shards:
        cells, shard_labels = read_parquet_columns(shard)
        for i, cell in enumerate(cells):
            images.append(decode_image(cell["bytes"] if isinstance(cell, dict) else cell, f"{shard} row {i}"))
        labels += shard_labels
    files = {str(s): sha256_file(s) for s in shards}
    return _as_set(images, labels, files, str(path))


def read_parquet_columns(shard: Path) -> tuple[list, list]:
    """One shard's `image` cells and labels (from the first of LABEL_COLUMNS present), as Python lists."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(shard)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError for corrupt files
        raise DataError(f"{shard}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    label_col = next((c for c in LABEL_COLUMNS if c in table.column_names), None)
    if "image" not in table.column_names or label_col is None:
        raise DataError(f"{shard}: expected columns 'image' and one of {LABEL_COLUMNS}, found {table.column_names}")
    return table.column("image").to_pylist(), table.column(label_col).to_pylist()


def write_parquet(dset: DistilledSet, path: Path) -> None:
    """Write a raw01, hard-label set as HF parquet via `datasets` (PNG images, uint8-rounded: lossy)."""
    from datasets import ClassLabel, Dataset, Features, Image

    if dset.space != "raw01" or dset.soft:
        raise ConfigError("parquet holds images and hard labels: only a raw01 set with hard labels fits; "
                          "use --format safetensors for normalized/zca spaces or soft labels")
    if float(dset.images.min()) < 0 or float(dset.images.max()) > 1:
        raise ConfigError("raw01 images must lie in [0,1] to be stored as PNG; use --format safetensors")
    pixels = (dset.images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    pngs = [{"bytes": _png(img), "path": None} for img in pixels]
    num_classes = int(dset.labels.max()) + 1
    features = Features({"image": Image(), "label": ClassLabel(num_classes=num_classes)})
    Dataset.from_dict({"image": pngs, "label": dset.labels.tolist()}, features=features).to_parquet(str(path))


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buf, format="PNG")
    return buf.getvalue()


# -- ImageFolders -----------------------------------------------------------------------------------
def load_imagefolder(path: Path, classes: list[str] | None = None) -> DistilledSet:
    """Class folders of JPEG/PNG images, as a folder or a .zip (see the module docstring for label rules)."""
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if is_image(n)]
                index = class_index(path, {_class_of(n) for n in names}, classes)
                order = sorted(names, key=lambda n: (index[_class_of(n)], n))
                images = [decode_image(archive.read(n), f"{path}:{n}") for n in order]
        except zipfile.BadZipFile:
            raise DataError(f"{path}: not a valid zip file (truncated download?)") from None
        files = {str(path): sha256_file(path)}
    else:
        found = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and is_image(p.name)]
        index = class_index(path, {_class_of(n) for n in found}, classes)
        order = sorted(found, key=lambda n: (index[_class_of(n)], n))
        images = [decode_image((path / n).read_bytes(), str(path / n)) for n in order]
        files = {f"{path}/**": _manifest_digest(path, order)}
    if not images:
        raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) inside class folders")
    return _as_set(images, [index[_class_of(n)] for n in order], files, str(path))


def class_index(where: Path, names: set[str], classes: list[str] | None) -> dict[str, int]:
    """Map class-folder names to labels: numeric styles by their number, other names by the `classes` list."""
    if "" in names:
        raise DataError(f"{where}: images must sit inside class folders (found an image at the top level)")
    if classes is not None:
        unknown = sorted(names - set(classes))
        if unknown:
            raise DataError(f"{where}: class folders {unknown[:5]} are not in the class list given ({len(classes)} names)")
        return {n: classes.index(n) for n in names}
    matches = {n: _NUMERIC.fullmatch(n) for n in names}
    if not all(matches.values()):
        odd = sorted(n for n, m in matches.items() if not m)[:3]
        raise DataError(f"{where}: class folders {odd} are names, not numbers; pass the class list (e.g. the "
                        "wnids in label order) so that labels are explicit; rd3kit does not sort names itself")
    prefixes = {m.group(1) for m in matches.values()}
    if len(prefixes) > 1:
        raise DataError(f"{where}: mixed class-folder prefixes {sorted(prefixes)}; use one style: new000, class000, "
                        "00000 or 0")
    index = {n: int(m.group(2)) for n, m in matches.items()}
    if len(set(index.values())) != len(index):
        raise DataError(f"{where}: two class folders map to the same label (e.g. '7' and '007')")
    return index


def is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return (name.lower().endswith(IMAGE_SUFFIXES) and not base.startswith(".")
            and not name.startswith("__MACOSX/"))


def _class_of(name: str) -> str:
    parts = name.split("/")
    return parts[-2] if len(parts) > 1 else ""


def _manifest_digest(root: Path, rels: list[str]) -> str:
    """One sha256 over (relative path, file sha256) pairs: a folder's identity without listing every file."""
    digest = hashlib.sha256()
    for rel in sorted(rels):
        digest.update(f"{rel}\0{sha256_file(root / rel)}\n".encode())
    return digest.hexdigest()


def decode_image(data: bytes | None, where: str, mode: str | None = None) -> np.ndarray:
    """Decode image bytes to uint8 (H,W) or (H,W,3); `mode` forces a PIL mode (e.g. "RGB"), else grey stays grey."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise DataError(f"{where}: empty image bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert(mode or ("L" if img.mode in ("L", "1", "I;16") else "RGB")))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{where}: not a decodable image ({exc})") from None


def _as_set(images: list[np.ndarray], labels: list, files: dict[str, str], origin: str) -> DistilledSet:
    if not images:
        raise DataError(f"{origin}: holds no images")
    shapes = {img.shape for img in images}
    if len(shapes) != 1:
        raise DataError(f"{origin}: images differ in size {sorted(shapes)[:3]}; a set needs one size")
    stack = np.stack([img[..., None] if img.ndim == 2 else img for img in images])
    x = torch.from_numpy(stack).permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()
    y = torch.tensor(labels, dtype=torch.int64)
    return DistilledSet(x, y, "raw01", None, files, origin)
