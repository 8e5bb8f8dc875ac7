"""Frozen protocol types: everything that can move an accuracy, and nothing that cannot.

Must not: read files, touch the network, or carry silent defaults for any field that changes a result.
Runtime options (device, paths, workers) live in `rd3kit.runtime`, never here.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Frozen(BaseModel):
    """Base for all protocol parts: immutable, unknown keys are errors, no coercion of types."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ZCASpec(Frozen):
    """ZCA whitening as MTT fits it: kornia ZCAWhitening on the full train set in [0,1] space."""

    eps: float
    fit_on: Literal["train"]


class DataSpec(Frozen):
    """The real dataset the set distils and the test split the accuracy is measured on."""

    name: Literal["digits", "mnist", "fashion-mnist", "svhn", "cifar10", "cifar100", "tinyimagenet", "imagenet-1k"]
    num_classes: int = Field(gt=1)
    channels: Literal[1, 3]
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    zca: ZCASpec | None
    test_split: Literal["test", "val"]

    @model_validator(mode="after")
    def _constants_match_channels(self) -> "DataSpec":
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean/std need {self.channels} values (one per channel), got {len(self.mean)}/{len(self.std)}"
            )
        return self


class ModelSpec(Frozen):
    """A network written out field by field; `arch` picks the family, the rest is never parsed from a name.

    Fields that a family does not use must be null (the builder checks), so two specs that build the same
    network hash the same.
    """

    arch: Literal["convnet", "mlp", "lenet", "alexnet", "vgg11", "resnet18", "resnet18_ap"]
    width: int | None
    depth: int | None
    norm: Literal["instancenorm", "batchnorm", "layernorm", "groupnorm", "none"] | None
    act: Literal["relu", "sigmoid", "leakyrelu"] | None
    pool: Literal["avgpool", "maxpool", "none"] | None


class OptimizerSpec(Frozen):
    """SGD as the DC family uses it. `lr_source='artifact'` takes the learned lr shipped with the set."""

    name: Literal["sgd"]
    lr: float = Field(gt=0)
    momentum: float
    weight_decay: float
    lr_source: Literal["protocol", "artifact", "artifact_else_protocol"]


class ScheduleSpec(Frozen):
    """Step decay: after finishing each epoch index in `milestones`, lr *= gamma.

    DC's code decays once after epoch E//2+1 and re-creates the optimizer (momentum buffers reset).
    """

    name: Literal["step"]
    milestones: tuple[int, ...]
    gamma: float
    reset_optimizer: bool


class NoAug(Frozen):
    name: Literal["none"]


class DSAParams(Frozen):
    """ParamDiffAug values from the DC/DSA code (identical in MTT and DD-Ranking)."""

    brightness: float
    saturation: float
    contrast: float
    crop_pad: float
    cutout: float
    flip_p: float
    scale: float
    rotate_deg: float


class DSAAug(Frozen):
    """Differentiable Siamese Augmentation at evaluation time: one family per batch, per-sample params."""

    name: Literal["dsa"]
    strategy: tuple[Literal["color", "crop", "cutout", "flip", "scale", "rotate"], ...]
    mode: Literal["single"]
    siamese: bool
    align_corners: bool
    params: DSAParams


class DCAug(Frozen):
    """DC's own `augment()`: per image, one op drawn from `strategy`; parameters as `get_daparam` sets them."""

    name: Literal["dc"]
    strategy: tuple[Literal["crop", "scale", "rotate", "noise"], ...]
    crop: int
    scale: float
    rotate: int
    noise: float


Augmentation = Annotated[Union[NoAug, DSAAug, DCAug], Field(discriminator="name")]


class LabelSpec(Frozen):
    """Hard class indices with cross-entropy, or stored soft logits with DATM's soft cross-entropy."""

    kind: Literal["hard", "soft_logits"]
    loss: Literal["cross_entropy", "soft_cross_entropy"]

    @model_validator(mode="after")
    def _loss_fits_labels(self) -> "LabelSpec":
        expected = {"hard": "cross_entropy", "soft_logits": "soft_cross_entropy"}[self.kind]
        if self.loss != expected:
            raise ValueError(f"labels.kind={self.kind!r} needs loss={expected!r}, got {self.loss!r}")
        return self


class CoupledProtocol(Frozen):
    """A coupled-family (DC/DSA/DM/MTT/DATM) evaluation, frozen under `id@vN`."""

    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    version: int = Field(ge=1)
    family: Literal["coupled"]
    kind: Literal["paper-faithful", "canonical"]
    description: str
    source: str
    data: DataSpec
    model: ModelSpec
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    epochs: int = Field(gt=0)
    run_epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    test_batch_size: int = Field(gt=0)
    augmentation: Augmentation
    labels: LabelSpec
    seeds: tuple[int, ...]
    metric: Literal["top1_final_epoch"]

    @model_validator(mode="after")
    def _consistent(self) -> "CoupledProtocol":
        if self.run_epochs not in (self.epochs, self.epochs + 1):
            raise ValueError(f"run_epochs must be epochs or epochs+1 (DC's loop), got {self.run_epochs}")
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError(f"seeds must be a non-empty list without duplicates, got {list(self.seeds)}")
        if any(m >= self.run_epochs for m in self.schedule.milestones):
            raise ValueError(f"schedule.milestones {self.schedule.milestones} past run_epochs {self.run_epochs}")
        return self

    @property
    def ref(self) -> str:
        return f"{self.id}@v{self.version}"


# Imported here, not at the top: decoupled.py and audit.py build on Frozen/DataSpec/ModelSpec defined above.
from rd3kit.protocols.decoupled import DecoupledProtocol, TeacherProtocol  # noqa: E402
from rd3kit.protocols.audit import AuditProtocol  # noqa: E402

Protocol = Annotated[Union[CoupledProtocol, DecoupledProtocol, TeacherProtocol, AuditProtocol],
                     Field(discriminator="family")]
