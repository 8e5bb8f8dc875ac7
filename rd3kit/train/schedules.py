"""Learning-rate factors of the decoupled family (cosine with zeta, multistep). Must not: hold optimizer state."""

from __future__ import annotations

import math

from rd3kit.protocols.decoupled import CosineSchedule, MultiStepSchedule


def cosine_factor(t: float, total: float, zeta: float) -> float:
    """0.5*(1+cos(pi*t/(zeta*total))): 1 at t=0; at t=total 0 for zeta=1 and 0.5 for zeta=2."""
    return 0.5 * (1.0 + math.cos(math.pi * t / (zeta * total)))


def multistep_factor(epoch: int, milestones: tuple[int, ...], gamma: float) -> float:
    """MultiStepLR: gamma to the number of milestones the epoch index has reached."""
    return gamma ** sum(1 for m in milestones if epoch >= m)


def lr_factor(schedule: CosineSchedule | MultiStepSchedule, epoch: int, step: int, steps_per_epoch: int,
              epochs: int) -> float:
    """The factor on the base lr for optimizer step `step` (0-based, within `epoch`) of a run of `epochs`."""
    if isinstance(schedule, MultiStepSchedule):
        return multistep_factor(epoch, schedule.milestones, schedule.gamma)
    if schedule.per == "epoch":
        return cosine_factor(epoch, epochs, schedule.zeta)
    return cosine_factor(epoch * steps_per_epoch + step, epochs * steps_per_epoch, schedule.zeta)
