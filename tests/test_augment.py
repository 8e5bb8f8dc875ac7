"""Hand-checked cases for the coupled family's augmentations (rd3kit.train.augment); CPU only except `gpu`."""

from __future__ import annotations

import math

import pytest
import torch

from rd3kit.errors import ConfigError
from rd3kit.protocols.spec import DCAug, DSAAug, DSAParams, NoAug
from rd3kit.train import augment as A

ALL_DSA = ("color", "crop", "cutout", "flip", "scale", "rotate")
DC_OPS = ("crop", "scale", "rotate", "noise")
# Float tolerance for resampling through F.affine_grid/grid_sample: the grid goes to normalised coordinates
# and back in float32 (and cos(pi/2) is -4.4e-8, not 0), so sample points sit ~1e-6 px off the pixel
# centres; bilinear weights then move values by ~1e-6 for inputs in [0, 1].
GRID_ATOL = 1e-5


def dsa(strategy=ALL_DSA, siamese=False, align_corners=False, **params) -> DSAAug:
    values = dict(brightness=1.0, saturation=2.0, contrast=0.5, crop_pad=0.125, cutout=0.5, flip_p=0.5,
                  scale=1.2, rotate_deg=15.0)  # ParamDiffAug's values
    values.update(params)
    return DSAAug(name="dsa", strategy=tuple(strategy), mode="single", siamese=siamese,
                  align_corners=align_corners, params=DSAParams(**values))


def dc(strategy=("crop", "scale", "rotate"), crop=4, scale=0.2, rotate=45, noise=0.001) -> DCAug:
    return DCAug(name="dc", strategy=tuple(strategy), crop=crop, scale=scale, rotate=rotate, noise=noise)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n=4, c=3, h=32, w=32, seed=0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=gen(seed))


# ------------------------------------------------------------------------------------------- DSA: colour


def test_noaug_returns_input_itself():
    x = images()
    assert A.augment(x, NoAug(name="none"), gen(0)) is x


def test_brightness_with_forced_draw_adds_u_minus_half():
    x = images(n=3)
    u = torch.tensor([0.0, 0.25, 0.9])
    out = A._brightness(x, u, 1.0)
    assert torch.equal(out[1], x[1] - 0.25)  # (0.25 - 0.5) * 1.0, exact in binary
    assert torch.equal(out, x + (u.view(3, 1, 1, 1) - 0.5) * 1.0)


def test_saturation_scales_distance_to_pixel_channel_mean():
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()  # pixel mean 0.5
    out = A._saturation(x, torch.tensor([0.25]), 2.0)  # factor u * ratio = 0.5
    assert torch.equal(out[0, :, 0, 0], torch.tensor([0.25, 0.5, 0.75]))
    gray = images(c=1)
    assert torch.equal(A._saturation(gray, torch.rand(4), 2.0), gray)  # one channel: nothing to saturate


def test_contrast_scales_distance_to_image_mean():
    x = torch.zeros(1, 1, 2, 2)
    x[..., 0, :] = 1.0  # image mean 0.5
    assert torch.equal(A._contrast(x, torch.tensor([0.5]), 0.5), x)  # factor u + ratio = 1
    out = A._contrast(x, torch.tensor([0.0]), 0.5)  # factor 0.5
    assert torch.equal(out[0, 0], torch.tensor([[0.75, 0.75], [0.25, 0.25]]))


def test_color_is_brightness_then_saturation_then_contrast_each_with_its_own_draw():
    x, spec = images(), dsa()
    g = gen(3)
    u1, u2, u3 = (torch.rand(4, generator=g) for _ in range(3))
    expected = A._contrast(A._saturation(A._brightness(x, u1, 1.0), u2, 2.0), u3, 0.5)
    assert torch.equal(A.apply_family(x, "color", spec, gen(3)), expected)


# -------------------------------------------------------------------------------------- DSA: crop, cutout


def test_translate_moves_one_hot_pixel_by_known_shift():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 5, 2] = 1.0
    out = A._translate(x, torch.tensor([2]), torch.tensor([-3]))  # out[i, j] = x[i + 2, j - 3]
    assert out.nonzero().tolist() == [[0, 0, 3, 5]]
    assert out.sum() == 1.0


def test_translate_brings_in_zeros_and_keeps_the_rest():
    x = torch.ones(2, 3, 8, 8)
    out = A._translate(x, torch.tensor([3, 0]), torch.tensor([-5, 0]))
    assert torch.equal(out[1], x[1])  # zero shift is the identity
    assert out[0, :, 5:, :].abs().sum() == 0  # rows i + 3 >= 8 fall off the bottom
    assert out[0, :, :, :5].abs().sum() == 0  # columns j - 5 < 0: beyond the 1-px pad, clamped onto it
    assert torch.equal(out[0, :, :5, 5:], torch.ones(3, 5, 3))


