"""FKD-style batches: augmentation parameters plus teacher logits per (epoch, batch), drawn-and-recorded or replayed.

SRe2L's `relabel/utils_fkd.py` (VILA-Lab/SRe2L @dc559aa) stores, per epoch and batch, the RandomResizedCrop
coordinates, flip flags, the mix permutation, lambda and CutMix box, and the teacher's logits on the mixed batch;
`validate/train_FKD.py` replays them instead of drawing. This module holds that record (`FkdBatch`), draws one
exactly as `batchaug.augment_batch` would (same generator calls, same order) while keeping the parameters, and
rebuilds the augmented batch from a record.

Must not: read or write files (rd3kit.sources.fkd does), or draw from any generator when replaying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from rd3kit.errors import ConfigError
from rd3kit.protocols.decoupled import BatchAugSpec
from rd3kit.train.batchaug import Augmented, Mix, apply_mix, crop_box, normalize


@dataclass(frozen=True)
class FkdBatch:
    """One stored batch, in SRe2L's order and conventions.

    coords: (B, 4) float, RandomResizedCrop box relative to the image, (top/H, left/W, height/H, width/W).
    flip: (B,) bool. mix_index: (B,) int64 permutation or None. mix_lam: the stored lambda or None.
    mix_box: CutMix box (row1, col1, row2, col2), i.e. `x[:, :, r1:r2, c1:c2]`, or None (Mixup / no mix).
    soft: (B, K) teacher logits on the mixed batch (fp16 in SRe2L's artifacts; used as float32).
    """

    coords: Tensor
    flip: Tensor
    mix_index: Tensor | None
    mix_lam: float | None
    mix_box: tuple[int, int, int, int] | None
    soft: Tensor


class ReplaySource(Protocol):
    """What the training loop needs from stored FKD labels (rd3kit.sources.fkd.FkdReplay implements it)."""

    epochs: int

    def order(self, epoch: int) -> Tensor: ...

    def batch(self, epoch: int, step: int) -> FkdBatch: ...


def check_replayable(spec: BatchAugSpec, where: str) -> None:
    """FKD records hold crop, flip and mix only: ShufflePatches and padded crops cannot be recorded or replayed."""
    if spec.shuffle_patches != 1 or spec.pad_crop is not None or spec.resized_crop is None:
        raise ConfigError(f"{where}: FKD records hold RandomResizedCrop + flip + mix parameters only; the protocol's "
                          f"augmentation needs resized_crop set, shuffle_patches 1 and pad_crop null, got "
                          f"shuffle_patches {spec.shuffle_patches}, pad_crop {spec.pad_crop}, "
                          f"resized_crop {spec.resized_crop}")


def _crop_resize(x: Tensor, boxes: list[tuple[int, int, int, int]], antialias: bool) -> Tensor:
    """Crop (top, left, height, width) per image and resize back, exactly as batchaug.random_resized_crop."""
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    for i, (top, left, ch, cw) in enumerate(boxes):
        patch = x[i:i + 1, :, top:top + ch, left:left + cw]
        if (ch, cw) == (h, w):
            out[i] = patch[0]
        else:
            out[i] = F.interpolate(patch, size=(h, w), mode="bilinear", align_corners=False, antialias=antialias)[0]
    return out


def _flip(x: Tensor, flags: Tensor) -> Tensor:
    return torch.where(flags.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def augment_recorded(x: Tensor, spec: BatchAugSpec, mean: tuple[float, ...], std: tuple[float, ...],
                     gen: torch.Generator) -> tuple[Augmented, FkdBatch]:
    """augment_batch's draws, in its order, keeping the parameters (soft is left empty for the caller to fill)."""
    check_replayable(spec, "recording")
    assert spec.resized_crop is not None  # check_replayable guarantees it
    n, (h, w) = x.shape[0], x.shape[-2:]
    boxes = [crop_box(h, w, spec.resized_crop, gen) for _ in range(n)]
    x = _crop_resize(x, boxes, spec.resized_crop.antialias)
    flags = (torch.rand(n, generator=gen) < spec.flip_p) if spec.flip_p > 0 else torch.zeros(n, dtype=torch.bool)
    clean = normalize(_flip(x, flags), mean, std)
    mixed, mix = apply_mix(clean, spec.mix, gen)
    coords = torch.tensor([(t / h, l / w, ch / h, cw / w) for t, l, ch, cw in boxes], dtype=torch.float32)
    box = None if mix is None or mix.box is None else (mix.box[0], mix.box[2], mix.box[1], mix.box[3])
    record = FkdBatch(coords, flags, None if mix is None else mix.index.cpu(), None if mix is None else mix.lam,
                      box, torch.empty(0))
    return Augmented(mixed, clean, mix), record


def boxes_from_coords(coords: Tensor, h: int, w: int) -> list[tuple[int, int, int, int]]:
    """Relative coords -> integer (top, left, height, width), rounding the box corners as PIL's Image.crop does."""
    out = []
    for top_r, left_r, h_r, w_r in coords.tolist():
        top, left = top_r * h, left_r * w
        t0, l0 = round(top), round(left)
        out.append((t0, l0, round(top + h_r * h) - t0, round(left + w_r * w) - l0))
    return out


def _replay_mix(clean: Tensor, rec: FkdBatch, spec: BatchAugSpec, where: str) -> tuple[Tensor, Mix | None]:
    if rec.mix_index is None:
        return clean, None
    if spec.mix is None:
        raise ConfigError(f"{where}: the record mixes the batch, but the protocol's augmentation.mix is null")
    index = rec.mix_index.to(clean.device)
    if spec.mix.name == "mixup":
        if rec.mix_box is not None or rec.mix_lam is None:
            raise ConfigError(f"{where}: protocol mix is mixup: expected a lambda and no box, got box {rec.mix_box}")
        lam = float(rec.mix_lam)
        return lam * clean + (1.0 - lam) * clean[index], Mix(index, lam, None)
    if rec.mix_box is None:
        raise ConfigError(f"{where}: protocol mix is cutmix, but the record has no CutMix box")
    r1, c1, r2, c2 = rec.mix_box
    out = clean.clone()
    out[:, :, r1:r2, c1:c2] = clean[index, :, r1:r2, c1:c2]
    h, w = clean.shape[-2:]
    lam = 1.0 - (r2 - r1) * (c2 - c1) / (h * w)  # from the box, as batchaug.cutmix: hard labels match pixels
    return out, Mix(index, lam, (r1, r2, c1, c2))


def replay_augment(x: Tensor, rec: FkdBatch, spec: BatchAugSpec, mean: tuple[float, ...], std: tuple[float, ...],
                   where: str) -> Augmented:
    """Rebuild the augmented batch from a record: crop+resize, flip, normalise, mix; no random draw at all."""
    check_replayable(spec, where)
    assert spec.resized_crop is not None
    n, (h, w) = x.shape[0], x.shape[-2:]
    if rec.coords.shape != (n, 4) or rec.flip.shape != (n,):
        raise ConfigError(f"{where}: record holds {rec.coords.shape[0]} images, the batch has {n}")
    if spec.flip_p == 0 and bool(rec.flip.any()):
        raise ConfigError(f"{where}: the record flips images, but the protocol's flip_p is 0")
    x = _crop_resize(x, boxes_from_coords(rec.coords, h, w), spec.resized_crop.antialias)
    clean = normalize(_flip(x, rec.flip), mean, std)
    mixed, mix = _replay_mix(clean, rec, spec, where)
    return Augmented(mixed, clean, mix)
