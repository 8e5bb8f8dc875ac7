"""Tests for the DC model zoo: shapes, exact parameter counts, DC's layer choices, spec validation, seeding."""

from __future__ import annotations

import typing

import pytest
import torch
from torch import nn

from rd3kit.errors import ConfigError
from rd3kit.models import REGISTRY, build_model, classic, convnet, make_registry
from rd3kit.protocols.spec import ModelSpec

MNIST = (1, (28, 28))
CIFAR = (3, (32, 32))


def spec(arch: str, **fields: object) -> ModelSpec:
    """A ModelSpec with every unused field null, as protocols must write it."""
    values: dict[str, object] = {"width": None, "depth": None, "norm": None, "act": None, "pool": None}
    values.update(fields)
    return ModelSpec(arch=arch, **values)  # type: ignore[arg-type]


def dc_convnet(depth: int = 3, width: int = 128, **overrides: object) -> ModelSpec:
    """DC's `get_default_convnet_setting`: width 128, depth 3, relu, instancenorm, avgpooling."""
    fields: dict[str, object] = {
        "width": width, "depth": depth, "norm": "instancenorm", "act": "relu", "pool": "avgpool",
    }
    fields.update(overrides)
    return spec("convnet", **fields)


# One spec per arch in its DC-default form; the BN variants are covered by `test_batchnorm_variants`.
DEFAULTS = {
    "convnet": dc_convnet(),
    "mlp": spec("mlp"),
    "lenet": spec("lenet"),
    "alexnet": spec("alexnet", norm="none"),
    "vgg11": spec("vgg11", norm="instancenorm"),
    "resnet18": spec("resnet18", norm="instancenorm"),
    "resnet18_ap": spec("resnet18_ap", norm="batchnorm"),  # DC's get_network only offers ResNet18BN_AP
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def logits(model: nn.Module, channels: int, image_size: tuple[int, int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(2, channels, *image_size))


def test_registry_covers_exactly_the_spec_archs() -> None:
    assert set(REGISTRY) == set(typing.get_args(ModelSpec.model_fields["arch"].annotation))
    assert set(DEFAULTS) == set(REGISTRY)


def test_registry_is_frozen_and_rejects_duplicates() -> None:
    with pytest.raises(TypeError):
        REGISTRY["extra"] = REGISTRY["mlp"]  # type: ignore[index]
    with pytest.raises(ValueError, match="'mlp' registered twice"):
        make_registry([("mlp", REGISTRY["mlp"]), ("mlp", REGISTRY["lenet"])])


def test_convnet_choices_match_the_spec_literals() -> None:
    for name, choices in (("norm", convnet.NORMS), ("act", convnet.ACTS), ("pool", convnet.POOLS)):
        literal = typing.get_args(ModelSpec.model_fields[name].annotation)[0]
        assert set(choices) == set(typing.get_args(literal)), name


@pytest.mark.parametrize("arch", sorted(DEFAULTS))
@pytest.mark.parametrize(("channels", "image_size"), [MNIST, CIFAR])
def test_output_shape(arch: str, channels: int, image_size: tuple[int, int]) -> None:
    model = build_model(DEFAULTS[arch], channels, 10, image_size)
    assert logits(model, channels, image_size).shape == (2, 10)


@pytest.mark.parametrize("arch", ["alexnet", "vgg11", "resnet18", "resnet18_ap"])
def test_batchnorm_variants(arch: str) -> None:
    model = build_model(spec(arch, norm="batchnorm"), 3, 10, (32, 32))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert logits(model.eval(), 3, (32, 32)).shape == (2, 10)


@pytest.mark.parametrize("norm", convnet.NORMS)
@pytest.mark.parametrize("pool", convnet.POOLS)
@pytest.mark.parametrize("act", convnet.ACTS)
def test_convnet_variants_run(norm: str, pool: str, act: str) -> None:
    # Tiny width keeps 45 builds fast; the shape logic does not depend on width.
    model = build_model(dc_convnet(depth=2, width=8, norm=norm, act=act, pool=pool), 1, 10, (28, 28))
    assert logits(model, 1, (28, 28)).shape == (2, 10)


def test_convnet_depth4_on_64x64_tinyimagenet() -> None:
    model = build_model(dc_convnet(depth=4), 3, 200, (64, 64))
    assert model.classifier.in_features == 128 * 4 * 4  # 64 -> 32 -> 16 -> 8 -> 4
    assert logits(model, 3, (64, 64)).shape == (2, 200)


def test_convnet3_cifar10_parameter_count() -> None:
    model = build_model(dc_convnet(), 3, 10, (32, 32))
    # conv1:   3*128*3*3 + 128  =   3_584      GroupNorm(128,128) affine: 128 + 128 = 256 per block
    # conv2: 128*128*3*3 + 128  = 147_584      conv3: same = 147_584
    # linear: (128*4*4)*10 + 10 =  20_490      (32 -> 16 -> 8 -> 4)
    expected = 3_584 + 2 * 147_584 + 3 * 256 + 20_490
    assert expected == 320_010
    assert n_params(model) == expected


def test_convnet3_mnist_parameter_count() -> None:
    model = build_model(dc_convnet(), 1, 10, (28, 28))
    # conv1: 1*128*3*3 + 128 = 1_280; rest as CIFAR-10, because padding 3 turns 28x28 into 32x32 maps:
    # 2 * 147_584 (conv2, conv3) + 3 * 256 (GroupNorm affine) + (128*4*4)*10 + 10 = 20_490 (linear)
    expected = 1_280 + 2 * 147_584 + 3 * 256 + 20_490
    assert expected == 317_706
    assert n_params(model) == expected


def test_convnet4_tinyimagenet_parameter_count() -> None:
    model = build_model(dc_convnet(depth=4), 3, 200, (64, 64))
    # 3_584 (conv1) + 3 * 147_584 (conv2-4) + 4 * 256 (GroupNorm) + (128*4*4)*200 + 200 = 409_800 (linear)
    assert n_params(model) == 3_584 + 3 * 147_584 + 4 * 256 + 409_800 == 857_160


def test_classic_parameter_counts() -> None:
    # LeNet on CIFAR: (3*6*25+6) + (6*16*25+16) + (400*120+120) + (120*84+84) + (84*10+10) = 62_006
    assert n_params(build_model(DEFAULTS["lenet"], 3, 10, (32, 32))) == 456 + 2_416 + 48_120 + 10_164 + 850
    # MLP on MNIST: (784*128+128) + (128*128+128) + (128*10+10) = 118_282
    assert n_params(build_model(DEFAULTS["mlp"], 1, 10, (28, 28))) == 100_480 + 16_512 + 1_290
    # ResNet18 on CIFAR-10: the well-known 11_173_962 (kuangliu/pytorch-cifar, which DC acknowledges);
    # GroupNorm(C, C) has the same 2*C affine parameters as BatchNorm2d.
    resnet = build_model(DEFAULTS["resnet18"], 3, 10, (32, 32))
    assert n_params(resnet) == 11_173_962
    # ResNet18_AP only changes the head: 512*4*4*10 + 10 instead of 512*10 + 10.
    ap = build_model(spec("resnet18_ap", norm="instancenorm"), 3, 10, (32, 32))
    assert n_params(ap) == 11_173_962 - 5_130 + 81_930


def test_instancenorm_is_groupnorm_with_one_group_per_channel() -> None:
    model = build_model(dc_convnet(), 3, 10, (32, 32))
    norm = model.features[1]
    assert isinstance(norm, nn.GroupNorm)
    assert (norm.num_groups, norm.num_channels, norm.affine) == (128, 128, True)
    for arch in ("vgg11", "resnet18"):
        norms = [m for m in build_model(DEFAULTS[arch], 3, 10, (32, 32)).modules() if isinstance(m, nn.GroupNorm)]
        assert norms and all(m.num_groups == m.num_channels and m.affine for m in norms), arch


def test_other_convnet_norms() -> None:
    layer = build_model(dc_convnet(width=8, norm="layernorm"), 1, 10, (28, 28)).features[1]
    assert isinstance(layer, nn.LayerNorm) and layer.normalized_shape == (8, 32, 32)  # conv output, before pool
    group = build_model(dc_convnet(width=8, norm="groupnorm"), 3, 10, (32, 32)).features[1]
    assert isinstance(group, nn.GroupNorm) and group.num_groups == 4
    plain = build_model(dc_convnet(width=8, norm="none"), 3, 10, (32, 32)).features
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm)) for m in plain)


