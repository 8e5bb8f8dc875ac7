"""`rd3kit sweep`: fan (set x protocol x seed) out through submitit (Slurm or local processes), gather records.

Must not: train or score anything itself (each job runs rd3kit.api.evaluate on one seed, and the gather is
api.evaluate reading the per-seed cache), submit a job whose per-seed cache file exists, or import submitit
before a sweep runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rd3kit import api
from rd3kit.errors import ConfigError, RD3Error
from rd3kit.record import environment, now, read_json, write_json

SCHEMA = "rd3kit.sweep/v1"
EXECUTORS = ("local", "slurm", "debug")
T = TypeVar("T")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SetEntry(_Strict):
    """One distilled set, named as `rd3kit eval SET...` takes it (files, folder, catalogue name, hf://, embedded:)."""

    name: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    source: list[str] = Field(min_length=1)
    space: Optional[Literal["raw01", "normalized", "zca"]] = None
    select: Optional[int] = None
    idc_factor: Optional[int] = None


class DataEntry(_Strict):
    """Where real splits come from: a .npz per dataset name, or torchvision folders under `root`."""

    test: dict[str, str] = Field(default_factory=dict)
    train: dict[str, str] = Field(default_factory=dict)
    root: Optional[str] = None
    download: bool = False


class SweepSpec(_Strict):
    """A sweep file: every set is evaluated under every protocol, over `seeds` (or each protocol's own list)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    schema_: Literal["rd3kit.sweep/v1"] = Field(alias="schema")
    sets: list[SetEntry] = Field(min_length=1)
    protocols: list[str] = Field(min_length=1)
    seeds: Optional[list[int]] = Field(default=None, min_length=1)
    data: DataEntry = Field(default_factory=DataEntry)


def _parse(path: Path) -> object:
    text = path.read_text(encoding="utf-8") if path.is_file() else None
    if text is None:
        raise ConfigError(f"{path}: sweep spec not found")
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    raise ConfigError(f"{path}: a sweep spec is .json, .yaml or .yml, got {path.suffix or 'no suffix'!r}")


def _local(value: str, base: Path) -> str:
    """A relative path that exists next to the spec file, made absolute; anything else (names, URIs) as is."""
    return str((base / value).resolve()) if not Path(value).is_absolute() and (base / value).exists() else value


def load_spec(path: Path) -> SweepSpec:
    """Load a sweep spec strictly; paths relative to the file are resolved. Errors name the file and key."""
    try:
        spec = SweepSpec.model_validate(_parse(path))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        more = f"; and {len(exc.errors()) - 1} more problem(s)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{path}: {where}: {err['msg']}{got}{more}") from None
    _check_unique(path, "sets", [s.name for s in spec.sets])
    _check_unique(path, "protocols", spec.protocols)
    if spec.seeds is not None:
        _check_unique(path, "seeds", spec.seeds)
    base = path.resolve().parent
    sets = [s.model_copy(update={"source": [_local(v, base) for v in s.source]}) for s in spec.sets]
    data = spec.data.model_copy(update={
        "test": {k: _local(v, base) for k, v in spec.data.test.items()},
        "train": {k: _local(v, base) for k, v in spec.data.train.items()},
        "root": _local(spec.data.root, base) if spec.data.root else None})
    protocols = [_local(p, base) if p.endswith(".json") else p for p in spec.protocols]
    for i, ref in enumerate(protocols):
        _protocol(ref, f"{path}: protocols.{i}")
    return spec.model_copy(update={"sets": sets, "data": data, "protocols": protocols})


def _check_unique(path: Path, key: str, values: list) -> None:
    for i, value in enumerate(values):
        if value in values[:i]:
            raise ConfigError(f"{path}: {key}.{i}: {value!r} is listed twice; each entry must be unique")


def _protocol(ref: str, where: str):
    from rd3kit.protocols import get_protocol

    try:
        protocol = get_protocol(ref)
    except RD3Error as exc:
        raise type(exc)(f"{where}: {exc}") from None
    if protocol.family != "coupled":
        raise ConfigError(f"{where}: {protocol.ref} is a {protocol.family} protocol; sweeps run the coupled family")
    return protocol


@dataclass(frozen=True)
class Job:
    """One (set, protocol, seed) run; pickled by submitit and sent to a worker."""

    entry: SetEntry
    protocol: str
    seed: int
    data: DataEntry
    runtime: api.Runtime
    key: str  # api.run_key, computed by the driver: the cache file this job must leave
    jobs_dir: Path
    threads: Optional[int] = None


def _load_set(entry: SetEntry):
    from rd3kit.sources import resolve_set

    return resolve_set(list(entry.source), space=entry.space, select=entry.select, idc_factor=entry.idc_factor)


def _load_splits(protocol, data: DataEntry) -> tuple:
    """The protocol's test split, and its train split when ZCA needs one (as `rd3kit eval` does)."""
    from rd3kit.sources.realdata import load_split

    def split(name: str):
        src = getattr(data, name).get(protocol.data.name)
        return load_split(protocol.data.name, name, Path(src) if src else None,
                          Path(data.root) if data.root else None, data.download)

    return split("test"), split("train") if protocol.data.zca is not None else None


def run_job(job: Job) -> dict:
    """Worker side: evaluate one seed (api.evaluate writes its cache file) and leave a provenance note."""
    import platform

    import torch

    from rd3kit.errors import DataError
    from rd3kit.protocols import protocol_hash

    threads = torch.get_num_threads()
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    try:  # the debug executor runs jobs in the caller's process: give its thread count back
        protocol = _protocol(job.protocol, f"protocol {job.protocol}")
        dset, (test, train) = _load_set(job.entry), _load_splits(protocol, job.data)
        key = api.run_key(protocol_hash(protocol), dset, test, train, job.seed)
        if key != job.key:
            raise DataError(f"set {job.entry.name} x {protocol.ref} seed {job.seed}: inputs differ on this worker "
                            "from the submitting machine (changed file or data path?); rerun where both agree")
        run = api.evaluate(dset, protocol, test, train=train, seeds=[job.seed], runtime=job.runtime)["per_seed"][0]
    finally:
        torch.set_num_threads(threads)
    note = {"set": job.entry.name, "protocol": protocol.ref, "seed": job.seed, "key": key, "top1": run["top1"],
            "cached": run["cached"], "job_id": _job_id(), "host": platform.node(), "finished": now(),
            "environment": environment(job.runtime.device)}
    write_json(job.jobs_dir / f"{key}.json", note)
    return note


def _job_id() -> Optional[str]:
    import submitit

    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # not inside a submitit job (a direct call)
        return None


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep (never hashed): executor, device, and the submitit/Slurm resources per job."""

    executor: str = "local"
    device: str = "cpu"
    threads: Optional[int] = None
    max_parallel: Optional[int] = None  # local: jobs at once (default 2); slurm: array parallelism
    timeout_min: int = 240
    slurm: tuple[tuple[str, object], ...] = ()  # extra submitit parameters, e.g. ("slurm_partition", "gpu")
    command: Optional[str] = None


def _executor(options: SweepOptions, folder: Path):
    import submitit

    if options.executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {options.executor!r}")
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=options.executor)
    except RuntimeError as exc:  # submitit's Slurm executor needs srun on PATH
        raise ConfigError(f"--executor {options.executor}: {exc} (run the sweep on a Slurm login node, or use "
                          "--executor local)") from None
    params: dict = {"name": "rd3kit-sweep", "timeout_min": options.timeout_min}
    if options.executor == "slurm":
        params |= {"slurm_array_parallelism": options.max_parallel, **dict(options.slurm)}
    elif options.executor == "local" and options.device.startswith("cuda"):
        params["gpus_per_node"] = 1  # submitit's local jobs see no GPU unless asked for one
    try:
        executor.update_parameters(**params)
    except (NameError, AssertionError) as exc:  # submitit's way of rejecting a parameter
        raise ConfigError(f"submitit rejected the executor parameters: {exc}") from None
    return executor


def _outcome(job: Job, submitted) -> dict:
    row = {"set": job.entry.name, "protocol": job.protocol, "seed": job.seed, "key": job.key,
           "job_id": str(submitted.job_id)}
    try:
        submitted.result()
    except Exception as exc:  # noqa: BLE001 - a failed job is reported and retried by a rerun, not fatal here
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return row | {"ok": False, "error": " | ".join(lines[-3:]), "log": str(submitted.paths.stderr)}
    return row | {"ok": True}


def _run_jobs(executor, jobs: list[Job], options: SweepOptions) -> list[dict]:
    """Submit and wait. Local jobs go `max_parallel` at a time; Slurm and debug take them as one array."""
    if options.executor != "local":
        with executor.batch():
            submitted = [(job, executor.submit(run_job, job)) for job in jobs]
        return [_outcome(job, s) for job, s in submitted]
    limit, queue, running, rows = options.max_parallel or 2, list(jobs), [], []
    while queue or running:
        while queue and len(running) < limit:
            job = queue.pop(0)
            running.append((job, executor.submit(run_job, job)))
        finished = [(job, s) for job, s in running if s.done()]
        rows += [_outcome(job, s) for job, s in finished]
        running = [pair for pair in running if pair not in finished]
        if not finished:
            time.sleep(0.2)
    return rows


@dataclass(frozen=True)
class _Group:
    """One (set, protocol) cell of the matrix with its loaded inputs and per-seed cache keys."""

    entry: SetEntry
    ref: str  # the spec's protocol entry (id@vN, or an absolute path to a protocol file)
    inputs: tuple
    seeds: list[int]
    keys: list[str]


def _located(call: Callable[[], T], where: str) -> T:
    """Run `call`; an rd3kit error gets `where` (file and key) in front, keeping its type and exit code."""
    try:
        return call()
    except RD3Error as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _plan(spec: SweepSpec, path: Path) -> list[_Group]:
    """Load every set once and every protocol's splits once; check each (set, protocol) before submitting."""
    from rd3kit.protocols import protocol_hash

    protocols = [_protocol(ref, f"{path}: protocols.{j}") for j, ref in enumerate(spec.protocols)]
    for j, protocol in enumerate(protocols):
        same = [k for k in range(j) if protocols[k].ref == protocol.ref]
        if same:  # record files are named by id@vN, so two contents under one name would overwrite
            raise ConfigError(f"{path}: protocols.{j}: {protocol.ref} is also protocols.{same[0]}; list it once")
    splits: dict[str, tuple] = {}
    groups = []
    for i, entry in enumerate(spec.sets):
        dset = _located(lambda: _load_set(entry), f"{path}: sets.{i} ({entry.name})")
        for j, protocol in enumerate(protocols):
            if protocol.ref not in splits:
                splits[protocol.ref] = _located(lambda: _load_splits(protocol, spec.data),
                                                f"{path}: data.test/data.train/data.root "
                                                f"({protocol.data.name} splits for protocols.{j})")
            test, train = splits[protocol.ref]
            _located(lambda: api.check_set(dset, protocol), f"{path}: sets.{i} ({entry.name}) x protocols.{j}")
            seeds = list(spec.seeds if spec.seeds is not None else protocol.seeds)
            keys = [api.run_key(protocol_hash(protocol), dset, test, train, s) for s in seeds]
            groups.append(_Group(entry, spec.protocols[j], (dset, protocol, test, train), seeds, keys))
    return groups


def _gather(group: _Group, runtime: api.Runtime, jobs_dir: Path, context: dict) -> dict:
    """The (set, protocol) record: api.evaluate over the seeds, every one read from the cache, plus job notes."""
    dset, protocol, test, train = group.inputs
    record = api.evaluate(dset, protocol, test, train=train, seeds=group.seeds, runtime=runtime)
    notes = [read_json(jobs_dir / f"{k}.json") if (jobs_dir / f"{k}.json").is_file() else None for k in group.keys]
    record["runtime"]["sweep"] = context | {"set": group.entry.name, "jobs": [
        {"seed": s, "job_id": n["job_id"], "host": n["host"], "device": n["environment"]["device"],
         "torch": n["environment"]["torch"], "git_sha": n["environment"]["git_sha"]} if n else {"seed": s, "job_id": None}
        for s, n in zip(group.seeds, notes)]}
    if context.get("command"):
        record["command"] = context["command"]
    return record


def _job_threads(options: SweepOptions) -> Optional[int]:
    """torch threads per job: as asked; else the job's share of this machine (local) or its Slurm CPUs."""
    import os

    if options.threads is not None:
        return options.threads
    if options.executor == "local":  # local jobs run side by side: one thread pool each would oversubscribe
        return max(1, (os.cpu_count() or 1) // (options.max_parallel or 2))
    cpus = dict(options.slurm).get("slurm_cpus_per_task")
    return int(cpus) if cpus is not None else None


def _gather_runtime(runtime: api.Runtime) -> api.Runtime:
    """Gathering only reads the cache; a login node without the jobs' GPU records as cpu (jobs keep theirs)."""
    import torch

    if runtime.device.startswith("cuda") and not torch.cuda.is_available():
        return replace(runtime, device="cpu")
    return runtime


def run_sweep(spec_path: Path, out: Path, options: SweepOptions = SweepOptions()) -> dict:
    """Run (or resume) a sweep into `out`; returns the summary also written to out/sweep.json.

    Jobs whose per-seed cache file (out/runs/<run_key>.json) exists are not submitted. A (set, protocol)
    record is written to out/records/ once all its seeds are cached; a failed job leaves its cell open
    (summary `failed`), and rerunning the same command retries only what is missing.
    """
    spec, out = load_spec(spec_path), out.resolve()  # workers may start elsewhere: absolute paths only
    runtime = api.Runtime(device=options.device, cache_dir=out / "runs", progress=False)
    jobs_dir = out / "jobs"
    groups = _plan(spec, spec_path)
    every = {key for g in groups for key in g.keys}
    todo: dict[str, Job] = {}  # keyed by run_key: the same run listed twice is one job
    for g in groups:
        for seed, key in zip(g.seeds, g.keys):
            if not (runtime.cache_dir / f"{key}.json").exists():
                todo.setdefault(key, Job(g.entry, g.ref, seed, spec.data, runtime, key, jobs_dir, _job_threads(options)))
    started = time.perf_counter()
    rows = _run_jobs(_executor(options, out / "submitit"), list(todo.values()), options) if todo else []
    context = {"spec": str(spec_path.resolve()), "spec_sha256": hashlib.sha256(spec_path.read_bytes()).hexdigest(),
               "executor": options.executor, "device": options.device, "command": options.command}
    records, open_cells = [], []
    for g in groups:
        ref = g.inputs[1].ref
        if all((runtime.cache_dir / f"{k}.json").exists() for k in g.keys):
            path = out / "records" / f"{g.entry.name}__{ref}.json"
            record = _gather(g, _gather_runtime(runtime), jobs_dir, context)
            write_json(path, record)
            records.append({"set": g.entry.name, "protocol": ref, "path": str(path), "mean": record["mean"],
                            "std": record["std"], "n": record["n"]})
        else:
            open_cells.append(f"{g.entry.name} x {ref}")
    summary = {"schema": "rd3kit.sweep-run/v1", "created": now(), **context, "out": str(out),
               "jobs": len(every), "submitted": len(rows), "already_cached": len(every) - len(todo),
               "failed": [r for r in rows if not r["ok"]], "records": records, "open": open_cells,
               "wall_s": round(time.perf_counter() - started, 3)}
    write_json(out / "sweep.json", summary)
    return summary
