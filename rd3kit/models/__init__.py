"""The model zoo: a frozen arch -> family registry and `build_model`, which checks a spec before building.

Must not: seed, fork or reset the global RNG (parameter init draws from it; the caller seeds, e.g. with
`torch.manual_seed` or inside `torch.random.fork_rng`), move a model to a device, or do I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from rd3kit.errors import ConfigError
from rd3kit.models import classic, convnet
from rd3kit.protocols.spec import ModelSpec

Builder = Callable[[ModelSpec, int, int, tuple[int, int]], nn.Module]
SPEC_FIELDS: tuple[str, ...] = ("width", "depth", "norm", "act", "pool")
POSITIVE_INT = None  # in `Family.fields`: the field takes any int >= 1 rather than one of a list of names


@dataclass(frozen=True)
class Family:
    """One architecture family.

    Attributes:
        build: `(spec, channels, num_classes, image_size) -> nn.Module`, called only on a checked spec.
        fields: the spec fields the family reads, each mapped to its allowed values (`POSITIVE_INT` for
            width/depth); every other field of `SPEC_FIELDS` must be null.
        geometries: the (channels, image_size) pairs the family's head is sized for; None = any.
    """

    build: Builder
    fields: Mapping[str, tuple[str, ...] | None]
    geometries: tuple[tuple[int, tuple[int, int]], ...] | None


def make_registry(entries: Iterable[tuple[str, Family]]) -> Mapping[str, Family]:
    """A read-only arch -> Family mapping; a name given twice is an error, never a silent override."""
    table: dict[str, Family] = {}
    for name, family in entries:
        if name in table:
            raise ValueError(f"model registry: arch {name!r} registered twice; each arch name must be unique")
        table[name] = family
    return MappingProxyType(table)


def _family(fields: Mapping[str, tuple[str, ...] | None], build: Builder, dc_sized: bool) -> Family:
    geometries = classic.GEOMETRIES if dc_sized else None
    return Family(build=build, fields=MappingProxyType(dict(fields)), geometries=geometries)


_CONVNET_FIELDS = {"width": POSITIVE_INT, "depth": POSITIVE_INT, "norm": convnet.NORMS, "act": convnet.ACTS,
                   "pool": convnet.POOLS}

# Keys are the `ModelSpec.arch` literals; DC's names in comments. Variants are spec fields, not entries.
REGISTRY: Mapping[str, Family] = make_registry([
    ("convnet", _family(_CONVNET_FIELDS, convnet.build_convnet, dc_sized=False)),  # ConvNet, ConvNetD*/W*/A*/N*/*P
    ("mlp", _family({}, classic.build_mlp, dc_sized=True)),  # MLP
    ("lenet", _family({}, classic.build_lenet, dc_sized=True)),  # LeNet
    ("alexnet", _family({"norm": classic.ALEXNET_NORMS}, classic.build_alexnet, dc_sized=True)),  # AlexNet[BN]
    ("vgg11", _family({"norm": classic.NORMS_2D}, classic.build_vgg11, dc_sized=True)),  # VGG11[BN]
    ("resnet18", _family({"norm": classic.NORMS_2D}, classic.build_resnet18, dc_sized=True)),  # ResNet18[BN]
    ("resnet18_ap", _family({"norm": classic.NORMS_2D}, classic.build_resnet18_ap, dc_sized=True)),  # ResNet18[BN]_AP
])


def _lookup(arch: str) -> Family:
    family = REGISTRY.get(arch)
    if family is None:
        hint = difflib.get_close_matches(arch, list(REGISTRY), n=1)
        fix = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"model.arch: expected one of {sorted(REGISTRY)}, got {arch!r}{fix}")
    return family


def _check_field(arch: str, name: str, value: object, allowed: tuple[str, ...] | None) -> None:
    where = f"model.{name}: arch {arch!r}"
    if value is None:
        want = "an int >= 1" if allowed is POSITIVE_INT else f"one of {list(allowed or ())}"
        raise ConfigError(f"{where} needs this field; expected {want}, got null")
    if allowed is POSITIVE_INT:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: expected an int >= 1, got {value!r}")
    elif value not in allowed:
        raise ConfigError(f"{where}: expected one of {list(allowed)}, got {value!r}")


def check_spec(spec: ModelSpec, family: Family) -> None:
    """Fields the family reads must be set and allowed; fields it ignores must be null (so equal nets hash equal)."""
    for name in SPEC_FIELDS:
        value = getattr(spec, name)
        if name in family.fields:
            _check_field(spec.arch, name, value, family.fields[name])
        elif value is not None:
            raise ConfigError(
                f"model.{name}: arch {spec.arch!r} does not use this field; expected null, got {value!r}. "
                f"Set it to null: this family's {name} is fixed by DC's code"
            )


def _check_input(arch: str, family: Family, channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
    if channels < 1 or num_classes < 1 or len(image_size) != 2 or min(image_size) < 1:
        raise ConfigError(
            f"model input for arch {arch!r}: expected channels >= 1, num_classes >= 1 and a (H, W) image_size, "
            f"got channels={channels}, num_classes={num_classes}, image_size={image_size}"
        )
    geometry = (channels, tuple(image_size))
    if family.geometries is not None and geometry not in family.geometries:
        raise ConfigError(
            f"data.channels/data.image_size: arch {arch!r} has DC's hand-sized head; expected (channels, image_size) "
            f"in {list(family.geometries)}, got {geometry}"
        )


def build_model(spec: ModelSpec, channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    """Build the network `spec` describes, in train mode on the CPU, with parameters drawn from torch's global RNG.

    Args:
        spec: the protocol's model; fields the family does not read must be null.
        channels: input channels (1 or 3 for DC's fixed-size families).
        num_classes: width of the output layer.
        image_size: (H, W) of the input; 28x28 one-channel input is mapped to 32x32 maps as DC does.

    Raises:
        ConfigError: naming the field, what was expected and what was given.
    """
    family = _lookup(spec.arch)
    check_spec(spec, family)
    _check_input(spec.arch, family, channels, num_classes, image_size)
    return family.build(spec, channels, num_classes, tuple(image_size))
