"""The coupled family's training augmentations (DSA DiffAugment, DC augment), as DatasetCondensation does them.

Must not: mutate its input, or draw from any RNG but the `torch.Generator` passed in (no global torch or numpy
state). Names `rand_*` follow the source so each op can be read side by side with it.

Every op is split in two: a sampler that draws its parameters from the generator, and an applier that takes
the parameters as plain tensors or numbers. Tests call the appliers with fixed values instead of patching RNGs.
Draws happen on the generator's device and move to the batch's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rd3kit.errors import ConfigError
from rd3kit.protocols.spec import DCAug, DSAAug, NoAug

DSAOp = Callable[[Tensor, DSAAug, torch.Generator], Tensor]


def augment(x: Tensor, spec: NoAug | DSAAug | DCAug, generator: torch.Generator) -> Tensor:
    """Augment one training batch `x` (N, C, H, W) as `spec` says.

    Returns `x` itself for `NoAug`, otherwise a new tensor; `x` is never written to.
    """
    if isinstance(spec, NoAug):
        return x
    _check_batch(x)
    if isinstance(spec, DSAAug):
        return diff_augment(x, spec, generator)
    if isinstance(spec, DCAug):
        return dc_augment(x, spec, generator)
    raise ConfigError(f"augmentation: expected NoAug, DSAAug or DCAug, got {type(spec).__name__}")


def _check_batch(x: Tensor) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ConfigError(
            f"augment: expected a floating (N, C, H, W) batch, got shape {tuple(x.shape)} dtype {x.dtype}"
        )


# --------------------------------------------------------------------------------------------- DSA samplers


def _uniform(n: int, generator: torch.Generator, siamese: bool, dtype: torch.dtype) -> Tensor:
    """n draws of U[0, 1); siamese: every sample takes sample 0's draw (DSA's `theta[:] = theta[0]`)."""
    u = torch.rand(n, generator=generator, device=generator.device, dtype=dtype)
    return u[:1].expand(n) if siamese else u


def _integers(low: int, high: int, n: int, generator: torch.Generator, siamese: bool) -> Tensor:
    """n integers uniform in [low, high), as torch.randint; siamese as in `_uniform`."""
    k = torch.randint(low, high, (n,), generator=generator, device=generator.device)
    return k[:1].expand(n) if siamese else k


def _draw_family(strategy: Sequence[str], generator: torch.Generator) -> str:
    """DSA mode 'S': one family per call, uniform over the strategy (`torch.randint(0, len, (1,))`)."""
    k = torch.randint(0, len(strategy), (1,), generator=generator, device=generator.device)
    return strategy[int(k.item())]


def _crop_shifts(x: Tensor, ratio: float, generator: torch.Generator, siamese: bool) -> tuple[Tensor, Tensor]:
    """Integer shifts in [-s, s] per axis, s = int(size * ratio + 0.5) (= 4 px at 32 px and ratio 0.125)."""
    shift_h, shift_w = int(x.shape[2] * ratio + 0.5), int(x.shape[3] * ratio + 0.5)
    tx = _integers(-shift_h, shift_h + 1, x.shape[0], generator, siamese)
    ty = _integers(-shift_w, shift_w + 1, x.shape[0], generator, siamese)
    return tx, ty


def _cutout_centres(
    x: Tensor, ratio: float, generator: torch.Generator, siamese: bool
) -> tuple[Tensor, Tensor, tuple[int, int]]:
    """Side int(size * ratio + 0.5); centre in [0, size + (1 - side % 2)): an even side may centre on `size`."""
    size = (int(x.shape[2] * ratio + 0.5), int(x.shape[3] * ratio + 0.5))
    cx = _integers(0, x.shape[2] + (1 - size[0] % 2), x.shape[0], generator, siamese)
    cy = _integers(0, x.shape[3] + (1 - size[1] % 2), x.shape[0], generator, siamese)
    return cx, cy, size


def _scale_factors(
    n: int, ratio: float, generator: torch.Generator, siamese: bool, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """sx, sy independent, each U[1/ratio, ratio): `rand * (ratio - 1/ratio) + 1/ratio`."""
    sx = _uniform(n, generator, siamese, dtype) * (ratio - 1.0 / ratio) + 1.0 / ratio
    sy = _uniform(n, generator, siamese, dtype) * (ratio - 1.0 / ratio) + 1.0 / ratio
    return sx, sy


def _rotate_angles(
    n: int, degrees: float, generator: torch.Generator, siamese: bool, dtype: torch.dtype
) -> Tensor:
    """Angles in radians, U[-degrees, degrees): `(rand - 0.5) * 2 * ratio / 180 * pi` in the source's order."""
    return (_uniform(n, generator, siamese, dtype) - 0.5) * 2 * degrees / 180 * math.pi


