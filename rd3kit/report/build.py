"""Gather reference entries and result/audit records into the report's plain data model.

Must not: render, plot or write files, or hold a number of its own: every value comes from reference/ or a
record, and every verdict from `rd3kit.reference.verdict.verify`.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from rd3kit.errors import ConfigError, DataError
from rd3kit.protocols import canonical_json, get_protocol, protocol_hash
from rd3kit.record import read_json
from rd3kit.reference.store import Claim, Entry, Reproduction, load_all
from rd3kit.reference.verdict import Verdict, candidates, verify

RESULT_SCHEMAS = ("rd3kit.result/v1", "rd3kit.decoupled-result/v1")
AUDIT_SCHEMA = "rd3kit.audit/v1"
# Audit arms that are baselines, and the method name each is shown under.
AUDIT_BASELINES = {"rand": "random", "herding": "herding", "kcenter": "kcenter"}
# Scores an audit record may hold, in the order shown.
AUDIT_SCORES = ("lrs", "ars", "hlr", "ior", "ior_noaug")


@dataclass(frozen=True)
class ProtocolInfo:
    """A protocol as a number was measured under: id@vN, sha256 and the resolved spec (None if unknown)."""

    ref: str
    sha256: str
    spec: dict | None
    note: str = ""

    @property
    def anchor(self) -> str:
        return "spec-" + re.sub(r"[^a-z0-9]+", "-", f"{self.ref}-{self.sha256[:12]}".lower())


@dataclass(frozen=True)
class Measure:
    """A top-1 number (fractions) and where it comes from; per-seed values when the source kept them."""

    mean: float
    std: float | None
    n: int | None
    source: str
    ref: str
    top1: tuple[float, ...] = ()
    seeds: tuple[int, ...] = ()
    tag: str = ""  # short name of the source (a claim's source id, "rd3kit run", "result", "audit")


@dataclass(frozen=True)
class Score:
    """A DD-Ranking score (fraction units) with its interval, or the reason it is missing."""

    name: str
    point: float | None = None
    low: float | None = None
    high: float | None = None
    level: float | None = None
    method: str = ""
    missing: str = ""


@dataclass(frozen=True)
class Row:
    """One leaderboard line: a reference number, a reproduced number, the verdict between them."""

    dataset: str
    ipc: int
    method: str
    protocol: str  # anchor of a ProtocolInfo in Report.protocols
    claimed: Measure | None = None
    reproduced: Measure | None = None
    verdict: Verdict | None = None
    baseline: bool = False
    ior: Score | None = None
    unjudged: str = "not run"  # the status shown when there is no verdict, and why

    @property
    def status(self) -> str:
        return self.verdict.status if self.verdict is not None else self.unjudged


@dataclass(frozen=True)
class Group:
    dataset: str
    ipc: int
    rows: tuple[Row, ...]
    baselines: tuple[Row, ...]


@dataclass(frozen=True)
class AuditView:
    """One audit record: its arms (top-1 per seed) and its scores with intervals."""

    name: str
    sha256: str
    origin: str
    dataset: str
    ipc: int
    protocol: str
    arms: tuple[tuple[str, Measure, str], ...]  # (arm, measure, protocol anchor or "")
    scores: tuple[Score, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class InputFile:
    name: str
    sha256: str
    schema: str


@dataclass(frozen=True)
class Report:
    groups: tuple[Group, ...]
    audits: tuple[AuditView, ...]
    protocols: dict[str, ProtocolInfo]
    inputs: tuple[InputFile, ...]
    n_entries: int
    notes: tuple[str, ...] = ()

    def rows(self) -> list[Row]:
        return [r for g in self.groups for r in (*g.rows, *g.baselines)]


@dataclass
class _Acc:
    """Mutable collector used while building; frozen into a Report at the end."""

    rows: list[Row] = field(default_factory=list)
    protocols: dict[str, ProtocolInfo] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def protocol(self, info: ProtocolInfo) -> str:
        self.protocols.setdefault(info.anchor, info)
        return info.anchor


def released_info(ref: str, sha256: str) -> ProtocolInfo:
    """The released protocol `ref`, with its spec only when it hashes to `sha256`."""
    try:
        protocol = get_protocol(ref)
    except ConfigError as exc:
        return ProtocolInfo(ref, sha256, None, f"not a released protocol here: {exc}")
    digest = protocol_hash(protocol)
    if digest != sha256:
        return ProtocolInfo(ref, sha256, None, f"released {ref} hashes to {digest}, not to this sha256")
    return ProtocolInfo(ref, sha256, protocol.model_dump(mode="json"))


def embedded_info(ref: str, sha256: str, spec: dict | None) -> ProtocolInfo:
    """A record's embedded spec when it hashes to the record's sha256, else the released one when that does."""
    digest = None if spec is None else hashlib.sha256(canonical_json(spec).encode()).hexdigest()
    if digest == sha256:
        return ProtocolInfo(ref, sha256, spec)
    released = released_info(ref, sha256)
    if spec is None or released.spec is not None:
        return released
    return replace(released, note=f"the record's embedded spec hashes to {digest}, not to its sha256; {released.note}")


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry_measure(entry: Entry) -> Measure:
    if isinstance(entry, Claim):
        source = entry.source.citation + (f", {entry.source.table}" if entry.source.table else "")
        return Measure(entry.mean, entry.std, entry.n, source, entry.name, tag=entry.source.id)
    source = f"rd3kit {entry.rd3kit} run ({entry.git_sha or 'no git sha'}, {entry.device}, torch {entry.torch})"
    return Measure(entry.mean, entry.std, len(entry.top1), source, entry.name, tuple(entry.top1), tuple(entry.seeds),
                   "rd3kit run")


def record_measure(record: dict, name: str) -> Measure:
    top1 = [float(v) for v in record["top1"]]
    env = record.get("environment") or {}
    source = f"result {name}" + (f" (rd3kit {env['rd3kit']}, {env.get('device', '?')})" if "rd3kit" in env else "")
    return Measure(float(np.mean(top1)), float(np.std(top1)), len(top1), source, name, tuple(top1),
                   tuple(int(s) for s in record["seeds"]), "result")


def _baseline_methods() -> tuple[str, ...]:
    from rd3kit.baselines.select import METHODS

    return METHODS


def _entry_rows(entries: dict[str, Entry], acc: _Acc, baselines: tuple[str, ...]) -> None:
    """Rows for reproduction entries (against their claim when linked)."""
    for entry in entries.values():
        if not isinstance(entry, Reproduction):
            continue
        anchor = acc.protocol(released_info(entry.protocol, entry.protocol_sha256))
        claim = entries.get(entry.claim) if entry.claim else None
        verdict = None
        if isinstance(claim, Claim):
            pseudo = {"protocol": {"ref": entry.protocol, "sha256": entry.protocol_sha256}, "top1": list(entry.top1),
                      "seeds": list(entry.seeds)}
            verdict = verify(pseudo, claim)
        acc.rows.append(Row(entry.dataset, entry.ipc, entry.method, anchor,
                            entry_measure(claim) if isinstance(claim, Claim) else None, entry_measure(entry),
                            verdict, entry.method in baselines, unjudged="reference run (no claim)"))


def _claim_rows(entries: dict[str, Entry], acc: _Acc) -> None:
    """A "not run" row for every claim that no reproduction entry or record was judged against."""
    covered = {r.claimed.ref for r in acc.rows if r.claimed is not None}
    for entry in entries.values():
        if isinstance(entry, Claim) and entry.name not in covered:
            anchor = acc.protocol(released_info(entry.protocol, entry.protocol_sha256))
            acc.rows.append(Row(entry.dataset, entry.ipc, entry.method, anchor, entry_measure(entry)))


def _targets(record: dict, entries: dict[str, Entry], ipc: int | None) -> tuple[list[Entry], str]:
    """Entries a record is judged against, and why none when empty: as `rd3kit verify` picks them, else the
    claims under the same protocol hash and IPC, provided they are all of one method (a record does not
    name its method, so a protocol shared by several methods cannot say which claim it reproduces)."""
    found = candidates(record, entries) if "files" in record["inputs"]["set"] else []
    if found:
        return found, ""
    sha = record["protocol"]["sha256"]
    claims = [e for e in entries.values() if isinstance(e, Claim) and e.protocol_sha256 == sha and e.ipc == ipc]
    methods = sorted({c.method for c in claims})
    if len(methods) > 1:
        return [], f"claims of several methods ({', '.join(methods)}) share this protocol and IPC; not judged"
    return claims, "" if claims else "no reference entry matches"


def _record_keys(record: dict, where: str) -> None:
    for key in ("protocol", "top1", "seeds", "inputs"):
        if key not in record:
            raise DataError(f"{where}: result record has no {key!r} key (expected a record written by "
                            "`rd3kit eval --out`, `rd3kit reproduce` or `rd3kit audit --out`)")
    if not record["top1"]:
        raise DataError(f"{where}: 'top1' is empty; a result needs at least one seed's top-1")


def _audit_keys(record: dict, where: str) -> None:
    for key in ("protocol", "set", "arms"):
        if key not in record:
            raise DataError(f"{where}: audit record has no {key!r} key (expected a record of `rd3kit audit --out`)")


def _record_rows(record: dict, name: str, entries: dict[str, Entry], acc: _Acc, baselines: tuple[str, ...]) -> None:
    proto = record["protocol"]
    info = embedded_info(proto["ref"], proto["sha256"], proto.get("spec"))
    anchor = acc.protocol(info)
    s = record["inputs"]["set"]
    ipc = s.get("ipc", s.get("ipc_checked"))
    dataset = (info.spec or {}).get("data", {}).get("name") or record["inputs"].get("test", {}).get("dataset", "?")
    measure = record_measure(record, name)
    targets, why = _targets(record, entries, ipc)
    if not targets:
        acc.notes.append(f"{name}: {why} (protocol {proto['ref']} {proto['sha256'][:12]}, IPC {ipc})")
        method = "random" if s.get("kind") == "random-subset" else str(s.get("origin") or name)
        status = "not judged" if "several methods" in why else "no reference entry"
        acc.rows.append(Row(dataset, ipc, method, anchor, None, measure, None, method in baselines, unjudged=status))
    for entry in targets:
        acc.rows.append(Row(entry.dataset, entry.ipc, entry.method, anchor, entry_measure(entry), measure,
                            verify(record, entry), entry.method in baselines))


def _score(name: str, value: object) -> Score:
    if isinstance(value, dict):
        return Score(name, value["point"], value["low"], value["high"], value["level"], value.get("method", ""))
    return Score(name, missing=str(value))


def _audit_scores(scores: dict) -> tuple[Score, ...]:
    out = [_score(k, scores[k]) for k in AUDIT_SCORES if k in scores]
    out += [_score(f"gain over {m}", v) for m, v in sorted(scores.get("gain_over", {}).items())]
    return tuple(out)


def _variant_infos(ref: str, sha256: str, variants: dict) -> dict[str, ProtocolInfo]:
    """Resolved specs of an audit's protocol variants (rebuilt the way rd3kit.audit builds them)."""
    base = released_info(ref, sha256)
    rebuilt = {}
    if base.spec is not None:
        from rd3kit.audit import variants as make_variants

        rebuilt = make_variants(get_protocol(ref))
    out = {}
    for key, meta in variants.items():
        if meta["sha256"] == sha256:
            out[key] = base
            continue
        p = rebuilt.get(key)
        ok = p is not None and protocol_hash(p) == meta["sha256"]
        out[key] = ProtocolInfo(f"{ref} [{key}]", meta["sha256"], p.model_dump(mode="json") if ok else None,
                                "" if ok else "variant could not be rebuilt to this sha256")
    return out


