"""The audit matrix: a distilled set vs real subsets, hard vs protocol labels, with vs without augmentation.

Must not: search a learning rate (every arm trains with the lr the protocol resolves for the distilled set),
pick a best epoch (final-epoch top-1 only), draw unseeded randomness, or download. All training goes
through `rd3kit.api.evaluate`, so every run is cached per (protocol hash, input sha256, seed) and an
interrupted audit resumes where it stopped.

Arms (docs/metrics.md): syn (set, protocol), syn_hard (set, labels forced hard), rand (class-balanced random
real subset, selection seed = training seed, one run per seed), syn_noaug / rand_noaug (augmentation
replaced by none), herding / kcenter (deterministic subsets, protocol), full (a reference entry or a run).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from rd3kit import api
from rd3kit.baselines import select as selectors
from rd3kit.baselines import store as selstore
from rd3kit.errors import ConfigError
from rd3kit.metrics import ddranking as dd
from rd3kit.protocols import canonical_json, protocol_hash
from rd3kit.protocols.audit import AuditProtocol
from rd3kit.protocols.spec import CoupledProtocol, LabelSpec, NoAug
from rd3kit.record import environment, now
from rd3kit.sources.formats import DistilledSet
from rd3kit.sources.realdata import RealSplit

SCHEMA = "rd3kit.audit/v1"


@dataclass(frozen=True)
class FullReference:
    """Full-data top-1 (fractions), one value per seed, or a single published mean, with where it is from."""

    top1: tuple[float, ...]
    source: str


@dataclass(frozen=True)
class AuditSpec:
    """What an audit runs and how it scores; w and g are DD-Ranking's weights, stated explicitly.

    `origin` is the audit protocol's `{"ref", "sha256"}` when the spec came from one (`from_protocol`);
    None marks an ad-hoc audit whose settings came from the caller, which the record labels as such.
    """

    w: float
    g: float
    seeds: tuple[int, ...] | None = None
    baselines: tuple[str, ...] = ("herding", "kcenter")
    full: FullReference | None = None
    run_full: bool = False
    level: float = dd.DEFAULT_LEVEL
    n_boot: int = dd.DEFAULT_N_BOOT
    boot_seed: int = dd.DEFAULT_BOOT_SEED
    notes: tuple[str, ...] = ()
    origin: dict | None = None


def from_protocol(audit_protocol: AuditProtocol) -> AuditSpec:
    """The spec a released audit protocol states: seeds, baselines, A_full source, w, g and the interval."""
    full = audit_protocol.arms.full
    published = FullReference(full.top1, f"published: {full.citation}") if full.source == "published" else None
    return AuditSpec(w=audit_protocol.scores.w, g=audit_protocol.scores.g, seeds=audit_protocol.seeds,
                     baselines=audit_protocol.arms.baselines, full=published, run_full=full.source == "run",
                     level=audit_protocol.interval.level, n_boot=audit_protocol.interval.n_boot,
                     boot_seed=audit_protocol.interval.seed,
                     origin={"ref": audit_protocol.ref, "sha256": protocol_hash(audit_protocol)})


def evaluation_of(audit_protocol: AuditProtocol) -> CoupledProtocol:
    """The evaluation protocol an audit protocol names, checked against its pinned sha256 and data."""
    from rd3kit.protocols import get_protocol

    where = f"{audit_protocol.ref}: evaluation {audit_protocol.evaluation}"
    protocol = get_protocol(audit_protocol.evaluation)
    if not isinstance(protocol, CoupledProtocol):
        raise ConfigError(f"{where} is a {protocol.family} protocol; audits run coupled protocols")
    digest = protocol_hash(protocol)
    if digest != audit_protocol.evaluation_sha256:
        raise ConfigError(f"{where}: pinned sha256 {audit_protocol.evaluation_sha256[:12]}..., the released file "
                          f"hashes to {digest[:12]}...; release a new audit protocol version")
    if protocol.data != audit_protocol.data:
        raise ConfigError(f"{where}: key 'data' differs from the evaluation protocol's data")
    return protocol


def variant(protocol: CoupledProtocol, **changes) -> CoupledProtocol:
    """The protocol with `changes`, re-validated from its canonical JSON (so it gets its own hash)."""
    changed = protocol.model_copy(update=changes)
    return type(protocol).model_validate_json(canonical_json(changed.model_dump(mode="json")))


def variants(protocol: CoupledProtocol) -> dict[str, CoupledProtocol]:
    """protocol, hard (labels forced hard), and the two no-augmentation versions of those."""
    hard = protocol if protocol.labels.kind == "hard" else variant(
        protocol, labels=LabelSpec(kind="hard", loss="cross_entropy"))
    out = {"protocol": protocol, "hard": hard}
    if protocol.augmentation.name != "none":
        out["noaug"] = variant(protocol, augmentation=NoAug(name="none"))
        out["hard-noaug"] = variant(hard, augmentation=NoAug(name="none"))
    return out


def subset_set(train: RealSplit, selection: selstore.Selection, lr: float | None) -> DistilledSet:
    """A stored selection as a raw01 DistilledSet; its identity hashes train sha256, indices and lr.

    The method name is left out of the identity on purpose: identical subsets (k-center and herding both
    start at the image closest to the class mean, so they coincide at IPC 1) share cached runs.
    """
    images, labels = selstore.rebuild(selection, train)
    ident = f"{train.sha256}|{selection.flat()}|lr={lr}"
    digest = hashlib.sha256(ident.encode()).hexdigest()
    name = f"baseline:{selection.name}"
    return DistilledSet(images.to(torch.float32) / 255.0, labels, "raw01", lr, {name: digest},
                        f"{selection.name} of {train.label}", {"selection": selection.name})


def baseline_selection(method: str, train: RealSplit, ipc: int, seed: int | None) -> selstore.Selection:
    """The committed selection from reference/baselines when it matches `train`, else computed the same way."""
    from rd3kit.reference.store import reference_root

    space = None if method == "random" else selectors.PIXEL_SPACE
    path = reference_root() / "baselines" / selstore.file_name(train.dataset, method, ipc, seed)
    if path.is_file():
        stored = selstore.load(path)
        if stored.train_sha256 == train.sha256:
            return stored
    picks = selectors.select(method, train.images, train.labels, ipc, seed)
    return selstore.make_selection(picks, method=method, train=train, ipc=ipc, seed=seed, feature_space=space)


@dataclass
class _Ctx:
    protocols: dict[str, CoupledProtocol]
    test: RealSplit
    train: RealSplit
    seeds: list[int]
    runtime: api.Runtime


def _evaluate(ctx: _Ctx, dset: DistilledSet, key: str, seeds: Sequence[int]) -> dict:
    protocol = ctx.protocols[key]
    # The train split enters a run's identity only where ZCA needs it, exactly as `rd3kit eval` does, so
    # runs made by `eval` are reused here.
    train = ctx.train if protocol.data.zca is not None else None
    return api.evaluate(dset, protocol, ctx.test, train=train, seeds=list(seeds), runtime=ctx.runtime)


def _arm(records: list[dict], key: str, ctx: _Ctx, inputs: list[str]) -> dict:
    per_seed = [r for rec in records for r in rec["per_seed"]]
    top1 = [r["top1"] for r in per_seed]
    return {"protocol": key, "protocol_sha256": protocol_hash(ctx.protocols[key]), "inputs": inputs,
            "seeds": [r["seed"] for r in per_seed], "top1": top1, "mean": float(np.mean(top1)),
            "std": float(np.std(top1)), "cached": sum(bool(r.get("cached")) for r in per_seed),
            "lr": records[0]["lr"], "engine": ",".join(sorted({r.get("engine", "unrecorded") for r in per_seed}))}


def _set_arm(ctx: _Ctx, dset: DistilledSet, key: str) -> dict:
    return _arm([_evaluate(ctx, dset, key, ctx.seeds)], key, ctx, [dset.origin])


def _random_runs(ctx: _Ctx, ipc: int, lr: float | None) -> tuple[list[tuple[DistilledSet, int]], list[str]]:
    # Selection seed = training seed: the arm's spread includes the choice of subset, as "a random subset" means.
    selections = [baseline_selection("random", ctx.train, ipc, seed) for seed in ctx.seeds]
    return ([(subset_set(ctx.train, sel, lr), seed) for sel, seed in zip(selections, ctx.seeds)],
            [sel.name for sel in selections])


def _arms_together(ctx: _Ctx, key: str, arms: dict[str, tuple[list[tuple[DistilledSet, int]], list[str]]]) -> dict:
    """Arms under one protocol, as {name: ((set, seed) runs, inputs)}, through one `api.evaluate_runs` call: under
    `--engine multiseed` their runs train side by side (the set's seeds and the random subsets together)."""
    protocol = ctx.protocols[key]
    train = ctx.train if protocol.data.zca is not None else None  # as in _evaluate
    flat = [run for runs, _ in arms.values() for run in runs]
    records = api.evaluate_runs(flat, protocol, ctx.test, train=train, runtime=ctx.runtime)
    out, start = {}, 0
    for name, (runs, inputs) in arms.items():
        out[name] = _arm(records[start:start + len(runs)], key, ctx, inputs)
        start += len(runs)
    return out


def _full_arm(ctx: _Ctx, spec: AuditSpec) -> dict | None:
    if spec.full is not None:
        return {"protocol": None, "inputs": [spec.full.source], "top1": list(spec.full.top1),
                "mean": float(np.mean(spec.full.top1)), "std": float(np.std(spec.full.top1)), "seeds": None}
    if not spec.run_full:
        return None
    train, lr = ctx.train, ctx.protocols["hard"].optimizer.lr
    # The protocol's own lr, stated on the set so that protocols which read a learned lr get this one:
    # a learned lr belongs to a distilled set, never to the full data.
    whole = DistilledSet(train.images.to(torch.float32) / 255.0, train.labels, "raw01", lr,
                         {f"full:{train.origin}|lr={lr}": train.sha256}, f"full train set: {train.label}",
                         {"full_train_set": True})  # check_set: its classes need not be the same size
    return _set_arm(ctx, whole, "hard")


def _lr_of(dset: DistilledSet, protocol: CoupledProtocol) -> float | None:
    lr, source = api.resolve_lr(protocol, dset)
    return lr if source == "artifact" else None


def run_arms(dset: DistilledSet, ctx: _Ctx, spec: AuditSpec, ipc: int) -> dict[str, dict]:
    """Every training arm the scores need; returns arm name -> record (seeds, per-seed top1, cache hits)."""
    soft = ctx.protocols["protocol"].labels.kind != "hard"
    # Real subsets carry no stored logits: under a soft-label protocol they train with hard labels.
    subset_key, subset_noaug = ("hard", "hard-noaug") if soft else ("protocol", "noaug")
    lr = _lr_of(dset, ctx.protocols["protocol"])  # subsets train with the set's own lr: no search
    syn = ([(dset, seed) for seed in ctx.seeds], [dset.origin])
    arms = {}
    for syn_name, syn_key, rand_name, rand_key in [("syn", "protocol", "rand", subset_key),
                                                     ("syn_noaug", "noaug", "rand_noaug", subset_noaug)]:
        if syn_key not in ctx.protocols:
            continue
        if syn_key == rand_key:  # the set and its random subsets train under one protocol: side by side
            arms.update(_arms_together(ctx, syn_key, {syn_name: syn, rand_name: _random_runs(ctx, ipc, lr)}))
        else:  # soft labels: the set under the protocol, the subsets under its hard-label variant
            arms[syn_name] = _set_arm(ctx, dset, syn_key)
            arms.update(_arms_together(ctx, rand_key, {rand_name: _random_runs(ctx, ipc, lr)}))
    arms["syn_hard"] = _set_arm(ctx, dset, "hard") if soft else dict(arms["syn"], same_as="syn")
    order = ["syn", "syn_hard", "rand", "syn_noaug", "rand_noaug"]
    arms = {name: arms[name] for name in order if name in arms}
    for method in spec.baselines:
        selection = baseline_selection(method, ctx.train, ipc, None)
        arms[method] = _set_arm(ctx, subset_set(ctx.train, selection, lr), subset_key)
    full = _full_arm(ctx, spec)
    if full is not None:
        arms["full"] = full
    return arms


def score(arms: dict[str, dict], spec: AuditSpec) -> dict:
    """HLR, IOR, LRS, ARS (fractions) with bootstrap intervals, gains over each baseline, and the labelled
    DD-Ranking 0.2.0 percent variant. A score whose arms were not run is None, with the reason."""
    ci = {"level": spec.level, "n_boot": spec.n_boot, "seed": spec.boot_seed}
    top = {k: v["top1"] for k, v in arms.items()}
    out: dict = {"w": spec.w, "g": spec.g, "ior": dd.ior_interval(top["syn"], top["rand"], **ci).as_dict()}
    missing = "needs a full-data reference (--full-ref ENTRY or --full-run)"
    out["hlr"] = dd.hlr_interval(top["full"], top["syn_hard"], **ci).as_dict() if "full" in top else missing
    out["lrs"] = (dd.lrs_interval(top["full"], top["syn_hard"], top["syn"], top["rand"], w=spec.w, **ci).as_dict()
                  if "full" in top else missing)
    if "syn_noaug" in top:
        out["ior_noaug"] = dd.ior_interval(top["syn_noaug"], top["rand_noaug"], **ci).as_dict()
    out["ars"] = (dd.ars_interval(top["syn"], top["rand"], top["syn_noaug"], top["rand_noaug"], g=spec.g, **ci)
                  .as_dict() if "syn_noaug" in top else "protocol has no augmentation: ARS has no with-aug arm")
    out["gain_over"] = {m: dd.ior_interval(top["syn"], top[m], **ci).as_dict() for m in spec.baselines}
    out["ddranking_0_2_0_percent_variant"] = _percent_variant(out, spec)
    return out


def _percent_variant(scores: dict, spec: AuditSpec) -> dict:
    ior_pct = 100 * scores["ior"]["point"]
    compat = {"note": "DD-Ranking 0.2.0 unit bug (percent inputs); for recognising its numbers only, never to rank"}
    if isinstance(scores["hlr"], dict):
        compat["lrs"] = dd.lrs_percent_compat(100 * scores["hlr"]["point"], ior_pct, w=spec.w)
    if isinstance(scores["ars"], dict):
        compat["ars"] = dd.ars_percent_compat(ior_pct, 100 * scores["ior_noaug"]["point"], g=spec.g)
    return compat


def audit(dset: DistilledSet, protocol: CoupledProtocol, test: RealSplit, train: RealSplit, spec: AuditSpec,
          runtime: api.Runtime = api.Runtime()) -> dict:
    """Run the matrix and score it; returns the audit record (every accuracy with its seeds)."""
    started = time.perf_counter()
    if train.dataset != protocol.data.name:
        raise ConfigError(f"train split is {train.dataset}, {protocol.ref} is for {protocol.data.name}")
    ipc = api.check_set(dset, protocol)["ipc"]
    seeds = list(protocol.seeds if spec.seeds is None else spec.seeds)
    protos = variants(protocol)
    ctx = _Ctx(protos, test, train, seeds, runtime)
    arms = run_arms(dset, ctx, spec, ipc)
    notes = list(spec.notes) + _notes(protocol, arms)
    if spec.origin is None:
        notes.insert(0, "AD-HOC audit: seeds, baselines, w, g and A_full came from the caller, not from a "
                        "released audit protocol (e.g. ddranking-dc-cifar10@v1)")
    return {
        "schema": SCHEMA, "created": now(),
        "protocol": {"ref": protocol.ref, "sha256": protocol_hash(protocol)},
        "audit_protocol": spec.origin,
        "variants": {k: {"sha256": protocol_hash(p), "labels": p.labels.kind, "augmentation": p.augmentation.name}
                     for k, p in protos.items()},
        "set": {"origin": dset.origin, "space": dset.space, "files": dset.files, "ipc": ipc, **dset.recipe},
        "train": train.describe(), "test": test.describe(), "seeds": seeds,
        "metric": protocol.metric, "arms": arms, "scores": score(arms, spec), "notes": notes,
        "environment": environment(runtime.device), "wall_s": round(time.perf_counter() - started, 3),
    }


def _notes(protocol: CoupledProtocol, arms: dict[str, dict]) -> list[str]:
    notes = ["random subsets: class-balanced, selection seed = training seed (baselines/select.py)",
             "no learning-rate search: every arm uses the lr resolved for the distilled set"]
    if protocol.labels.kind != "hard":
        notes.append("real subsets have no stored logits: their arms train with hard labels (protocol 'hard')")
    if len(set(arms["syn"]["seeds"])) == 1:
        notes.append("one seed per arm: the intervals have zero width and say nothing about seed noise")
    full = arms.get("full")
    if full is not None and len(full["top1"]) == 1:
        notes.append("full-data reference is a single value: treated as a constant in the intervals")
    return notes


def full_from_entry(name: str, protocol: CoupledProtocol) -> tuple[FullReference, list[str]]:
    """A full-data reference from a reference entry (claim: its mean; reproduction: its per-seed values)."""
    from rd3kit.reference.store import Claim, get_entry

    entry = get_entry(name)
    if entry.dataset != protocol.data.name:
        raise ConfigError(f"reference entry {name} is for {entry.dataset}; {protocol.ref} is for {protocol.data.name}")
    values = (entry.mean,) if isinstance(entry, Claim) else tuple(entry.top1)
    notes = [] if entry.protocol == protocol.ref else [
        f"full-data reference {name} was measured under {entry.protocol}, not {protocol.ref}"]
    return FullReference(values, f"reference entry {name} ({entry.protocol})"), notes