# --------------------------------------------------------------------------------------------- DSA appliers


def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _brightness(x: Tensor, u: Tensor, ratio: float) -> Tensor:
    """x + (u - 0.5) * ratio, one u per sample."""
    return x + (_per_sample(u, x) - 0.5) * ratio


def _saturation(x: Tensor, u: Tensor, ratio: float) -> Tensor:
    """Scale each pixel's distance to its mean over channels by u * ratio (identity for one channel)."""
    pixel_mean = x.mean(dim=1, keepdim=True)
    return (x - pixel_mean) * (_per_sample(u, x) * ratio) + pixel_mean


def _contrast(x: Tensor, u: Tensor, ratio: float) -> Tensor:
    """Scale each sample's distance to its mean over (C, H, W) by u + ratio."""
    image_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - image_mean) * (_per_sample(u, x) + ratio) + image_mean


def _translate(x: Tensor, shift_x: Tensor, shift_y: Tensor) -> Tensor:
    """out[n, :, i, j] = x[n, :, i + shift_x[n], j + shift_y[n]], zero where that falls outside the image.

    The source pads one ring of zeros and clamps indices into the padded image, so any out-of-range index
    lands on a zero; gathering rows then columns gives the same values as its single fancy index.
    """
    n, c, h, w = x.shape
    padded = F.pad(x, [1, 1, 1, 1])  # the one zero ring every clamped index falls on
    ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    rows = (ar_h.view(1, h) + shift_x.to(x.device).view(n, 1) + 1).clamp(0, h + 1)
    cols = (ar_w.view(1, w) + shift_y.to(x.device).view(n, 1) + 1).clamp(0, w + 1)
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def _cutout(x: Tensor, centre_x: Tensor, centre_y: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero rows centre_x - size//2 + [0, size) and the same for columns, indices clamped into the image.

    The source clamps each index of the square into [0, H-1]; clamping is monotone, so the rows it hits are
    exactly [clamp(first), clamp(last)] (empty when size is 0). It multiplies by a 0/1 mask, as here.
    """
    n, _, h, w = x.shape
    ar_h, ar_w = torch.arange(h, device=x.device).view(1, h, 1), torch.arange(w, device=x.device).view(1, 1, w)
    rows = _clamped_span(centre_x.to(x.device).view(n, 1, 1), size[0], h, ar_h)
    cols = _clamped_span(centre_y.to(x.device).view(n, 1, 1), size[1], w, ar_w)
    mask = (~(rows & cols)).to(x.dtype)
    return x * mask.unsqueeze(1)


def _clamped_span(centre: Tensor, size: int, length: int, index: Tensor) -> Tensor:
    first = (centre - size // 2).clamp(0, length - 1)
    last = (centre - size // 2 + size - 1).clamp(0, length - 1)
    return (index >= first) & (index <= last) & (size > 0)


def _flip(x: Tensor, u: Tensor, prob: float) -> Tensor:
    """Horizontal flip (last axis) of the samples whose u < prob."""
    return torch.where(_per_sample(u, x) < prob, x.flip(3), x)


def _affine(x: Tensor, theta: Tensor, align_corners: bool) -> Tensor:
    """Bilinear resampling with zero padding through the (N, 2, 3) matrices `theta` (output -> input coords)."""
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=align_corners)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)


def _scale(x: Tensor, sx: Tensor, sy: Tensor, align_corners: bool) -> Tensor:
    """theta = [[sx, 0, 0], [0, sy, 0]]: sx > 1 shows more of the width (shrinks), sx < 1 enlarges."""
    theta = torch.zeros(x.shape[0], 2, 3, dtype=sx.dtype, device=sx.device)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return _affine(x, theta, align_corners)


def _rotate(x: Tensor, angle: Tensor, align_corners: bool) -> Tensor:
    """theta = [[cos a, sin(-a), 0], [sin a, cos a, 0]]; a = +pi/2 equals torch.rot90(x, 1, (2, 3))."""
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, torch.sin(-angle), zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _affine(x, theta, align_corners)


# ------------------------------------------------------------------------------------ DSA ops and dispatch


def rand_brightness(x: Tensor, spec: DSAAug, generator: torch.Generator) -> Tensor:
    """x + (U - 0.5) * brightness (1.0 in ParamDiffAug)."""
    return _brightness(x, _uniform(x.shape[0], generator, spec.siamese, x.dtype), spec.params.brightness)


def rand_saturation(x: Tensor, spec: DSAAug, generator: torch.Generator) -> Tensor:
    """(x - mean over channels) * (U * saturation) + that mean (saturation 2.0 in ParamDiffAug)."""
    return _saturation(x, _uniform(x.shape[0], generator, spec.siamese, x.dtype), spec.params.saturation)


def rand_contrast(x: Tensor, spec: DSAAug, generator: torch.Generator) -> Tensor:
    """(x - mean over C, H, W) * (U + contrast) + that mean (contrast 0.5 in ParamDiffAug)."""
    return _contrast(x, _uniform(x.shape[0], generator, spec.siamese, x.dtype), spec.params.contrast)


def rand_crop(x: Tensor, spec: DSAAug, generator: torch.Generator) -> Tensor:
    """Translate by whole pixels, up to int(size * crop_pad + 0.5) per axis, zeros coming in."""
    tx, ty = _crop_shifts(x, spec.params.crop_pad, generator, spec.siamese)
    return _translate(x, tx, ty)


def rand_cutout(x: Tensor, spec: DSAAug, generator: torch.Generator) -> Tensor:
    """Zero one square of side int(size * cutout + 0.5) at a random centre."""
    cx, cy, size = _cutout_centres(x, spec.params.cutout, generator, spec.siamese)
    return _cutout(x, cx, cy, size)


def rand_flip(x: Tensor, spec: DSAAug, generator: torch.Generator) -> Tensor:
    """Flip horizontally with probability flip_p (draw < flip_p)."""
    return _flip(x, _uniform(x.shape[0], generator, spec.siamese, x.dtype), spec.params.flip_p)


def rand_scale(x: Tensor, spec: DSAAug, generator: torch.Generator) -> Tensor:
    """Affine scale with sx, sy ~ U[1/scale, scale) drawn independently."""
    sx, sy = _scale_factors(x.shape[0], spec.params.scale, generator, spec.siamese, x.dtype)
    return _scale(x, sx, sy, spec.align_corners)


def rand_rotate(x: Tensor, spec: DSAAug, generator: torch.Generator) -> Tensor:
    """Affine rotation by U[-rotate_deg, rotate_deg) degrees."""
    angle = _rotate_angles(x.shape[0], spec.params.rotate_deg, generator, spec.siamese, x.dtype)
    return _rotate(x, angle, spec.align_corners)


# DSA's AUGMENT_FNS: "color" is three ops in sequence, each with its own draw. Read-only so no caller can
# swap an op out from under a protocol.
DSA_FAMILIES: MappingProxyType[str, tuple[DSAOp, ...]] = MappingProxyType(
    {
        "color": (rand_brightness, rand_saturation, rand_contrast),
        "crop": (rand_crop,),
        "cutout": (rand_cutout,),
        "flip": (rand_flip,),
        "scale": (rand_scale,),
        "rotate": (rand_rotate,),
    }
)


def apply_family(x: Tensor, family: str, spec: DSAAug, generator: torch.Generator) -> Tensor:
    """Apply every op of one DSA family in order."""
    for op in DSA_FAMILIES[family]:
        x = op(x, spec, generator)
    return x


def diff_augment(x: Tensor, spec: DSAAug, generator: torch.Generator) -> Tensor:
    """DSA `DiffAugment` in mode 'S' ('single'): draw one family from `spec.strategy`, apply it to the batch."""
    if spec.mode != "single":
        raise ConfigError(f"augmentation.mode: only 'single' (DSA aug_mode 'S') is implemented, got {spec.mode!r}")
    if not spec.strategy:
        raise ConfigError("augmentation.strategy: empty DSA strategy; use {'name': 'none'} for no augmentation")
    family = _draw_family(spec.strategy, generator)
    return apply_family(x, family, spec, generator).contiguous()


# ----------------------------------------------------------------------------------------------- DC augment


def _dc_int(low: int, high: int, generator: torch.Generator) -> int:
    """One integer uniform in [low, high): stands in for DC's np.random.permutation(n)[0] and randint."""
    return int(torch.randint(low, high, (1,), generator=generator, device=generator.device).item())


def _dc_uniform(low: float, high: float, generator: torch.Generator) -> float:
    """One float64 draw in [low, high), computed as np.random.uniform does: low + (high - low) * U."""
    u = torch.rand((), generator=generator, device=generator.device, dtype=torch.float64).item()
    return low + (high - low) * u


def _dc_crop_offsets(crop: int, generator: torch.Generator) -> tuple[int, int]:
    """Window corner (r, c), each in [0, 2 * crop) as permutation(2 * crop)[0]: offsets r - crop in -crop .. crop-1."""
    return _dc_int(0, 2 * crop, generator), _dc_int(0, 2 * crop, generator)


def _dc_scale_sizes(scale: float, side: int, generator: torch.Generator) -> tuple[int, int]:
    """(h, w) = int(U(1 - scale, 1 + scale) * side), two draws; DC passes the height as `side` for both."""
    h = int(_dc_uniform(1 - scale, 1 + scale, generator) * side)
    return h, int(_dc_uniform(1 - scale, 1 + scale, generator) * side)


def _dc_rotate_angle(rotate: int, generator: torch.Generator) -> int:
    """Integer degrees in [-rotate, rotate): np.random.randint(-rotate, rotate) never gives +rotate."""
    return _dc_int(-rotate, rotate, generator)


def _dc_crop(img: Tensor, means: Sequence[float], crop: int, r: int, c: int) -> Tensor:
    """Pad `crop` px on every side with each channel's batch mean, take the H x W window at (r, c)."""
    ch, h, w = img.shape
    fill = torch.tensor(list(means), dtype=img.dtype, device=img.device).view(ch, 1, 1)
    canvas = fill.expand(ch, h + 2 * crop, w + 2 * crop).clone()
    canvas[:, crop : crop + h, crop : crop + w] = img
    return canvas[:, r : r + h, c : c + w]


def _dc_scale(img: Tensor, h: int, w: int) -> Tensor:
    """Nearest-resize to (h, w), centre it on a zero square of side max(h, w, H, W), cut the centre H x W."""
    ch, height, width = img.shape
    resized = F.interpolate(img[None], [h, w])[0]  # DC passes no mode: torch's default 'nearest'
    side = max(h, w, height, width)
    canvas = img.new_zeros(ch, side, side)
    r, c = int((side - h) / 2), int((side - w) / 2)
    canvas[:, r : r + h, c : c + w] = resized
    r, c = int((side - height) / 2), int((side - width) / 2)
    return canvas[:, r : r + height, c : c + width]


def _dc_rotate(img: Tensor, angle: int, cval: float) -> Tensor:
    """scipy.ndimage.rotate over (H, W) with DC's call (reshape=True, order=3 defaults), then the centre H x W."""
    from scipy.ndimage import rotate  # imported here: only DC's rotate needs scipy

    h, w = img.shape[-2:]
    out = rotate(img.detach().cpu().numpy(), angle=angle, axes=(-2, -1), cval=cval)
    r, c = int((out.shape[-2] - h) / 2), int((out.shape[-1] - w) / 2)
    return torch.tensor(out[:, r : r + h, c : c + w], dtype=img.dtype, device=img.device)


def _dc_noise(img: Tensor, noise: float, eps: Tensor) -> Tensor:
    """img + noise * eps, eps standard normal of img's shape."""
    return img + noise * eps.to(img.device)


def _dc_apply(img: Tensor, op: str, spec: DCAug, means: Sequence[float], generator: torch.Generator) -> Tensor:
    """Draw the parameters of DC op `op` for one image (C, H, W) and apply it."""
    if op == "crop":
        r, c = _dc_crop_offsets(spec.crop, generator)
        return _dc_crop(img, means, spec.crop, r, c)
    if op == "scale":
        # DC sizes both h and w from shape[2], the height: a quirk that only shows on non-square input
        h, w = _dc_scale_sizes(spec.scale, img.shape[1], generator)
        return _dc_scale(img, h, w)
    if op == "rotate":
        # cval: DC fills with the mean of the per-channel batch means, one value for all channels
        return _dc_rotate(img, _dc_rotate_angle(spec.rotate, generator), float(np.mean(means)))
    eps = torch.randn(img.shape, generator=generator, device=generator.device, dtype=img.dtype)
    return _dc_noise(img, spec.noise, eps)


def _check_dc(spec: DCAug) -> None:
    """Reject values DC's own code would crash on or turn into empty images, naming the key."""
    if not spec.strategy:
        raise ConfigError("augmentation.strategy: empty DC strategy; use {'name': 'none'} for no augmentation")
    if "crop" in spec.strategy and spec.crop < 1:
        raise ConfigError(f"augmentation.crop: expected >= 1 with 'crop' in the strategy, got {spec.crop}")
    if "rotate" in spec.strategy and spec.rotate < 1:
        raise ConfigError(f"augmentation.rotate: expected >= 1 with 'rotate' in the strategy, got {spec.rotate}")
    if "scale" in spec.strategy and not 0 <= spec.scale < 1:
        raise ConfigError(f"augmentation.scale: expected 0 <= scale < 1, got {spec.scale}")


def dc_augment(x: Tensor, spec: DCAug, generator: torch.Generator) -> Tensor:
    """DC `augment`: per image, one op drawn uniformly from `spec.strategy`, parameters drawn per image."""
    _check_dc(spec)
    if x.shape[0] == 0:
        return x.clone()
    # DC takes one mean per channel over the whole batch, once, before any image is changed.
    means = [float(torch.mean(x[:, c])) for c in range(x.shape[1])]
    out = []
    for i in range(x.shape[0]):
        op = spec.strategy[_dc_int(0, len(spec.strategy), generator)]
        out.append(_dc_apply(x[i], op, spec, means, generator))
    return torch.stack(out)