def _audit_view(record: dict, name: str, sha: str, acc: _Acc, baselines: tuple[str, ...]) -> AuditView:
    proto = record["protocol"]
    infos = _variant_infos(proto["ref"], proto["sha256"], record.get("variants", {}))
    anchor = acc.protocol(released_info(proto["ref"], proto["sha256"]))
    dataset, ipc = record.get("test", {}).get("dataset", "?"), record["set"]["ipc"]
    arms = []
    for arm, data in record.get("arms", {}).items():
        info = infos.get(data.get("protocol") or "")
        arm_anchor = acc.protocol(info) if info is not None else ""
        m = Measure(float(data["mean"]), float(data["std"]), len(data["top1"]), ", ".join(data.get("inputs") or []),
                    f"{name}#{arm}", tuple(data["top1"]), tuple(data.get("seeds") or ()), "audit")
        arms.append((arm, m, arm_anchor))
        if arm in AUDIT_BASELINES:
            method = AUDIT_BASELINES[arm]
            acc.rows.append(Row(dataset, ipc, method, arm_anchor or anchor, None, m, None, method in baselines,
                                unjudged="audit arm"))
    scores = _audit_scores(record.get("scores") or {})
    return AuditView(name, sha, record["set"].get("origin", "?"), dataset, ipc, anchor, tuple(arms), scores,
                     tuple(record.get("notes") or ()))


