"""Frozen type of an audit protocol: which evaluation protocol a DD-Ranking audit runs and how it scores it.

Must not: read files, touch the network, or default anything that moves a score. The evaluation protocol is
named by `id@vN` AND pinned by its sha256 (checked when the audit starts), so an audit protocol can never
silently follow a changed evaluation protocol.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rd3kit.protocols.spec import DataSpec, Frozen

_ID = r"^[a-z0-9]+(-[a-z0-9]+)*$"
_REF = r"^[a-z0-9]+(-[a-z0-9]+)*@v[1-9][0-9]*$"
_SHA256 = r"^[0-9a-f]{64}$"


class ScoreWeights(Frozen):
    """DD-Ranking's weights: LRS = N(w*IOR - (1-w)*HLR), ARS = N(g*gain_aug + (1-g)*gain_noaug)."""

    w: float = Field(ge=0, le=1)
    g: float = Field(ge=0, le=1)


class IntervalSpec(Frozen):
    """Percentile bootstrap over seeds, each arm resampled independently (docs/metrics.md section 2)."""

    method: Literal["percentile-bootstrap-per-arm"]
    level: float = Field(gt=0, lt=1)
    n_boot: int = Field(ge=100)
    seed: int = Field(ge=0)


class FullSpec(Frozen):
    """Where A_full comes from: a published value (frozen here with its citation), a run, or nowhere.

    `published`: `top1` holds the value(s) as fractions and `citation` says where they are printed.
    `run`: train on the whole train split under the evaluation protocol with hard labels (costly).
    `none`: HLR and LRS are reported as absent, with the reason.
    """

    source: Literal["published", "run", "none"]
    top1: tuple[float, ...] | None
    citation: str | None

    @model_validator(mode="after")
    def _consistent(self) -> "FullSpec":
        published = self.source == "published"
        if published != (self.top1 is not None) or published != (self.citation is not None):
            raise ValueError("full: top1 and citation are required for source 'published' and must be null otherwise")
        if self.top1 is not None and (not self.top1 or any(not 0 <= v <= 1 for v in self.top1)):
            raise ValueError(f"full.top1 must be non-empty fractions in [0, 1], got {list(self.top1)}")
        return self


class ArmsSpec(Frozen):
    """The arms besides the set itself. Random subsets are always run (selection seed = training seed);
    `baselines` adds deterministic coresets from reference/baselines, selected in `feature_space`."""

    random: Literal["class-balanced, selection seed = training seed"]
    baselines: tuple[Literal["herding", "kcenter"], ...]
    feature_space: Literal["pixels-flat-unit"]
    lr: Literal["the lr resolved for the distilled set; no search"]
    full: FullSpec


class AuditProtocol(Frozen):
    """A DD-Ranking audit frozen under `id@vN`: evaluation protocol (pinned), arms, seeds, weights, interval."""

    id: str = Field(pattern=_ID)
    version: int = Field(ge=1)
    family: Literal["audit"]
    kind: Literal["ddranking"]
    description: str
    source: str
    evaluation: str = Field(pattern=_REF)
    evaluation_sha256: str = Field(pattern=_SHA256)
    data: DataSpec
    arms: ArmsSpec
    scores: ScoreWeights
    interval: IntervalSpec
    seeds: tuple[int, ...]
    metric: Literal["top1_final_epoch"]

    @model_validator(mode="after")
    def _consistent(self) -> "AuditProtocol":
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list without duplicates, got {list(self.seeds)}")
        if len(set(self.arms.baselines)) != len(self.arms.baselines):
            raise ValueError(f"arms.baselines lists a method twice: {list(self.arms.baselines)}")
        return self

    @property
    def ref(self) -> str:
        return f"{self.id}@v{self.version}"
