"""Hand-checked cases for the decoupled family's batch augmentations (rd3kit.train.batchaug); tiny CPU inputs."""

from __future__ import annotations

import math

import pytest
import torch

from rd3kit.protocols.decoupled import BatchAugSpec, CropSpec, MixSpec
from rd3kit.train import batchaug as B

RATIO = (0.75, 4.0 / 3.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int = 6, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=gen(123))


def full_spec(mix: str = "cutmix") -> BatchAugSpec:
    return BatchAugSpec(shuffle_patches=2, resized_crop=CropSpec(scale=(0.5, 1.0), ratio=RATIO, antialias=True),
                        pad_crop=1, flip_p=0.5, mix=MixSpec(name=mix, beta=1.0, prob=1.0))


@pytest.mark.parametrize("mix", ["cutmix", "mixup"])
def test_augment_batch_keeps_shape_and_input(mix):
    x = batch()
    before = x.clone()
    out = B.augment_batch(x, full_spec(mix), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), gen())
    assert out.images.shape == x.shape and out.clean.shape == x.shape
    assert torch.equal(x, before)  # never mutates its input
    assert out.mix is not None and 0.0 <= out.mix.lam <= 1.0


def test_augment_batch_is_deterministic_under_a_generator():
    x = batch()
    a = B.augment_batch(x, full_spec(), (0.5,) * 3, (0.25,) * 3, gen(7))
    b = B.augment_batch(x, full_spec(), (0.5,) * 3, (0.25,) * 3, gen(7))
    c = B.augment_batch(x, full_spec(), (0.5,) * 3, (0.25,) * 3, gen(8))
    assert torch.equal(a.images, b.images) and a.mix.lam == b.mix.lam
    assert not torch.equal(a.images, c.images)


def test_cutmix_box_area_matches_lambda_and_pixels_come_from_the_partner():
    x = batch(n=5, h=16, w=16)
    for seed in range(20):
        out, mix = B.cutmix(x, 1.0, gen(seed))
        y1, y2, x1, x2 = mix.box
        assert math.isclose(mix.lam, 1 - (y2 - y1) * (x2 - x1) / (16 * 16))
        inside = torch.zeros(16, 16, dtype=torch.bool)
        inside[y1:y2, x1:x2] = True
        assert torch.equal(out[:, :, inside], x[mix.index][:, :, inside])
        assert torch.equal(out[:, :, ~inside], x[:, :, ~inside])
        # the share of each image's own pixels is lam (ignoring pairs mixed with themselves)
        own = (out == x).all(dim=1).float().mean(dim=(1, 2))
        moved = mix.index != torch.arange(5)
        assert torch.allclose(own[moved], torch.full_like(own[moved], mix.lam), atol=1e-6) or not moved.any()


def test_mixup_is_the_convex_blend():
    x = batch()
    out, mix = B.mixup(x, 0.8, gen(3))
    assert torch.allclose(out, mix.lam * x + (1 - mix.lam) * x[mix.index])


def test_mixed_hard_labels_sum_to_one_with_weights_lam_and_one_minus_lam():
    x = batch(n=4)
    _, mix = B.cutmix(x, 1.0, gen(1))
    y = torch.tensor([0, 1, 2, 3])
    soft = B.mix_targets(torch.nn.functional.one_hot(y, 5).float(), mix)
    assert torch.allclose(soft.sum(dim=1), torch.ones(4))
    for i in range(4):
        j = int(mix.index[i])
        if j != i:
            assert math.isclose(float(soft[i, y[i]]), mix.lam, abs_tol=1e-6)
            assert math.isclose(float(soft[i, y[j]]), 1 - mix.lam, abs_tol=1e-6)
    assert B.mix_targets(soft, None) is soft


def test_mix_probability_zero_and_one():
    x = batch()
    out, mix = B.apply_mix(x, MixSpec(name="cutmix", beta=1.0, prob=0.0), gen())
    assert mix is None and out is x
    assert B.apply_mix(x, MixSpec(name="mixup", beta=1.0, prob=1.0), gen())[1] is not None


def _patches(img: torch.Tensor, f: int) -> list[torch.Tensor]:
    h, w = img.shape[-2] // f, img.shape[-1] // f
    return [img[:, r * h:(r + 1) * h, c * w:(c + 1) * w] for r in range(f) for c in range(f)]


def test_shuffle_patches_is_a_permutation_of_patches():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    for seed in range(5):
        out = B.shuffle_patches(x, 2, gen(seed))
        for i in range(2):
            src = sorted(p.flatten().tolist() for p in _patches(x[i], 2))
            dst = sorted(p.flatten().tolist() for p in _patches(out[i], 2))
            assert src == dst  # same 4 patches, each intact, possibly moved
    assert B.shuffle_patches(x, 1, gen()) is x
    moved = [not torch.equal(B.shuffle_patches(x, 2, gen(s)), x) for s in range(10)]
    assert any(moved)


def test_crop_box_respects_bounds_and_scale():
    spec = CropSpec(scale=(0.25, 0.5), ratio=RATIO, antialias=True)
    g = gen(2)
    for _ in range(50):
        top, left, h, w = B.crop_box(32, 32, spec, g)
        assert 0 <= top and top + h <= 32 and 0 <= left and left + w <= 32
        assert 0.2 <= h * w / 1024 <= 0.55  # rounding of the sides moves the area a little
    full = CropSpec(scale=(1.0, 1.0), ratio=RATIO, antialias=True)
    assert all(B.crop_box(32, 32, full, g) == (0, 0, 32, 32) for _ in range(20))


def test_resized_crop_at_full_scale_is_the_identity():
    x = batch()
    spec = CropSpec(scale=(1.0, 1.0), ratio=RATIO, antialias=True)
    assert torch.equal(B.random_resized_crop(x, spec, gen()), x)
    out = B.random_resized_crop(x, CropSpec(scale=(0.1, 0.3), ratio=RATIO, antialias=True), gen())
    assert out.shape == x.shape and not torch.equal(out, x)


def test_pad_crop_windows_come_from_the_padded_image():
    x = batch(n=4)
    out = B.pad_crop(x, 2, gen(5))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(4):
        hits = [torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5)]
        assert any(hits)


def test_flip_probability_extremes():
    x = batch()
    assert torch.equal(B.hflip(x, 1.0, gen()), x.flip(-1))
    assert B.hflip(x, 0.0, gen()) is x


def test_normalize_matches_formula():
    x = batch()
    out = B.normalize(x, (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    assert torch.allclose(out[:, 1], (x[:, 1] - 0.2) / 0.5)
