"""Students and teachers of the decoupled family: torchvision/timm networks and rd3kit ConvNets from a NetSpec.

Must not: download or load weights (`weights=None` / `pretrained=False` always; a teacher's weights come only
from a local file checked by rd3kit.teacher), seed the global RNG (the caller forks and seeds it), or do I/O.
"""

from __future__ import annotations

from torch import nn

from rd3kit.errors import ConfigError
from rd3kit.models import build_model
from rd3kit.protocols.decoupled import RESNETS, NetSpec


def cifar_stem(net: nn.Module) -> nn.Module:
    """SRe2L/RDED `resnet18_modified`: conv1 -> 3x3, stride 1, padding 1, no bias; maxpool -> Identity."""
    old = net.conv1
    net.conv1 = nn.Conv2d(old.in_channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def _torchvision(spec: NetSpec) -> nn.Module:
    import torchvision.models as tvm

    return getattr(tvm, spec.name)(weights=None, num_classes=spec.num_classes)


def _timm(spec: NetSpec) -> nn.Module:
    import timm

    return timm.create_model(spec.name, pretrained=False, num_classes=spec.num_classes)


def build_net(spec: NetSpec, channels: int, image_size: tuple[int, int]) -> nn.Module:
    """Build the network `spec` names, randomly initialised from torch's global RNG, in train mode on the CPU.

    Raises:
        ConfigError: an ImageNet-family network asked for a non-RGB input.
    """
    if spec.source == "rd3kit":
        assert spec.layout is not None  # NetSpec's validator guarantees it
        return build_model(spec.layout, channels, spec.num_classes, image_size)
    if channels != 3:
        raise ConfigError(f"student/teacher {spec.source}:{spec.name} takes RGB input; expected 3 channels, "
                          f"got {channels}")
    net = _torchvision(spec) if spec.source == "torchvision" else _timm(spec)
    if spec.stem == "cifar":
        if spec.name not in RESNETS:  # guarded by NetSpec too; kept for direct callers
            raise ConfigError(f"stem 'cifar' is defined for {list(RESNETS)} only, got {spec.name!r}")
        net = cifar_stem(net)
    return net