def test_convnet_state_dict_keys_match_dc_layout() -> None:
    # DC's Sequential per block is conv, norm, act, pool, so convs sit at 0, 4, 8 and norms at 1, 5, 9.
    keys = list(build_model(dc_convnet(width=8), 3, 10, (32, 32)).state_dict())
    expected = [f"features.{i}.{p}" for i in (0, 1, 4, 5, 8, 9) for p in ("weight", "bias")]
    assert keys == expected + ["classifier.weight", "classifier.bias"]


def test_convnet_no_pool_keeps_full_resolution() -> None:
    model = build_model(dc_convnet(width=8, pool="none"), 1, 10, (28, 28))
    assert model.classifier.in_features == 8 * 32 * 32


@pytest.mark.parametrize(
    ("arch", "first_conv", "pad_mnist", "pad_cifar"),
    [
        ("convnet", lambda m: m.features[0], 3, 1),
        ("lenet", lambda m: m.features[0], 2, 0),
        ("alexnet", lambda m: m.features[0], 4, 2),
        ("vgg11", lambda m: m.features[0], 3, 1),
        ("resnet18", lambda m: m.conv1, 1, 1),
    ],
)
def test_first_conv_padding(arch: str, first_conv: typing.Any, pad_mnist: int, pad_cifar: int) -> None:
    assert first_conv(build_model(DEFAULTS[arch], 1, 10, (28, 28))).padding == (pad_mnist, pad_mnist)
    assert first_conv(build_model(DEFAULTS[arch], 3, 10, (32, 32))).padding == (pad_cifar, pad_cifar)


