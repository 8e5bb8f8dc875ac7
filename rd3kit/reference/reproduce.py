"""`reproduce`: fetch an entry's pinned inputs, rerun its protocol with its seeds, verify the numbers.

Coupled entries rerun through `api.evaluate`; decoupled ones (entries with a `teacher`) through the same
`run_eval` that `rd3kit eval-decoupled` calls, with the teacher found under the data folder or $RD3KIT_HOME.

Must not: accept inputs whose sha256 differs from the entry's pins, or change a protocol: the released
protocol must hash to the entry's recorded sha256.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from rd3kit import api
from rd3kit.errors import ConfigError, DataError
from rd3kit.protocols import get_protocol, protocol_hash
from rd3kit.reference.store import (Claim, Entry, Reproduction, SetInput, SplitInput, TeacherInput, load_all,
                                    rd3kit_home)
from rd3kit.reference.verdict import Verdict, verify
from rd3kit.sources.formats import DistilledSet, sha256_file
from rd3kit.sources.realdata import RealSplit

DEFAULT_ENTRIES = ("digits-random-ipc10-coupled-digits-v1",)


def default_data_dir() -> Path | None:
    """`$RD3KIT_DATA`, else `../shared/data` next to the source checkout, if it exists."""
    env = os.environ.get("RD3KIT_DATA")
    if env:
        return Path(env)
    guess = Path(__file__).resolve().parents[3] / "shared" / "data"
    return guess if guess.is_dir() else None


@dataclass
class Outcome:
    entry: Reproduction
    result: dict
    verdicts: list[Verdict]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)


def _shared_file(rel: str, sha256: str | None, data_dir: Path | None, entry: str) -> Path:
    if data_dir is None:
        raise DataError(f"{entry}: needs {rel} from the shared data folder; pass --data-dir or set RD3KIT_DATA")
    path = data_dir / rel
    if not path.is_file():
        raise DataError(f"{entry}: {path} not found (expected the file with sha256 {sha256})")
    if sha256 is not None and sha256_file(path) != sha256:
        raise DataError(f"{path}: sha256 differs from the pin {sha256} in reference entry {entry}; refusing to use it")
    return path


def load_set(spec: SetInput, data_dir: Path | None, entry: str) -> DistilledSet:
    if spec.source == "embedded":
        from rd3kit.embedded import digits_subset

        method, ipc, seed = spec.path.split("/")[1:]  # digits/{method}/ipc{N}/seed{S}
        dset = digits_subset(method, int(ipc.removeprefix("ipc")), int(seed.removeprefix("seed")))
        if spec.sha256 is not None and spec.sha256 not in dset.files.values():
            raise DataError(f"{entry}: embedded set {spec.path} rebuilt with a different sha256 than pinned")
        return dset
    if spec.source == "shared-data":
        from rd3kit.sources.formats import load_local

        path = _shared_file(spec.path, spec.sha256, data_dir, entry)
        return load_local([path], spec.space, spec.select, spec.idc_factor)
    from rd3kit.sources import resolve_set

    return resolve_set([spec.path], space=spec.space, select=spec.select, idc_factor=spec.idc_factor)


def load_split_input(spec: SplitInput, dataset: str, split: str, data_dir: Path | None, entry: str) -> RealSplit:
    if spec.source == "embedded":
        from rd3kit.embedded import digits_split

        got = digits_split(split)
    elif spec.source == "shared-data":
        from rd3kit.sources.realdata import from_npz

        got = from_npz(_shared_file(spec.path, spec.sha256, data_dir, entry), dataset, split)
    else:
        from rd3kit.sources.realdata import from_torchvision

        got = from_torchvision(Path(spec.path), dataset, split)
    if got.sha256 != spec.sha256:
        raise DataError(f"{entry}: {split} split sha256 {got.sha256[:12]} differs from the pin {spec.sha256[:12]}")
    return got


def _teacher_root(spec: TeacherInput, data_dir: Path | None) -> Path | None:
    return data_dir if spec.root == "shared-data" else rd3kit_home()


def missing_inputs(entry: Reproduction, data_dir: Path | None) -> str | None:
    """What an entry needs that is not on this machine (for verify-all to skip it), or None."""
    if data_dir is None and "shared-data" in (entry.set.source, entry.test.source):
        return "needs the shared data folder: --data-dir or RD3KIT_DATA"
    if entry.teacher is not None:
        root = _teacher_root(entry.teacher, data_dir)
        where = "the shared data folder" if entry.teacher.root == "shared-data" else "$RD3KIT_HOME"
        if root is None:
            return f"needs its teacher {entry.teacher.path} from {where}: --data-dir or RD3KIT_DATA"
        for rel in filter(None, (entry.teacher.path, entry.teacher.record)):
            if not (root / rel).is_file():
                return f"needs its teacher file {root / rel} ({where}; sha256 {entry.teacher.sha256[:12]}...)"
    return None


def _teacher_args(spec: TeacherInput, data_dir: Path | None, entry: str) -> tuple[Path, str]:
    """The teacher file (sha256 checked) and the --teacher-source to pass, its record re-rooted here."""
    root = _teacher_root(spec, data_dir)
    if root is None:
        raise DataError(f"{entry}: needs its teacher {spec.path} from the shared data folder; pass --data-dir")
    path = root / spec.path
    if not path.is_file():
        raise DataError(f"{entry}: teacher {path} not found (expected the file with sha256 {spec.sha256})")
    if sha256_file(path) != spec.sha256:
        raise DataError(f"{path}: sha256 differs from the pin {spec.sha256} in reference entry {entry}; refusing it")
    if spec.record is None:
        return path, spec.source
    return path, f"rd3kit-teacher:{root / spec.record}"


def _evaluate_decoupled(entry: Reproduction, protocol, data_dir: Path | None, runtime: api.Runtime) -> dict:
    from rd3kit.api_decoupled import EvalArgs, run_eval
    from rd3kit.reference.record import indices_sha256

    s = entry.set
    if s.source != "shared-data" or entry.test.source != "shared-data":
        raise ConfigError(f"{entry.name}: decoupled entries rerun from shared-data files only, got set {s.source}, "
                          f"test {entry.test.source}")
    set_path = _shared_file(s.path, s.sha256, data_dir, entry.name)
    test_path = _shared_file(entry.test.path, entry.test.sha256, data_dir, entry.name)
    teacher, source = _teacher_args(entry.teacher, data_dir, entry.name)
    text = lambda v: None if v is None else ",".join(repr(float(x)) for x in v)  # noqa: E731
    subset = (entry.ipc, s.subset_seed) if s.subset_seed is not None else (None, None)
    args = EvalArgs(set_path, teacher, source, test_path, space=None if s.subset_seed is not None else s.space,
                    set_norm=(text(s.set_mean), text(s.set_std)), select=s.select, subset=subset,
                    seeds=",".join(map(str, entry.seeds)), device=runtime.device)
    # Like the coupled path's tqdm bars: epoch lines on stderr when the runtime asks for progress.
    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if runtime.progress else None
    result = run_eval(protocol, args, progress=progress)
    drawn = result["inputs"]["set"].get("indices")
    if s.indices_sha256 is not None and (drawn is None or indices_sha256(drawn) != s.indices_sha256):
        raise DataError(f"{entry.name}: the random subset drawn now differs from the pinned indices "
                        f"(sha256 {s.indices_sha256[:12]}...)")
    return result


def reproduce(entry: Reproduction, data_dir: Path | None, runtime: api.Runtime) -> Outcome:
    """Rerun one reproduction entry and verify against it and its linked claim."""
    protocol = get_protocol(entry.protocol)
    if protocol_hash(protocol) != entry.protocol_sha256:
        raise ConfigError(f"{entry.name}: {entry.protocol} now hashes to {protocol_hash(protocol)[:12]}, "
                          f"the entry pins {entry.protocol_sha256[:12]}")
    if entry.teacher is not None:
        result = _evaluate_decoupled(entry, protocol, data_dir, runtime)
    else:
        dset = load_set(entry.set, data_dir, entry.name)
        test = load_split_input(entry.test, entry.dataset, "test", data_dir, entry.name)
        train = load_split_input(entry.train, entry.dataset, "train", data_dir, entry.name) if entry.train else None
        result = api.evaluate(dset, protocol, test, train=train, seeds=entry.seeds, runtime=runtime)
    verdicts = [verify(result, entry)]
    entries = load_all()
    if entry.claim and entry.claim in entries:
        verdicts.append(verify(result, entries[entry.claim]))
    return Outcome(entry, result, verdicts)


def reproductions_for(name: str) -> list[Reproduction]:
    """An entry name -> the reproductions to run: itself, or those linked to a claim."""
    entries = load_all()
    if name not in entries:
        from rd3kit.reference.store import get_entry

        get_entry(name)  # raises with a did-you-mean
    entry: Entry = entries[name]
    if isinstance(entry, Claim):
        linked = [e for e in entries.values() if isinstance(e, Reproduction) and e.claim == name]
        if not linked:
            raise ConfigError(f"claim {name} has no reproduction recipe yet (no reproduction entry links to it); "
                              f"run `rd3kit eval` on its artifact with --protocol {entry.protocol} and `rd3kit verify`")
        return linked
    return [entry]