def test_crop_shifts_span_minus_to_plus_four_pixels_at_32_and_28():
    for size in (32, 28):  # int(32 * 0.125 + 0.5) = int(28 * 0.125 + 0.5) = 4
        tx, ty = A._crop_shifts(torch.zeros(2000, 1, size, size), 0.125, gen(1), False)
        assert set(tx.tolist()) == set(range(-4, 5)) == set(ty.tolist())


def test_cutout_zeroes_exactly_a_16x16_square_at_32x32():
    out = A._cutout(torch.ones(1, 3, 32, 32), torch.tensor([16]), torch.tensor([16]), (16, 16))
    expected = torch.ones(1, 3, 32, 32)
    expected[..., 8:24, 8:24] = 0  # rows centre - 16 // 2 + [0, 16)
    assert torch.equal(out, expected)


def test_cutout_square_is_clamped_at_the_border():
    out = A._cutout(torch.ones(1, 1, 32, 32), torch.tensor([0]), torch.tensor([32]), (16, 16))
    zeros = (out[0, 0] == 0).nonzero()
    assert zeros[:, 0].unique().tolist() == list(range(0, 8))  # rows -8 .. 7 clamped to 0 .. 7
    assert zeros[:, 1].unique().tolist() == list(range(24, 32))  # columns 24 .. 39 clamped to 24 .. 31
    assert len(zeros) == 64


def test_cutout_centres_and_size_follow_the_parity_rule():
    cx, cy, size = A._cutout_centres(torch.zeros(3000, 1, 32, 32), 0.5, gen(2), False)
    assert size == (16, 16) and set(cx.tolist()) == set(range(33)) == set(cy.tolist())  # even: up to 32
    cx, _, size = A._cutout_centres(torch.zeros(3000, 1, 30, 30), 0.5, gen(2), False)
    assert size == (15, 15) and set(cx.tolist()) == set(range(30))  # odd side: centre < 30


def test_rand_cutout_zeroes_one_rectangle_per_image():
    out = A.rand_cutout(torch.ones(64, 1, 32, 32), dsa(), gen(4))
    for img in out[:, 0]:
        rows, cols = (img == 0).nonzero().unbind(1)
        assert 64 <= len(rows) <= 256  # 16x16, less when clamped at a border (at worst 8x8)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == h * w


# ------------------------------------------------------------------------------ DSA: flip, scale, rotate


def test_flip_with_p1_is_torch_flip_and_with_p0_the_identity():
    x = images()
    assert torch.equal(A.rand_flip(x, dsa(flip_p=1.0), gen(0)), torch.flip(x, dims=[3]))
    assert torch.equal(A.rand_flip(x, dsa(flip_p=0.0), gen(0)), x)
    out = A._flip(x, torch.tensor([0.1, 0.6, 0.49, 0.5]), 0.5)  # flips where u < p
    assert [torch.equal(o, torch.flip(i, dims=[2])) for o, i in zip(out, x)] == [True, False, True, False]


@pytest.mark.parametrize("align_corners", [False, True])
def test_scale_by_one_and_rotate_by_zero_are_the_identity(align_corners):
    x = images()
    assert torch.allclose(A._scale(x, torch.ones(4), torch.ones(4), align_corners), x, atol=GRID_ATOL, rtol=0)
    assert torch.allclose(A._rotate(x, torch.zeros(4), align_corners), x, atol=GRID_ATOL, rtol=0)


def test_scale_by_half_enlarges_a_ramp_twice_about_the_centre():
    ramp = torch.arange(32.0).expand(1, 1, 32, 32)  # value = column index
    out = A._scale(ramp, torch.tensor([0.5]), torch.tensor([1.0]), False)
    # align_corners=False: column j samples input column ((0.5 * ((2j + 1) / 32 - 1) + 1) * 32 - 1) / 2
    # = j / 2 + 7.75, inside the image for all j; bilinear is exact on a ramp.
    expected = torch.arange(32.0) / 2 + 7.75
    assert torch.allclose(out[0, 0], expected.expand(32, 32), atol=GRID_ATOL * 32, rtol=0)  # values up to 32