def _with_ior(rows: list[Row]) -> list[Row]:
    """IOR (DD-Ranking, rd3kit.metrics.ddranking) of each reproduced method against a random baseline measured
    per seed under the same protocol, dataset and IPC."""
    from rd3kit.metrics.ddranking import ior_interval

    randoms: dict[tuple, Measure] = {}
    for r in rows:  # reference entries come first, so a committed random reproduction is preferred
        if r.baseline and r.method == "random" and r.reproduced is not None and r.reproduced.top1:
            randoms.setdefault((r.dataset, r.ipc, r.protocol), r.reproduced)
    out = []
    for r in rows:
        rand = randoms.get((r.dataset, r.ipc, r.protocol))
        if r.baseline or rand is None or r.reproduced is None or not r.reproduced.top1:
            out.append(r)
            continue
        iv = ior_interval(r.reproduced.top1, rand.top1)
        out.append(replace(r, ior=Score("ior", iv.point, iv.low, iv.high, iv.level,
                                        f"vs random {rand.ref}; {iv.method}")))
    return out


def _sort_key(row: Row) -> tuple:
    return (row.method.lower(), row.claimed.ref if row.claimed else "", row.reproduced.ref if row.reproduced else "")


def _groups(rows: list[Row]) -> tuple[Group, ...]:
    by_key: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for r in rows:
        by_key[(r.dataset, r.ipc if r.ipc is not None else -1)].append(r)
    return tuple(Group(d, i, tuple(sorted((r for r in rs if not r.baseline), key=_sort_key)),
                       tuple(sorted((r for r in rs if r.baseline), key=_sort_key)))
                 for (d, i), rs in sorted(by_key.items()))


