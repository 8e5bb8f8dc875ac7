"""Real train/test splits: CIFAR-style .npz files with pinned sha256, torchvision folders, TinyImageNet.

TinyImageNet (official folder, ImageFolder, HF parquet) is read by `tinyimagenet.py`; `load_split` routes to it.

Must not: download unless the caller passes download (only the --download command line flag does), or normalise:
it returns uint8 images; preprocessing belongs to the protocol.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rd3kit.errors import DataError
from rd3kit.sources.formats import sha256_file

# Pinned copies this project knows (shared/data/README.md). A file with another hash still loads, but its
# provenance is recorded as unpinned.
KNOWN_NPZ = {
    "9ce2c77d9944a193d35d9821ec02ec17ac2e8022207950b08bdd0a73aefa6668": ("cifar10", "test", "CIFAR-10 test (rebuilt)"),
    "b26406f7573e728d0d500aed41229882f1ab94f6cfdb3b66f54a8c6ba67b6084": ("cifar10", "train", "CIFAR-10 train (rebuilt)"),
}
_TV_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "svhn": "SVHN", "cifar10": "CIFAR10",
             "cifar100": "CIFAR100"}


@dataclass(frozen=True)
class RealSplit:
    """uint8 images (N,C,H,W) and int64 labels of one real split, with where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    dataset: str
    split: str
    origin: str
    sha256: str
    label: str

    def describe(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "origin": self.origin, "sha256": self.sha256,
                "label": self.label, "n": int(self.labels.numel())}


def from_npz(path: Path, dataset: str, split: str) -> RealSplit:
    """Read a CIFAR-style npz (`x` uint8 NHWC, `y` int64); check it is the dataset and split asked for."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a .npz with keys x (uint8 NHWC) and y)")
    digest = sha256_file(path)
    known = KNOWN_NPZ.get(digest)
    if known and known[:2] != (dataset, split):
        raise DataError(f"{path}: this file is the pinned {known[2]}, but {dataset} {split} was asked for")
    with np.load(path, allow_pickle=False) as npz:
        missing = {"x", "y"} - set(npz.files)
        if missing:
            raise DataError(f"{path}: missing key(s) {sorted(missing)}; found {sorted(npz.files)}")
        x, y = npz["x"], npz["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{path}: key x must be uint8 (N,H,W,C) with C in (1, 3), got {x.dtype} {x.shape}")
    if y.shape != (x.shape[0],):
        raise DataError(f"{path}: key y must have shape ({x.shape[0]},), got {y.shape}")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    label = known[2] if known else f"{dataset} {split} from {path.name} (unpinned sha256)"
    return RealSplit(images, torch.from_numpy(y.astype(np.int64)), dataset, split, str(path), digest, label)


def from_torchvision(root: Path, dataset: str, split: str, download: bool = False) -> RealSplit:
    """Read a torchvision dataset folder under `root`; downloads only when `download` is True."""
    import torchvision.datasets as tvd

    if dataset not in _TV_NAMES:
        raise DataError(f"{dataset} has no torchvision loader; pass a .npz or an ImageFolder instead")
    cls = getattr(tvd, _TV_NAMES[dataset])
    kwargs = {"split": split} if dataset == "svhn" else {"train": split == "train"}
    try:
        ds = cls(str(root), download=download, **kwargs)
    except RuntimeError as exc:
        raise DataError(
            f"{root}: no {_TV_NAMES[dataset]} {split} files there ({exc}). Put the files under {root} or add "
            "--download (needs the network)."
        ) from None
    except (AssertionError, ValueError, TypeError, EOFError, OSError, pickle.UnpicklingError) as exc:
        # torchvision's readers assert on a malformed idx header and unpickle CIFAR batches without checks
        raise DataError(f"{root}: the {_TV_NAMES[dataset]} {split} files there are unreadable "
                        f"({type(exc).__name__}: {exc}); replace them with intact copies") from None
    data = ds.data if not isinstance(ds.data, torch.Tensor) else ds.data.numpy()
    x = np.asarray(data)
    if x.ndim == 3:  # MNIST-like: N,H,W
        x = x[:, None]
    elif x.shape[-1] == 3:  # CIFAR: N,H,W,C
        x = x.transpose(0, 3, 1, 2)
    targets = getattr(ds, "targets", None)
    y = np.asarray(targets if targets is not None else ds.labels, dtype=np.int64)
    digest = tensor_digest(x, y)
    return RealSplit(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), dataset, split,
                     f"torchvision:{_TV_NAMES[dataset]}@{root}", digest, f"{_TV_NAMES[dataset]} {split} (torchvision)")


def tensor_digest(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 over the decoded arrays' bytes (images, then labels): the identity of data read from many files."""
    import hashlib

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def load_split(dataset: str, split: str, source: Path | None, data_root: Path | None, download: bool = False) -> RealSplit:
    """Resolve a real split: the embedded digits, an explicit file (`source`), or torchvision's folders."""
    if dataset == "digits":
        from rd3kit.embedded import digits_split

        return digits_split(split)
    if source is not None and source.suffix == ".npz":
        return from_npz(source, dataset, split)
    if dataset == "tinyimagenet":
        return _tinyimagenet(split, source, data_root)
    if source is not None:
        raise DataError(f"{source}: unsupported real-data file; expected a CIFAR-style .npz")
    if data_root is not None:
        return from_torchvision(data_root, dataset, split, download)
    raise DataError(
        f"no {dataset} {split} data given: pass --test FILE.npz (or --train) or --data-root DIR "
        "holding torchvision's folders (add --download to fetch them)"
    )


def _tinyimagenet(split: str, source: Path | None, data_root: Path | None) -> RealSplit:
    """TinyImageNet from --test/--train (folder or parquet) or DATA_ROOT/tiny-imagenet-200; never downloaded."""
    from rd3kit.sources.tinyimagenet import load_tinyimagenet

    if source is None and data_root is None:
        raise DataError(f"no tinyimagenet {split} data given: pass --test/--train (tiny-imagenet-200/, an "
                        "ImageFolder or .parquet shards) or --data-root DIR holding tiny-imagenet-200/; "
                        "rd3kit does not download it")
    if source is None:
        source = data_root / "tiny-imagenet-200" if (data_root / "tiny-imagenet-200").is_dir() else data_root
    return load_tinyimagenet(source, split)
