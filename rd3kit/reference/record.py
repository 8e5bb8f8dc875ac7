"""Turn a result record into a reproduction entry (inputs made relative and pinned).

Must not: write files (store.save_entry does) or invent provenance the result does not carry.
"""

from __future__ import annotations

from pathlib import Path

from rd3kit.errors import ConfigError
from rd3kit.reference.store import Reproduction, SetInput, SplitInput


def _relative(path: str, data_dir: Path | None) -> str | None:
    if data_dir is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(data_dir.resolve()))
    except ValueError:
        return None


def set_input(result: dict, data_dir: Path | None) -> SetInput:
    s = result["inputs"]["set"]
    origin, files = s["origin"], s["files"]
    if origin.startswith("embedded:"):
        return SetInput(source="embedded", path=origin.removeprefix("embedded:"), sha256=next(iter(files.values())),
                        space=s["space"])
    if origin.startswith("hf://") or origin.startswith("catalog:"):
        return SetInput(source="hub" if origin.startswith("hf://") else "catalog", path=origin.removeprefix("catalog:"),
                        sha256=files.get(origin) or next(iter(files.values()), None), space=s["space"],
                        select=s.get("select"), idc_factor=s.get("idc_factor"))
    rel = _relative(origin, data_dir)
    if rel is None:
        raise ConfigError(f"set {origin} is not under the shared data folder {data_dir}; a reproduction entry must "
                          "point at pinned inputs others can get (shared data, catalogue or hf://)")
    return SetInput(source="shared-data", path=rel, sha256=files[origin], space=s["space"], select=s.get("select"),
                    idc_factor=s.get("idc_factor"))


def split_input(split: dict, data_dir: Path | None) -> SplitInput:
    origin = split["origin"]
    if origin.startswith("embedded:"):
        return SplitInput(source="embedded", path=origin.removeprefix("embedded:"), sha256=split["sha256"])
    if origin.startswith("torchvision:"):
        return SplitInput(source="torchvision", path=origin.split("@", 1)[1], sha256=split["sha256"])
    rel = _relative(origin, data_dir)
    if rel is None:
        raise ConfigError(f"split {origin} is not under the shared data folder {data_dir}")
    return SplitInput(source="shared-data", path=rel, sha256=split["sha256"])


def reproduction_from_result(result: dict, *, name: str, method: str, claim: str | None, tier: str,
                             data_dir: Path | None, command: str, notes: str = "") -> Reproduction:
    env, inputs = result["environment"], result["inputs"]
    return Reproduction(
        kind="reproduction", name=name, claim=claim, method=method, dataset=result["protocol"]["spec"]["data"]["name"],
        ipc=inputs["set"]["ipc"], protocol=result["protocol"]["ref"], protocol_sha256=result["protocol"]["sha256"],
        set=set_input(result, data_dir), test=split_input(inputs["test"], data_dir),
        train=split_input(inputs["train"], data_dir) if inputs.get("train") else None,
        seeds=result["seeds"], top1=result["top1"], tier=tier, command=command or result.get("command", ""),
        rd3kit=env["rd3kit"], git_sha=env["git_sha"], device=env["device_name"] or env["device"], torch=env["torch"],
        cuda=env["cuda"], created=result["created"], notes=notes,
        # compute time of the seeds, also when this record was assembled from cached per-seed runs
        wall_s=round(sum(r["wall_s"] for r in result["per_seed"]), 1),
    )
