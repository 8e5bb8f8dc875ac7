"""Turn a result record into a reproduction entry (inputs made relative and pinned).

Must not: write files (store.save_entry does) or invent provenance the result does not carry. Takes coupled
records (`rd3kit eval`) and decoupled ones (`rd3kit eval-decoupled`, schema rd3kit.decoupled-result/v1).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rd3kit.api_decoupled import RESULT_SCHEMA as DECOUPLED_SCHEMA
from rd3kit.errors import ConfigError, DataError
from rd3kit.reference.store import Reproduction, SetInput, SplitInput, TeacherInput, rd3kit_home


def need(doc: dict, dotted: str, where: str = "result record"):
    """`doc[a][b]...` for `dotted` = "a.b...", or a ConfigError naming the missing key."""
    value = doc
    for i, key in enumerate(dotted.split(".")):
        if not isinstance(value, dict) or key not in value:
            raise ConfigError(f"{where}: missing key {'.'.join(dotted.split('.')[:i + 1])!r} (needed: {dotted}); "
                              "`rd3kit reference record` takes records written by `rd3kit eval` or `rd3kit eval-decoupled`")
        value = value[key]
    return value


def indices_sha256(indices: list[int]) -> str:
    """The pin of a random subset's drawn indices: sha256 of their compact JSON list."""
    return hashlib.sha256(json.dumps(indices, separators=(",", ":")).encode()).hexdigest()


def _relative(path: str, data_dir: Path | None) -> str | None:
    if data_dir is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(data_dir.resolve()))
    except ValueError:
        return None


def set_input(result: dict, data_dir: Path | None) -> SetInput:
    s = need(result, "inputs.set")
    origin, files, space = need(s, "origin", "inputs.set"), need(s, "files", "inputs.set"), need(s, "space", "inputs.set")
    if origin.startswith("embedded:"):
        return SetInput(source="embedded", path=origin.removeprefix("embedded:"), sha256=next(iter(files.values())),
                        space=space)
    if origin.startswith("hf://") or origin.startswith("catalog:"):
        return SetInput(source="hub" if origin.startswith("hf://") else "catalog", path=origin.removeprefix("catalog:"),
                        sha256=files.get(origin) or next(iter(files.values()), None), space=space,
                        select=s.get("select"), idc_factor=s.get("idc_factor"))
    rel = _relative(origin, data_dir)
    if rel is None:
        raise ConfigError(f"set {origin} is not under the shared data folder {data_dir}; a reproduction entry must "
                          "point at pinned inputs others can get (shared data, catalogue or hf://)")
    if origin not in files:
        raise ConfigError(f"result record: inputs.set.files has no sha256 for the set's origin {origin}")
    return SetInput(source="shared-data", path=rel, sha256=files[origin], space=space, select=s.get("select"),
                    idc_factor=s.get("idc_factor"))


def split_input(split: dict, data_dir: Path | None) -> SplitInput:
    origin, sha = need(split, "origin", "inputs split"), need(split, "sha256", "inputs split")
    if origin.startswith("embedded:"):
        return SplitInput(source="embedded", path=origin.removeprefix("embedded:"), sha256=sha)
    if origin.startswith("torchvision:"):
        return SplitInput(source="torchvision", path=origin.split("@", 1)[1], sha256=sha)
    rel = _relative(origin, data_dir)
    if rel is None:
        raise ConfigError(f"split {origin} is not under the shared data folder {data_dir}")
    return SplitInput(source="shared-data", path=rel, sha256=sha)


def decoupled_set_input(result: dict, data_dir: Path | None) -> SetInput:
    """A decoupled run's set: a stored distilled .pt (with its de-normalisation) or a random real subset."""
    s = need(result, "inputs.set")
    kind = need(s, "kind", "inputs.set")
    if kind == "random-subset":
        split = need(s, "split", "inputs.set")
        rel = _relative(need(split, "origin", "inputs.set.split"), data_dir)
        if rel is None:
            raise ConfigError(f"set {split['origin']} is not under the shared data folder {data_dir}")
        return SetInput(source="shared-data", path=rel, sha256=need(split, "sha256", "inputs.set.split"),
                        space="raw01", subset_seed=need(s, "subset_seed", "inputs.set"),
                        indices_sha256=indices_sha256(need(s, "indices", "inputs.set")))
    if kind != "distilled":
        raise ConfigError(f"result record: inputs.set.kind {kind!r} cannot be recorded yet; expected 'distilled' (.pt) "
                          "or 'random-subset' (real .npz): image folders and parquet sets have no pinned rebuild")
    base = set_input(result, data_dir)
    norm = s.get("denormalised_with") or {}
    return base.model_copy(update={"set_mean": norm.get("mean"), "set_std": norm.get("std")})


