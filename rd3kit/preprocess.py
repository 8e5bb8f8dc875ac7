"""Bring real splits and distilled sets into the protocol's input space (mean/std or ZCA).

Must not: guess a set's space (it is stated by the caller or the catalogue) or mutate its inputs.
"""

from __future__ import annotations

import torch

from rd3kit.errors import DataError
from rd3kit.protocols.spec import DataSpec
from rd3kit.sources.formats import DistilledSet
from rd3kit.sources.realdata import RealSplit


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N,C,H,W) -> float32 in [0,1], as torchvision's ToTensor does."""
    return images.to(torch.float32).div_(255.0)


def normalize(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


class ZCA:
    """ZCA whitening fitted as MTT does: kornia ZCAWhitening(eps, compute_inv=True) on the full train set."""

    def __init__(self, train: RealSplit, eps: float):
        from kornia.enhance import ZCAWhitening

        self.eps = eps
        self.fitted_on = train.sha256
        self._zca = ZCAWhitening(eps=eps, compute_inv=True).fit(to_unit(train.images))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._zca(x, include_fit=False)


def check_split(split: RealSplit, spec: DataSpec) -> None:
    """The split must match the protocol's dataset: channels, size, label range."""
    _, c, h, w = split.images.shape
    if c != spec.channels or (h, w) != tuple(spec.image_size):
        raise DataError(
            f"{split.origin}: images are {c}x{h}x{w}, protocol {spec.name} expects "
            f"{spec.channels}x{spec.image_size[0]}x{spec.image_size[1]}"
        )
    if int(split.labels.min()) < 0 or int(split.labels.max()) >= spec.num_classes:
        raise DataError(f"{split.origin}: labels outside 0..{spec.num_classes - 1}")


def prepare_test(split: RealSplit, spec: DataSpec, zca: ZCA | None) -> torch.Tensor:
    """Test images in the protocol's space: ZCA when the protocol has it, else mean/std."""
    check_split(split, spec)
    x = to_unit(split.images)
    return zca(x) if zca is not None else normalize(x, spec)


def prepare_set(dset: DistilledSet, spec: DataSpec, zca: ZCA | None) -> torch.Tensor:
    """Distilled images in the protocol's space; refuses a space the protocol cannot take."""
    if dset.space == "zca" and zca is None:
        raise DataError(f"{dset.origin}: the set is in ZCA space but protocol data.zca is null; use a -zca protocol")
    if dset.space == "normalized" and zca is not None:
        raise DataError(
            f"{dset.origin}: the set is mean/std-normalised but the protocol whitens with ZCA; "
            "use the protocol without ZCA, or give the set in raw01 space"
        )
    if dset.space == "raw01":
        return zca(dset.images) if zca is not None else normalize(dset.images, spec)
    return dset.images