def _read_inputs(paths: Sequence[Path]) -> list[tuple[Path, dict, str]]:
    loaded = []
    for path in paths:
        record = read_json(Path(path))
        if not isinstance(record, dict):
            raise DataError(f"{path}: expected a JSON object (a result or audit record)")
        schema = record.get("schema")
        if schema not in (*RESULT_SCHEMAS, AUDIT_SCHEMA):
            raise DataError(f"{path}: schema expected one of {[*RESULT_SCHEMAS, AUDIT_SCHEMA]}, got {schema!r}")
        loaded.append((Path(path), record, _sha256_file(Path(path))))
    names = [p.name for p, _, _ in loaded]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"result files must have distinct names (rows cite them by name); repeated: {dupes}")
    return loaded


def build_report(results: Sequence[Path] = (), root: Path | None = None) -> Report:
    """The report's data: reference entries under `root` (default reference/) and the given records."""
    entries = load_all(root)
    baselines = _baseline_methods()
    acc = _Acc()
    _entry_rows(entries, acc, baselines)
    inputs, audits = [], []
    for path, record, sha in _read_inputs(results):
        inputs.append(InputFile(path.name, sha, record["schema"]))
        if record["schema"] == AUDIT_SCHEMA:
            _audit_keys(record, str(path))
            audits.append(_audit_view(record, path.name, sha, acc, baselines))
            continue
        _record_keys(record, str(path))
        _record_rows(record, path.name, entries, acc, baselines)
    _claim_rows(entries, acc)
    protocols = dict(sorted(acc.protocols.items(), key=lambda kv: (kv[1].ref, kv[1].sha256)))
    return Report(_groups(_with_ior(acc.rows)), tuple(audits), protocols, tuple(inputs), len(entries),
                  tuple(acc.notes))