@pytest.mark.parametrize("align_corners", [False, True])
def test_rotate_by_90_degrees_matches_rot90_in_the_interior(align_corners):
    x = images()
    out = A._rotate(x, torch.full((4,), math.pi / 2), align_corners)
    expected = torch.rot90(x, 1, dims=(2, 3))  # positive angle = anticlockwise, as the source comments
    assert torch.allclose(out[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=GRID_ATOL, rtol=0)


def test_scale_and_rotate_samplers_cover_their_ranges():
    sx, sy = A._scale_factors(5000, 1.2, gen(5), False, torch.float32)
    for s in (sx, sy):
        assert 1 / 1.2 <= s.min() < 0.84 and 1.19 < s.max() < 1.2
    assert not torch.equal(sx, sy)  # two independent draws
    deg = A._rotate_angles(5000, 15.0, gen(5), False, torch.float32) * 180 / math.pi
    assert -15.0 - 1e-4 <= deg.min() < -14.9 and 14.9 < deg.max() < 15.0  # 1e-4: degrees<->radians rounding


# ---------------------------------------------------------------------------- DSA: dispatch and siamese


def test_single_mode_draws_every_family_about_equally():
    g = gen(6)
    draws = [A._draw_family(ALL_DSA, g) for _ in range(600)]
    for family in ALL_DSA:  # expected 100 each, sd ~9.1: [60, 140] is > 4 sd
        assert 60 <= draws.count(family) <= 140, (family, draws.count(family))


def test_diff_augment_applies_exactly_the_drawn_family():
    x, spec, seen = images(), dsa(), set()
    for seed in range(40):
        g = gen(seed)
        family = A._draw_family(ALL_DSA, g)
        seen.add(family)
        assert torch.equal(A.augment(x, spec, gen(seed)), A.apply_family(x, family, spec, g))
    assert seen == set(ALL_DSA)


@pytest.mark.parametrize("family", ALL_DSA)
def test_siamese_gives_every_sample_one_shared_parameter_set(family):
    x = images(n=1).expand(8, 3, 32, 32).contiguous()
    out = A.apply_family(x, family, dsa(siamese=True), gen(7))
    assert all(torch.equal(o, out[0]) for o in out)
    if family != "flip":  # per-sample parameters differ (a flip may draw the same outcome for all 8)
        out = A.apply_family(x, family, dsa(siamese=False), gen(7))
        assert not all(torch.equal(o, out[0]) for o in out)


def test_siamese_draws_are_sample_zero_of_the_same_stream():
    shared, own = A._uniform(5, gen(8), True, torch.float32), A._uniform(5, gen(8), False, torch.float32)
    assert torch.equal(shared, own[:1].expand(5))


# ------------------------------------------------------------------------------------------ DC augment


def test_dc_crop_pads_with_the_per_channel_batch_mean():
    x = torch.stack([torch.full((2, 16, 16), 1.0), torch.full((2, 16, 16), 3.0)])
    x[:, 1] += 1.0  # channel means over the batch: 2.0 and 3.0
    means = [float(x[:, c].mean()) for c in range(2)]
    out = A._dc_crop(x[0], means, 4, 0, 0)  # window at the canvas's top-left corner
    assert torch.equal(out[0, :4], torch.full((4, 16), 2.0)) and torch.equal(out[1, :, :4], torch.full((16, 4), 3.0))
    assert torch.equal(out[:, 4:, 4:], x[0, :, :12, :12])
    out = A._dc_crop(x[0], means, 4, 7, 7)  # the last offset DC can draw: permutation(8)[0] <= 7
    assert torch.equal(out[:, :13, :13], x[0, :, 3:, 3:]) and torch.equal(out[0, 13:], torch.full((3, 16), 2.0))


def test_dc_crop_moves_a_marker_by_minus_three_to_plus_four():
    x = torch.zeros(400, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0
    out = A.augment(x, dc(strategy=("crop",)), gen(9))
    pos = out[:, 0].flatten(1).argmax(1)
    # out[i] = canvas[i + r] = x[i + r - 4], r in 0..7: the marker moves to 8 + 4 - r in 5..12
    assert set((pos // 16).tolist()) == set(range(5, 13)) == set((pos % 16).tolist())


def test_dc_scale_sizes_centres_and_crops():
    img = images(n=1)[0]
    assert torch.equal(A._dc_scale(img, 32, 32), img)  # factor 1: nearest resize to the same size copies
    small = A._dc_scale(img, 16, 16)  # nearest index floor(i * 32 / 16), zeros around
    assert torch.equal(small[:, 8:24, 8:24], img[:, ::2, ::2]) and small[:, :8].abs().sum() == 0
    big = A._dc_scale(img, 40, 40)  # centre crop of the 40x40 resize: offset int((40 - 32) / 2) = 4
    idx = (torch.arange(32) + 4) * 32 // 40  # torch nearest: floor(dst * in / out)
    assert torch.equal(big, img[:, idx][:, :, idx])


def test_dc_samplers_cover_exactly_dcs_ranges():
    g = gen(10)
    u = [A._dc_uniform(0.8, 1.2, g) for _ in range(2000)]
    assert 0.8 <= min(u) < 0.81 and 1.19 < max(u) < 1.2
    sizes = {s for _ in range(2000) for s in A._dc_scale_sizes(0.2, 32, g)}
    assert sizes == set(range(25, 39))  # int(0.8 * 32) = 25 .. int(1.2 * 32 - tiny) = 38
    assert {o for _ in range(500) for o in A._dc_crop_offsets(4, g)} == set(range(8))  # permutation(8)[0]
    angles = {A._dc_rotate_angle(45, g) for _ in range(3000)}
    assert angles == set(range(-45, 45))  # np.random.randint(-45, 45) never gives +45


def test_dc_rotate_by_zero_and_ninety_and_fills_corners_with_cval():
    img = images(n=1)[0]
    # scipy's order-3 spline, evaluated on the input grid, reproduces the input up to float rounding
    assert torch.allclose(A._dc_rotate(img, 0, 0.5), img, atol=1e-6, rtol=0)
    assert torch.allclose(A._dc_rotate(img, 90, 0.5), torch.rot90(img, 1, dims=(1, 2)), atol=1e-6, rtol=0)
    out = A._dc_rotate(img, 45, 0.5)  # corners of the centre crop come from outside the image
    assert out.shape == img.shape and torch.allclose(out[:, 0, 0], torch.full((3,), 0.5), atol=1e-6, rtol=0)


def test_dc_rotate_in_augment_fills_with_the_mean_of_channel_means():
    x = images(n=3) + torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1, 1)  # channel means ~0.5, 1.5, 2.5
    cval = sum(float(x[:, c].mean()) for c in range(3)) / 3
    g, expected = gen(16), []
    for img in x:
        assert A._dc_int(0, 1, g) == 0  # the op draw comes first, then the op's own draws
        expected.append(A._dc_rotate(img, A._dc_rotate_angle(45, g), cval))
    assert torch.equal(A.augment(x, dc(strategy=("rotate",)), gen(16)), torch.stack(expected))


def test_dc_noise_has_the_configured_std():
    x = torch.zeros(64, 3, 32, 32)
    out = A.augment(x, dc(strategy=("noise",), noise=0.5), gen(12))
    # 196,608 normal draws: the std estimate's relative sd is 1 / sqrt(2n) = 0.0016; 1 % is > 6 sd
    assert abs(out.std().item() / 0.5 - 1) < 0.01 and abs(out.mean().item()) < 0.01


def test_dc_draws_one_op_per_image():
    x = torch.full((300, 1, 8, 8), 0.25)  # batch mean 0.25: a crop of a constant image stays constant
    out = A.augment(x, dc(strategy=("crop", "noise"), noise=1.0), gen(13))
    cropped = sum(torch.equal(o, x[0]) for o in out)
    assert 105 <= cropped <= 195  # expected 150, sd 8.7


# ---------------------------------------------------------------------------------- shared properties


SPECS = [dsa(), dsa(siamese=True), dsa(align_corners=True)] + [dc(strategy=(op,)) for op in DC_OPS] + [dc()]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-{'_'.join(s.strategy)}")
@pytest.mark.parametrize("channels", [1, 3])
def test_same_seed_is_bitwise_identical_and_input_is_untouched(spec, channels):
    size = 28 if channels == 1 else 32
    x = images(n=6, c=channels, h=size, w=size)
    before = x.clone()
    outs = [A.augment(x, spec, gen(14)) for _ in range(2)]
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(x, before)
    assert outs[0].shape == x.shape and outs[0].dtype == x.dtype and torch.isfinite(outs[0]).all()
    assert outs[0] is not x


@pytest.mark.parametrize("family", ALL_DSA)
def test_every_dsa_family_leaves_its_input_untouched(family):
    x = images()
    before = x.clone()
    A.apply_family(x, family, dsa(), gen(15))
    assert torch.equal(x, before)


def test_bad_inputs_and_specs_raise_config_errors():
    with pytest.raises(ConfigError, match="strategy"):
        A.augment(images(), dsa(strategy=()), gen(0))
    with pytest.raises(ConfigError, match="augmentation.crop"):
        A.augment(images(), dc(strategy=("crop",), crop=0), gen(0))
    with pytest.raises(ConfigError, match="augmentation.rotate"):
        A.augment(images(), dc(strategy=("rotate",), rotate=0), gen(0))
    with pytest.raises(ConfigError, match="N, C, H, W"):
        A.augment(torch.rand(3, 32, 32), dsa(), gen(0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("gen_device", ["cpu", "cuda"])
@pytest.mark.parametrize("spec", [dsa(), dc(strategy=DC_OPS)], ids=["dsa", "dc"])
def test_cuda_batch_with_a_generator_on_either_device(spec, gen_device):
    x = images().cuda()
    outs = [A.augment(x, spec, torch.Generator(device=gen_device).manual_seed(0)) for _ in range(2)]
    assert outs[0].device == x.device and torch.equal(outs[0], outs[1])
