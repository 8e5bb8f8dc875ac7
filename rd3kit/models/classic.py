"""DC's fixed-size zoo (MLP, LeNet, AlexNet[BN], VGG11[BN], ResNet18[BN], ResNet18[BN]_AP) for 1x28x28 / 3x32x32.

Must not: seed or reset the global RNG (parameter init draws from it; the caller seeds), read files, or
accept other input geometries: DC sizes these heads by hand for exactly those two (`build_model` checks).
Layers are created in DC's order under DC's module names, so the same seed gives DC's init and DC's
state_dict keys load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rd3kit.protocols.spec import ModelSpec

# (channels, image_size) pairs DC's hand-sized heads fit: MNIST/FashionMNIST and SVHN/CIFAR.
GEOMETRIES: tuple[tuple[int, tuple[int, int]], ...] = ((1, (28, 28)), (3, (32, 32)))
NORMS_2D: tuple[str, ...] = ("instancenorm", "batchnorm")
ALEXNET_NORMS: tuple[str, ...] = ("none", "batchnorm")
_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def _norm2d(norm: str, planes: int) -> nn.Module:
    """VGG/ResNet norm in DC: 'instancenorm' is GroupNorm(C, C) with affine, anything else BatchNorm2d."""
    return nn.GroupNorm(planes, planes, affine=True) if norm == "instancenorm" else nn.BatchNorm2d(planes)


class MLP(nn.Module):
    """DC's MLP: flatten, 128 -> 128 ReLU hidden layers, linear head."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(28 * 28 * 1 if channels == 1 else 32 * 32 * 3, 128)
        self.fc_2 = nn.Linear(128, 128)
        self.fc_3 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.fc_1(x.flatten(1)))
        return self.fc_3(F.relu(self.fc_2(out)))


class LeNet(nn.Module):
    """DC's LeNet: conv5(6) and conv5(16), each ReLU + maxpool 2, then 120 -> 84 -> classes."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=2 if channels == 1 else 0),  # 28 stays 28; 32 -> 28
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.fc_1 = nn.Linear(16 * 5 * 5, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.fc_1(self.features(x).flatten(1)))
        return self.fc_3(F.relu(self.fc_2(out)))


def _alexnet_features(channels: int, batchnorm: bool) -> nn.Sequential:
    """DC's AlexNet trunk; AlexNetBN puts BatchNorm2d between each conv and its ReLU."""
    # (out channels, kernel, padding, maxpool after); DC pads a 1-channel 28x28 input by 4 so it maps to 32x32.
    convs = [(128, 5, 4 if channels == 1 else 2, True), (192, 5, 2, True), (256, 3, 1, False),
             (192, 3, 1, False), (192, 3, 1, True)]
    layers: list[nn.Module] = []
    in_ch = channels
    for out_ch, kernel, padding, pool in convs:
        layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=1, padding=padding))
        layers += [nn.BatchNorm2d(out_ch)] if batchnorm else []
        layers.append(nn.ReLU(inplace=True))
        layers += [nn.MaxPool2d(kernel_size=2, stride=2)] if pool else []
        in_ch = out_ch
    return nn.Sequential(*layers)


class AlexNet(nn.Module):
    """DC's AlexNet (norm 'none') or AlexNetBN (norm 'batchnorm'): five convs, three maxpools, one Linear."""

    def __init__(self, channels: int, num_classes: int, norm: str) -> None:
        super().__init__()
        self.features = _alexnet_features(channels, batchnorm=norm == "batchnorm")
        self.fc = nn.Linear(192 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def _vgg_features(channels: int, norm: str) -> nn.Sequential:
    """DC's VGG `_make_layers` for VGG11: conv3-norm-ReLU, 'M' = maxpool 2, a final no-op AvgPool2d(1, 1)."""
    layers: list[nn.Module] = []
    in_ch = channels
    for i, item in enumerate(_VGG11):
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out_ch = int(item)
        padding = 3 if channels == 1 and i == 0 else 1  # 1-channel 28x28 -> 32x32, as in ConvNet
        conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=padding)
        layers += [conv, _norm2d(norm, out_ch), nn.ReLU(inplace=True)]
        in_ch = out_ch
    layers.append(nn.AvgPool2d(kernel_size=1, stride=1))  # kept so module indices match DC's
    return nn.Sequential(*layers)


class VGG11(nn.Module):
    """DC's VGG11 (norm 'instancenorm' = GroupNorm(C, C), DC's default) or VGG11BN (norm 'batchnorm')."""

    def __init__(self, channels: int, num_classes: int, norm: str) -> None:
        super().__init__()
        self.features = _vgg_features(channels, norm)
        self.classifier = nn.Linear(512, num_classes)  # five pools take 32x32 to 1x1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    """DC's ResNet BasicBlock; `avgpool=True` is BasicBlock_AP (downsample by avgpool, not by stride)."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, avgpool: bool) -> None:
        super().__init__()
        self.downsample_by_pool = avgpool and stride != 1
        conv_stride = 1 if avgpool else stride
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = _norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = _norm2d(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            shortcut: list[nn.Module] = [nn.Conv2d(in_planes, planes, kernel_size=1, stride=conv_stride, bias=False)]
            shortcut += [nn.AvgPool2d(kernel_size=2, stride=2)] if avgpool else []
            self.shortcut = nn.Sequential(*shortcut, _norm2d(norm, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.downsample_by_pool:
            out = F.avg_pool2d(out, kernel_size=2, stride=2)
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out)


class ResNet18(nn.Module):
    """DC's ResNet18 [2,2,2,2] with a 3x3 stride-1 stem and no stem pool; `avgpool=True` is ResNet18_AP.

    Plain: stride-2 convs, global avg_pool2d(4), Linear(512). _AP: 2x2 avgpools, no global pool (DC's
    avg_pool2d(kernel 1, stride 1) is the identity), so the head sees 512x4x4 (3x32x32) or 512x3x3 (1x28x28).
    """

    def __init__(self, channels: int, num_classes: int, norm: str, avgpool: bool) -> None:
        super().__init__()
        self.avgpool = avgpool
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = _norm2d(norm, 64)
        in_planes = 64
        for i, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            first = BasicBlock(in_planes, planes, stride, norm, avgpool)
            self.add_module(f"layer{i}", nn.Sequential(first, BasicBlock(planes, planes, 1, norm, avgpool)))
            in_planes = planes
        side = 3 if channels == 1 else 4  # _AP: 28 -> 14 -> 7 -> 3 (floor); 32 -> 16 -> 8 -> 4
        self.classifier = nn.Linear(512 * side * side if avgpool else 512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            out = getattr(self, f"layer{i}")(out)
        if not self.avgpool:
            out = F.avg_pool2d(out, 4)  # 4x4 maps (28 -> 14 -> 7 -> 4 with stride-2 convs) to 1x1
        return self.classifier(out.flatten(1))


def build_mlp(spec: ModelSpec, channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    return MLP(channels, num_classes)


def build_lenet(spec: ModelSpec, channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    return LeNet(channels, num_classes)


def build_alexnet(spec: ModelSpec, channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    return AlexNet(channels, num_classes, str(spec.norm))


def build_vgg11(spec: ModelSpec, channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    return VGG11(channels, num_classes, str(spec.norm))


def build_resnet18(spec: ModelSpec, channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    return ResNet18(channels, num_classes, str(spec.norm), avgpool=False)


def build_resnet18_ap(spec: ModelSpec, channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    return ResNet18(channels, num_classes, str(spec.norm), avgpool=True)
