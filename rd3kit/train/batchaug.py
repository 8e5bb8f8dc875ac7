"""Batch augmentations of the decoupled family: ShufflePatches, RandomResizedCrop, padded crop, flip, CutMix, Mixup.

Must not: mutate its inputs, or draw from any RNG but the CPU `torch.Generator` passed in (no global torch,
numpy or python state). Images enter in [0,1] (N,C,H,W); normalisation happens before mixing, as in SRe2L/RDED
(mixing is linear per pixel, so the order does not change the pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rd3kit.protocols.decoupled import BatchAugSpec, CropSpec, MixSpec


@dataclass(frozen=True)
class Mix:
    """One batch mix: image i is blended with image `index[i]`; `lam` is the share of image i's own pixels."""

    index: Tensor
    lam: float
    box: tuple[int, int, int, int] | None  # CutMix (y1, y2, x1, x2); None for Mixup


@dataclass(frozen=True)
class Augmented:
    """A normalised augmented batch, the same batch before mixing, and the mix applied (or None)."""

    images: Tensor
    clean: Tensor
    mix: Mix | None


def _randint(high: int, gen: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=gen))


def _uniform(low: float, high: float, gen: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand(1, generator=gen, dtype=torch.float64))


def beta_sample(a: float, gen: torch.Generator) -> float:
    """One draw of Beta(a, a); torch's Beta takes no generator, so a numpy Generator is seeded from `gen`."""
    seed = int(torch.randint(2**62, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(a, a))


def _strip_order(size: int, factor: int, gen: torch.Generator) -> Tensor:
    """Pixel indices of `factor` strips along one axis in a random order (the last strip keeps any remainder)."""
    step = size // factor
    bounds = [(k * step, size if k == factor - 1 else (k + 1) * step) for k in range(factor)]
    order = torch.randperm(factor, generator=gen).tolist()
    return torch.cat([torch.arange(*bounds[k]) for k in order])


def shuffle_patches(x: Tensor, factor: int, gen: torch.Generator) -> Tensor:
    """RDED's ShufflePatches, per image: permute the column strips, then the row strips (factor x factor grid)."""
    if factor == 1:
        return x
    out = torch.empty_like(x)
    h, w = x.shape[-2:]
    for i in range(x.shape[0]):
        cols = _strip_order(w, factor, gen).to(x.device)
        rows = _strip_order(h, factor, gen).to(x.device)
        out[i] = x[i][:, :, cols][:, rows, :]
    return out


def crop_box(h: int, w: int, spec: CropSpec, gen: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params with `gen`: (top, left, height, width)."""
    area = h * w
    log_lo, log_hi = math.log(spec.ratio[0]), math.log(spec.ratio[1])
    for _ in range(10):  # torchvision's number of attempts before the centre-crop fallback
        target = area * _uniform(spec.scale[0], spec.scale[1], gen)
        aspect = math.exp(_uniform(log_lo, log_hi, gen))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return _randint(h - ch + 1, gen), _randint(w - cw + 1, gen), ch, cw
    ratio = w / h
    if ratio < spec.ratio[0]:
        cw, ch = w, int(round(w / spec.ratio[0]))
    elif ratio > spec.ratio[1]:
        ch, cw = h, int(round(h * spec.ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def random_resized_crop(x: Tensor, spec: CropSpec, gen: torch.Generator) -> Tensor:
    """Per image: crop a box from `crop_box`, resize it (bilinear) back to the input size."""
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        top, left, ch, cw = crop_box(h, w, spec, gen)
        patch = x[i:i + 1, :, top:top + ch, left:left + cw]
        if (ch, cw) == (h, w):
            out[i] = patch[0]  # full-image crop: resizing to the same size is the identity
        else:
            out[i] = F.interpolate(patch, size=(h, w), mode="bilinear", align_corners=False,
                                   antialias=spec.antialias)[0]
    return out


def pad_crop(x: Tensor, pad: int, gen: torch.Generator) -> Tensor:
    """torchvision RandomCrop(size, padding=pad): zero-pad, then a random size x size window per image."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(2 * pad + 1, (x.shape[0], 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def hflip(x: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """Flip each image horizontally with probability p."""
    if p == 0:
        return x
    flip = (torch.rand(x.shape[0], generator=gen) < p).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def cutmix_box(h: int, w: int, lam: float, gen: torch.Generator) -> tuple[int, int, int, int]:
    """CutMix's box: sides sqrt(1-lam)*(H, W) at a uniform centre, clipped to the image: (y1, y2, x1, x2)."""
    rat = math.sqrt(1.0 - lam)
    ch, cw = int(h * rat), int(w * rat)
    cy, cx = _randint(h, gen), _randint(w, gen)
    return (min(max(cy - ch // 2, 0), h), min(max(cy + ch // 2, 0), h),
            min(max(cx - cw // 2, 0), w), min(max(cx + cw // 2, 0), w))


def cutmix(x: Tensor, beta: float, gen: torch.Generator) -> tuple[Tensor, Mix]:
    """Paste one box from a permuted batch; `lam` is recomputed from the clipped box so labels match pixels."""
    h, w = x.shape[-2:]
    lam0 = beta_sample(beta, gen)
    index = torch.randperm(x.shape[0], generator=gen).to(x.device)
    y1, y2, x1, x2 = cutmix_box(h, w, lam0, gen)
    out = x.clone()
    out[:, :, y1:y2, x1:x2] = x[index, :, y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
    return out, Mix(index, lam, (y1, y2, x1, x2))


def mixup(x: Tensor, alpha: float, gen: torch.Generator) -> tuple[Tensor, Mix]:
    """Blend the batch with a permutation of itself: lam*x + (1-lam)*x[index]."""
    lam = beta_sample(alpha, gen)
    index = torch.randperm(x.shape[0], generator=gen).to(x.device)
    return lam * x + (1.0 - lam) * x[index], Mix(index, lam, None)


def apply_mix(x: Tensor, spec: MixSpec | None, gen: torch.Generator) -> tuple[Tensor, Mix | None]:
    """Mix the batch with probability `spec.prob` (one draw per batch), or return it unchanged."""
    if spec is None or spec.prob == 0:
        return x, None
    if spec.prob < 1 and float(torch.rand(1, generator=gen)) >= spec.prob:
        return x, None
    return cutmix(x, spec.beta, gen) if spec.name == "cutmix" else mixup(x, spec.beta, gen)


def mix_targets(targets: Tensor, mix: Mix | None) -> Tensor:
    """Mix per-image target distributions (N, K) the way the images were mixed; rows still sum to 1."""
    if mix is None:
        return targets
    return mix.lam * targets + (1.0 - mix.lam) * targets[mix.index]


def augment_batch(x: Tensor, spec: BatchAugSpec, mean: tuple[float, ...], std: tuple[float, ...],
                  gen: torch.Generator) -> Augmented:
    """Apply `spec` to a [0,1] batch in the protocol's fixed order; returns new tensors, `x` is not written."""
    x = shuffle_patches(x, spec.shuffle_patches, gen)
    if spec.resized_crop is not None:
        x = random_resized_crop(x, spec.resized_crop, gen)
    if spec.pad_crop is not None:
        x = pad_crop(x, spec.pad_crop, gen)
    clean = normalize(hflip(x, spec.flip_p, gen), mean, std)
    mixed, mix = apply_mix(clean, spec.mix, gen)
    return Augmented(mixed, clean, mix)
