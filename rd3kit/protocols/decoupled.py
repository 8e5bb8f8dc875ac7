"""Frozen protocol types of the decoupled family (SRe2L, RDED, RD3) and of the kit's own teachers.

Must not: read files, touch the network, or carry a silent default for any field that moves an accuracy.
The teacher FILE is a runtime input (its sha256 and source are recorded); the protocol only states which
kind of teacher is acceptable and what it must be.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from rd3kit.protocols.spec import DataSpec, Frozen, ModelSpec

_ID = r"^[a-z0-9]+(-[a-z0-9]+)*$"
_SHA256 = r"^[0-9a-f]{64}$"
_REF = r"^[a-z0-9]+(-[a-z0-9]+)*@v[1-9][0-9]*$"

# Which names each source builds; a name is never parsed for depth/width/stem, those are fields.
NET_NAMES: dict[str, tuple[str, ...]] = {
    "torchvision": ("resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0"),
    "timm": ("resnet18", "resnet50", "mobilenetv2_100", "efficientnet_b0"),
    "rd3kit": ("convnet",),
}
RESNETS = ("resnet18", "resnet50")  # the only names with a CIFAR stem variant


class NetSpec(Frozen):
    """A student or teacher network.

    `stem='cifar'` (ResNets only) replaces conv1 by a 3x3 conv, stride 1, padding 1, no bias, and maxpool by
    Identity, as SRe2L/RDED's `resnet18_modified`. `layout` writes out an rd3kit network (e.g. ConvNet-3 with
    BatchNorm); it is null for torchvision/timm networks, whose `stem` is then required.
    """

    source: Literal["torchvision", "timm", "rd3kit"]
    name: Literal["resnet18", "resnet50", "mobilenet_v2", "mobilenetv2_100", "efficientnet_b0", "convnet"]
    stem: Literal["imagenet", "cifar"] | None
    num_classes: int = Field(gt=1)
    layout: ModelSpec | None

    @model_validator(mode="after")
    def _consistent(self) -> "NetSpec":
        if self.name not in NET_NAMES[self.source]:
            raise ValueError(f"name {self.name!r} is not built by source {self.source!r}; expected one of "
                             f"{list(NET_NAMES[self.source])}")
        if self.source == "rd3kit":
            if self.layout is None or self.stem is not None:
                raise ValueError("source 'rd3kit' needs `layout` (the network written out) and stem null")
            if self.layout.arch != self.name:
                raise ValueError(f"layout.arch {self.layout.arch!r} must equal name {self.name!r}")
        elif self.layout is not None or self.stem is None:
            raise ValueError(f"source {self.source!r} needs `stem` ('imagenet' or 'cifar') and layout null")
        if self.stem == "cifar" and self.name not in RESNETS:
            raise ValueError(f"stem 'cifar' is defined for {list(RESNETS)} only, got {self.name!r}")
        return self


TeacherKind = Literal["hub", "torchvision", "rd3kit-teacher"]


class TeacherSpec(Frozen):
    """What the teacher must be; the file itself is a runtime input with its sha256 recorded.

    Accepted sources: `hub` (`hf://owner/repo@<40-hex commit>/path`), `torchvision` (`torchvision:<weights enum>`,
    the file's sha256 must start with the hash prefix torchvision puts in the file name), `rd3kit-teacher`
    (`rd3kit-teacher:<record.json>` written by `rd3kit teacher train` under `trained_under`).
    """

    model: NetSpec
    accepts: tuple[TeacherKind, ...] = Field(min_length=1)
    torchvision_weights: str | None = Field(pattern=r"^[A-Za-z0-9_]+_Weights\.[A-Z0-9_]+$")
    trained_under: str | None = Field(pattern=_REF)
    sha256: str | None = Field(pattern=_SHA256)
    mode: Literal["eval", "train"]

    @model_validator(mode="after")
    def _consistent(self) -> "TeacherSpec":
        if ("torchvision" in self.accepts) != (self.torchvision_weights is not None):
            raise ValueError("torchvision_weights is required exactly when 'torchvision' is accepted")
        if ("rd3kit-teacher" in self.accepts) != (self.trained_under is not None):
            raise ValueError("trained_under is required exactly when 'rd3kit-teacher' is accepted")
        if len(set(self.accepts)) != len(self.accepts):
            raise ValueError(f"accepts has duplicates: {list(self.accepts)}")
        return self


class SoftLabelSpec(Frozen):
    """Where the student's targets come from and the loss on them.

    `online_teacher`: the teacher runs on the same augmented (and mixed) batch every step. `stored`: per-image
    logits shipped with the set, mixed like the images. `fkd_replay`: SRe2L's per-epoch FKD files replayed
    exactly (crop coords, flips, mix params and logits as stored). `kl` is KLDiv(batchmean) between
    log_softmax(s/T) and softmax(t/T), times T^2 only when `t2_factor`. `mse_ce` is MSE(s, t) + ce_weight*CE(s, y).
    """

    source: Literal["online_teacher", "stored", "fkd_replay"]
    loss: Literal["kl", "mse_ce"]
    temperature: float | None = Field(gt=0)
    t2_factor: bool
    ce_weight: float | None = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "SoftLabelSpec":
        if self.loss == "kl" and (self.temperature is None or self.ce_weight is not None):
            raise ValueError("loss 'kl' needs temperature and ce_weight null")
        if self.loss == "mse_ce" and (self.ce_weight is None or self.temperature is not None or self.t2_factor):
            raise ValueError("loss 'mse_ce' needs ce_weight, temperature null and t2_factor false")
        return self


class CropSpec(Frozen):
    """torchvision RandomResizedCrop, drawn per sample: area fraction `scale`, aspect `ratio`, back to full size."""

    scale: tuple[float, float]
    ratio: tuple[float, float]
    antialias: bool

    @model_validator(mode="after")
    def _ordered(self) -> "CropSpec":
        if not (0 < self.scale[0] <= self.scale[1] <= 1 and 0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], "
                             f"got scale {self.scale}, ratio {self.ratio}")
        return self


class MixSpec(Frozen):
    """CutMix or Mixup on the whole batch: lambda ~ Beta(beta, beta), one permutation, applied with `prob`."""

    name: Literal["cutmix", "mixup"]
    beta: float = Field(gt=0)
    prob: float = Field(ge=0, le=1)


class BatchAugSpec(Frozen):
    """Training augmentation in this fixed order: ShufflePatches -> resized crop -> padded crop -> flip ->
    normalise -> mix. `shuffle_patches` is RDED's factor (1 = off); `pad_crop` is RandomCrop(size, padding)."""

    shuffle_patches: int = Field(ge=1)
    resized_crop: CropSpec | None
    pad_crop: int | None = Field(ge=1)
    flip_p: float = Field(ge=0, le=1)
    mix: MixSpec | None


class AdamWSpec(Frozen):
    """AdamW. `decay_scope='matrices'` decays only >1-D weights (SRe2L/RDED `get_parameters`); 'all' decays all."""

    name: Literal["adamw"]
    lr: float = Field(gt=0)
    betas: tuple[float, float]
    eps: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    decay_scope: Literal["all", "matrices"]


class SGDSpec(Frozen):
    """SGD with momentum (used for the kit's teachers)."""

    name: Literal["sgd"]
    lr: float = Field(gt=0)
    momentum: float = Field(ge=0)
    nesterov: bool
    weight_decay: float = Field(ge=0)
    decay_scope: Literal["all", "matrices"]


class CosineSchedule(Frozen):
    """lr factor 0.5*(1+cos(pi*t/(zeta*T))): zeta=1 ends at 0 (SRe2L), zeta=2 ends at 0.5 (RDED, EDC).

    `per='epoch'`: t is the epoch index, T the epochs (a LambdaLR stepped once per epoch); `per='step'`: t is
    the optimizer step, T the total steps.
    """

    name: Literal["cosine"]
    zeta: float = Field(ge=1)
    per: Literal["epoch", "step"]


class MultiStepSchedule(Frozen):
    """MultiStepLR: lr *= gamma once the epoch index reaches each milestone (EDC CIFAR-10)."""

    name: Literal["multistep"]
    milestones: tuple[int, ...]
    gamma: float = Field(gt=0)


Schedule = Annotated[Union[CosineSchedule, MultiStepSchedule], Field(discriminator="name")]


class BatchSpec(Frozen):
    """Batch size: fixed (`size`) or RDED's table by images per class (`by_ipc`, [ipc, batch] pairs).

    `cap_at_set_size` lowers the batch to the set size (RDED's `min(batch, ipc*nclass)`).
    """

    size: int | None = Field(gt=0)
    by_ipc: tuple[tuple[int, int], ...]
    cap_at_set_size: bool

    @model_validator(mode="after")
    def _one_rule(self) -> "BatchSpec":
        if (self.size is None) == (not self.by_ipc):
            raise ValueError("give exactly one of `size` or a non-empty `by_ipc` table")
        return self


class EMASpec(Frozen):
    """Evaluate an exponential moving average of the student (EDC): ema = rate*ema + (1-rate)*w every step."""

    rate: float = Field(gt=0, lt=1)


class EvalSpec(Frozen):
    """Test-time transform and the best-epoch diagnostic.

    The metric is always the final epoch; `best_epoch_every` (epochs) and `best_epoch_from` (fraction of
    training after which probes count, RDED: 0.8) only produce a diagnostic labelled as such.
    """

    resize: int | None = Field(gt=0)
    center_crop: int | None = Field(gt=0)
    batch_size: int = Field(gt=0)
    best_epoch_every: int | None = Field(gt=0)
    best_epoch_from: float = Field(ge=0, le=1)


def _check_seeds(seeds: tuple[int, ...]) -> None:
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list without duplicates, got {list(seeds)}")


def _check_net_fits(net: NetSpec, data: DataSpec, where: str) -> None:
    if net.num_classes != data.num_classes:
        raise ValueError(f"{where}.num_classes {net.num_classes} != data.num_classes {data.num_classes}")


class DecoupledProtocol(Frozen):
    """A decoupled-family evaluation (student trained on the set with a teacher's soft labels), frozen as id@vN."""

    id: str = Field(pattern=_ID)
    version: int = Field(ge=1)
    family: Literal["decoupled"]
    kind: Literal["canonical", "paper-faithful", "variant"]
    description: str
    source: str
    data: DataSpec
    student: NetSpec
    teacher: TeacherSpec
    soft_labels: SoftLabelSpec
    augmentation: BatchAugSpec
    optimizer: AdamWSpec
    schedule: Schedule
    epochs: int = Field(gt=0)
    batch: BatchSpec
    ema: EMASpec | None
    student_clean_forward: bool  # RDED also runs the student, in train mode, on the un-mixed batch (moves BN stats)
    eval: EvalSpec
    seeds: tuple[int, ...]
    metric: Literal["top1_final_epoch"]

    @model_validator(mode="after")
    def _consistent(self) -> "DecoupledProtocol":
        _check_seeds(self.seeds)
        _check_net_fits(self.student, self.data, "student")
        _check_net_fits(self.teacher.model, self.data, "teacher.model")
        if self.data.zca is not None:
            raise ValueError("data.zca must be null: no decoupled method whitens its inputs")
        if isinstance(self.schedule, MultiStepSchedule) and any(m >= self.epochs for m in self.schedule.milestones):
            raise ValueError(f"schedule.milestones {self.schedule.milestones} past epochs {self.epochs}")
        return self

    @property
    def ref(self) -> str:
        return f"{self.id}@v{self.version}"


class TeacherProtocol(Frozen):
    """How the kit trains its own teacher on a real train split (hard labels, cross-entropy), frozen as id@vN."""

    id: str = Field(pattern=_ID)
    version: int = Field(ge=1)
    family: Literal["teacher"]
    kind: Literal["kit-teacher"]
    description: str
    source: str
    data: DataSpec
    model: NetSpec
    optimizer: Annotated[Union[SGDSpec, AdamWSpec], Field(discriminator="name")]
    schedule: Schedule
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    augmentation: BatchAugSpec
    label_smoothing: float = Field(ge=0, lt=1)
    eval: EvalSpec
    seeds: tuple[int, ...]
    metric: Literal["top1_final_epoch"]

    @model_validator(mode="after")
    def _consistent(self) -> "TeacherProtocol":
        _check_seeds(self.seeds)
        _check_net_fits(self.model, self.data, "model")
        if self.augmentation.mix is not None:
            raise ValueError("augmentation.mix must be null: a kit teacher trains on hard labels")
        return self

    @property
    def ref(self) -> str:
        return f"{self.id}@v{self.version}"