def teacher_input(result: dict, data_dir: Path | None, teacher_file: Path | None) -> TeacherInput:
    """The teacher, located under the shared data folder or $RD3KIT_HOME (`teacher_file`: where it lives now)."""
    t = need(result, "inputs.teacher")
    if "fkd" in t:
        raise ConfigError("result record: inputs.teacher.fkd: fkd_replay runs cannot be recorded yet (no pin for "
                          "the FKD label folder)")
    sha, source = need(t, "sha256", "inputs.teacher"), need(t, "source", "inputs.teacher")
    path = Path(teacher_file or need(t, "file", "inputs.teacher"))
    if not path.is_file():
        raise DataError(f"{path}: teacher file not found; pass --teacher PATH to where it lives now")
    from rd3kit.sources.formats import sha256_file

    if sha256_file(path) != sha:
        raise DataError(f"{path}: sha256 differs from the record's teacher sha256 {sha[:12]}...")
    for root_name, root in (("shared-data", data_dir), ("rd3kit-home", rd3kit_home())):
        rel = _relative(str(path), root)
        if rel is not None:
            break
    else:
        raise ConfigError(f"teacher {path} is under neither the shared data folder {data_dir} nor $RD3KIT_HOME "
                          f"{rd3kit_home()}; copy it (and its rd3kit-teacher record) under one and pass --teacher")
    record, protocol = None, None
    if t.get("kind") == "rd3kit-teacher":
        rec = path.parent / Path(need(t, "record", "inputs.teacher")).name
        if not rec.is_file():
            raise DataError(f"{rec}: the teacher's rd3kit-teacher record must sit next to {path.name}")
        from rd3kit.record import read_json

        record, protocol = str(Path(rel).parent / rec.name), need(read_json(rec), "protocol.ref", str(rec))
    return TeacherInput(root=root_name, path=rel, sha256=sha, source=source, record=record, protocol=protocol)


def reproduction_from_result(result: dict, *, name: str, method: str, claim: str | None, tier: str,
                             data_dir: Path | None, command: str, notes: str = "",
                             teacher_file: Path | None = None) -> Reproduction:
    env, inputs = need(result, "environment"), need(result, "inputs")
    decoupled = result.get("schema") == DECOUPLED_SCHEMA
    if decoupled:
        dataset, ipc = need(result, "inputs.test.dataset"), need(result, "inputs.set.ipc_checked")
        set_in = decoupled_set_input(result, data_dir)
    else:
        dataset, ipc = need(result, "protocol.spec.data.name"), need(result, "inputs.set.ipc")
        set_in = set_input(result, data_dir)
    per_seed = need(result, "per_seed")
    return Reproduction(
        kind="reproduction", name=name, claim=claim, method=method, dataset=dataset, ipc=ipc,
        protocol=need(result, "protocol.ref"), protocol_sha256=need(result, "protocol.sha256"), set=set_in,
        test=split_input(need(result, "inputs.test"), data_dir),
        train=split_input(inputs["train"], data_dir) if inputs.get("train") else None,
        teacher=teacher_input(result, data_dir, teacher_file) if decoupled else None,
        seeds=need(result, "seeds"), top1=need(result, "top1"), tier=tier,
        command=command or result.get("command", ""), rd3kit=need(env, "rd3kit", "environment"),
        git_sha=env.get("git_sha"), device=env.get("device_name") or need(env, "device", "environment"),
        torch=need(env, "torch", "environment"), cuda=env.get("cuda"), created=need(result, "created"), notes=notes,
        # compute time of the seeds, also when this record was assembled from cached per-seed runs
        wall_s=round(sum(need(r, "wall_s", "per_seed[]") for r in per_seed), 1),
    )


def merge_results(results: list[dict], names: list[str]) -> dict:
    """One record from several runs of the same protocol on the same pinned inputs with disjoint seeds.

    Differing git shas or commands are kept, joined in seed order; any other difference is an error.
    """
    first = results[0]
    same = ("protocol.sha256", "inputs.test.sha256", "environment.rd3kit", "environment.torch", "environment.device")
    for res, where in zip(results[1:], names[1:]):
        for key in same:
            if need(res, key, where) != need(first, key, names[0]):
                raise ConfigError(f"{where}: {key} {need(res, key, where)!r} differs from {names[0]}'s "
                                  f"{need(first, key, names[0])!r}; only runs of one setup can form one entry")
        for key in ("files", "denormalised_with", "select", "subset_seed", "indices"):
            if res["inputs"]["set"].get(key) != first["inputs"]["set"].get(key):
                raise ConfigError(f"{where}: inputs.set.{key} differs from {names[0]}'s")
        if (res["inputs"].get("teacher") or {}).get("sha256") != (first["inputs"].get("teacher") or {}).get("sha256"):
            raise ConfigError(f"{where}: inputs.teacher.sha256 differs from {names[0]}'s")
    seeds = [s for r in results for s in need(r, "seeds")]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{', '.join(names)}: seeds overlap ({seeds}); each seed may appear once")
    joined = lambda values: ", ".join(dict.fromkeys(v for v in values if v))  # noqa: E731 - distinct, in order
    env = first["environment"] | {"git_sha": joined(r["environment"].get("git_sha") for r in results) or None}
    return first | {"seeds": seeds, "top1": [v for r in results for v in r["top1"]],
                    "per_seed": [row for r in results for row in r["per_seed"]], "environment": env,
                    "created": max(r["created"] for r in results),
                    "command": " && ".join(r.get("command", "") for r in results)}