def test_convnet_only_first_conv_gets_the_one_channel_padding() -> None:
    features = build_model(dc_convnet(width=8), 1, 10, (28, 28)).features
    assert [m.padding for m in features if isinstance(m, nn.Conv2d)] == [(3, 3), (1, 1), (1, 1)]


def test_resnet18_ap_downsamples_by_avgpool() -> None:
    plain = build_model(DEFAULTS["resnet18"], 3, 10, (32, 32))
    ap = build_model(DEFAULTS["resnet18_ap"], 3, 10, (32, 32))
    assert plain.layer2[0].conv1.stride == (2, 2) and plain.layer2[0].shortcut[0].stride == (2, 2)
    assert ap.layer2[0].conv1.stride == (1, 1) and ap.layer2[0].shortcut[0].stride == (1, 1)
    assert isinstance(ap.layer2[0].shortcut[1], nn.AvgPool2d)
    assert plain.classifier.in_features == 512
    assert ap.classifier.in_features == 512 * 4 * 4
    assert build_model(DEFAULTS["resnet18_ap"], 1, 10, (28, 28)).classifier.in_features == 512 * 3 * 3


def test_alexnet_bn_adds_one_batchnorm_per_conv() -> None:
    features = build_model(spec("alexnet", norm="batchnorm"), 3, 10, (32, 32)).features
    kinds = [type(m) for m in features]
    assert kinds.count(nn.BatchNorm2d) == kinds.count(nn.Conv2d) == 5
    assert all(kinds[i + 1] is nn.BatchNorm2d for i, k in enumerate(kinds) if k is nn.Conv2d)


@pytest.mark.parametrize(
    ("model_spec", "field", "got"),
    [
        (spec("mlp", width=128), "width", "128"),
        (spec("lenet", act="relu"), "act", "'relu'"),
        (spec("alexnet", norm="none", pool="maxpool"), "pool", "'maxpool'"),
        (dc_convnet(depth=None), "depth", "null"),
        (spec("vgg11"), "norm", "null"),
        (spec("resnet18", norm="layernorm"), "norm", "'layernorm'"),
        (spec("alexnet", norm="instancenorm"), "norm", "'instancenorm'"),
        (dc_convnet(width=0), "width", "0"),
        (dc_convnet(width=6, norm="groupnorm"), "width", "6"),
    ],
)
def test_spec_validation_names_field_expected_and_got(model_spec: ModelSpec, field: str, got: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_model(model_spec, 3, 10, (32, 32))
    message = str(err.value)
    assert f"model.{field}" in message and "expected" in message and f"got {got}" in message


def test_fixed_size_families_reject_other_geometries() -> None:
    with pytest.raises(ConfigError, match=r"data.channels/data.image_size.*got \(3, \(64, 64\)\)"):
        build_model(DEFAULTS["lenet"], 3, 10, (64, 64))
    with pytest.raises(ConfigError, match=r"got \(1, \(32, 32\)\)"):
        build_model(DEFAULTS["mlp"], 1, 10, (32, 32))


def test_convnet_too_deep_for_the_image_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model.depth"):
        build_model(dc_convnet(depth=6, width=4), 3, 10, (32, 32))  # 32 -> 16 -> 8 -> 4 -> 2 -> 1 -> 0


def test_unknown_arch_suggests_a_name() -> None:
    bad = ModelSpec.model_construct(arch="resnet", width=None, depth=None, norm=None, act=None, pool=None)
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        build_model(bad, 3, 10, (32, 32))


@pytest.mark.parametrize("arch", sorted(DEFAULTS))
def test_same_seed_same_parameters(arch: str) -> None:
    torch.manual_seed(0)
    first = build_model(DEFAULTS[arch], 3, 10, (32, 32)).state_dict()
    torch.manual_seed(0)
    second = build_model(DEFAULTS[arch], 3, 10, (32, 32)).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_build_does_not_reseed() -> None:
    # Two builds in a row must draw different parameters: the builder leaves seeding to the caller.
    torch.manual_seed(0)
    first = build_model(dc_convnet(width=8), 3, 10, (32, 32))
    second = build_model(dc_convnet(width=8), 3, 10, (32, 32))
    assert not torch.equal(first.features[0].weight, second.features[0].weight)


def test_geometries_are_dc_datasets() -> None:
    assert classic.GEOMETRIES == (MNIST, CIFAR)
