"""DC's ConvNet (VICO-UoE/DatasetCondensation `networks.py`): conv-norm-act-pool blocks and a linear head.

Must not: seed or reset the global RNG (parameter init draws from it; the caller seeds), read files, or
pick a device. Layers are created in DC's order under DC's module names, so the same seed gives the same
init as DC and DC's state_dict keys (`features.N.*`, `classifier.*`) load as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from rd3kit.errors import ConfigError
from rd3kit.protocols.spec import ModelSpec

NORMS: tuple[str, ...] = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTS: tuple[str, ...] = ("relu", "sigmoid", "leakyrelu")
POOLS: tuple[str, ...] = ("avgpool", "maxpool", "none")

Shape = tuple[int, int, int]


def first_conv_padding(channels: int) -> int:
    """DC pads a 1-channel input by 3 in the first conv: a 28x28 digit becomes a 32x32 map, as for CIFAR."""
    return 3 if channels == 1 else 1


def _norm_layer(norm: str, shape: Shape) -> nn.Module | None:
    """DC's `_get_normlayer`; `shape` is the (C, H, W) conv output the norm sees (LayerNorm needs all 3)."""
    c = shape[0]
    if norm == "instancenorm":
        return nn.GroupNorm(c, c, affine=True)  # DC's "instancenorm": one group per channel, with affine
    if norm == "batchnorm":
        return nn.BatchNorm2d(c, affine=True)
    if norm == "layernorm":
        return nn.LayerNorm(list(shape), elementwise_affine=True)
    if norm == "groupnorm":
        if c % 4:
            raise ConfigError(f"model.width: norm 'groupnorm' uses DC's 4 groups; expected a multiple of 4, got {c}")
        return nn.GroupNorm(4, c, affine=True)  # DC hard-codes 4 groups
    return None


def _activation(act: str) -> nn.Module:
    """DC's activations; ReLU is in-place as in DC (same numbers, less memory)."""
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "sigmoid":
        return nn.Sigmoid()
    return nn.LeakyReLU(negative_slope=0.01)


def _pooling(pool: str) -> nn.Module | None:
    if pool == "avgpool":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if pool == "maxpool":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    return None


def _required(spec: ModelSpec, name: str) -> str | int:
    """A field ConvNet uses; `build_model` has checked it, this guards direct calls."""
    value = getattr(spec, name)
    if value is None:
        raise ConfigError(f"model.{name}: arch 'convnet' needs this field; expected a value, got null")
    return value


def _block(spec: ModelSpec, in_channels: int, padding: int, shape: Shape) -> tuple[list[nn.Module], Shape]:
    """One DC block (conv k3 -> norm -> act -> pool) on a `shape` input; returns its layers and output shape."""
    width = int(_required(spec, "width"))
    conv_shape = (width, shape[1] + 2 * padding - 2, shape[2] + 2 * padding - 2)  # k=3, stride 1
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, kernel_size=3, padding=padding)]
    norm = _norm_layer(str(_required(spec, "norm")), conv_shape)
    layers += [norm] if norm is not None else []
    layers.append(_activation(str(_required(spec, "act"))))
    pool = _pooling(str(_required(spec, "pool")))
    if pool is None:
        return layers, conv_shape
    return layers + [pool], (width, conv_shape[1] // 2, conv_shape[2] // 2)  # floor, as DC's `//= 2`


def conv_features(spec: ModelSpec, channels: int, image_size: tuple[int, int]) -> tuple[nn.Sequential, Shape]:
    """DC's `_make_layers`: `spec.depth` blocks and the (C, H, W) shape of the flattened features.

    The shape is computed from the conv arithmetic; it equals DC's bookkeeping (28 -> 32 for 1-channel input,
    halved after each pool) on every input DC's own network runs on.
    """
    shape: Shape = (channels, image_size[0], image_size[1])
    layers: list[nn.Module] = []
    for d in range(int(_required(spec, "depth"))):
        padding = first_conv_padding(channels) if d == 0 else 1
        block, shape = _block(spec, shape[0], padding, shape)
        layers += block
        if min(shape[1:]) < 1:
            raise ConfigError(
                f"model.depth: {spec.depth} blocks shrink a {channels}x{image_size[0]}x{image_size[1]} input to "
                f"an empty map after block {d + 1}; expected a depth whose pools leave at least 1x1, got {spec.depth}"
            )
    return nn.Sequential(*layers), shape


class ConvNet(nn.Module):
    """DC's ConvNet: `features` (a Sequential of blocks), flatten, `classifier` (one Linear)."""

    def __init__(self, features: nn.Sequential, feature_shape: Shape, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.classifier = nn.Linear(feature_shape[0] * feature_shape[1] * feature_shape[2], num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier (DC's `embed`, used by distribution matching)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def build_convnet(spec: ModelSpec, channels: int, num_classes: int, image_size: tuple[int, int]) -> ConvNet:
    """Build DC's ConvNet from a validated spec (width, depth, norm, act, pool all set)."""
    features, shape = conv_features(spec, channels, image_size)
    return ConvNet(features, shape, num_classes)
