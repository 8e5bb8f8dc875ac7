"""Decoupled results in the reference store: record -> entry -> rerun -> verdict, on tiny inputs (CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from rd3kit import api
from rd3kit.cli import app
from rd3kit.errors import ConfigError, DataError
from rd3kit.reference import reproduce as R
from rd3kit.reference.record import merge_results, reproduction_from_result
from rd3kit.reference.store import load_all
from rd3kit.reference.verdict import verify
from rd3kit.train import decoupled as D
from test_decoupled import tiny_protocol, tiny_set

runner = CliRunner()
HUB = "hf://org/teacher@" + "a" * 40 + "/t.safetensors"
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch) -> dict:
    """A data folder holding a normalized .pt set, a real train/test .npz and a teacher; an empty reference store;
    the released protocol id resolved to the tiny protocol (so the entry's pinned hash is the tiny one's)."""
    proto = tiny_protocol(epochs=1)
    data = tmp_path / "data"
    data.mkdir()
    x, y = tiny_set()
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (MEAN, STD))
    torch.save({"images": (x - mean) / std, "labels": y}, data / "set.pt")
    teacher = D.build_seeded(proto.teacher.model, proto.data, 7, torch.device("cpu"))
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(data / "t.safetensors"))
    rng = np.random.default_rng(0)
    for split, n in (("test", 20), ("train", 40)):
        np.savez(data / f"{split}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=np.arange(n, dtype=np.int64) % 10)
    (tmp_path / "p.json").write_text(proto.model_dump_json())
    store = tmp_path / "reference"
    for folder in ("claims", "reproductions"):
        (store / folder).mkdir(parents=True)
    monkeypatch.setenv("RD3KIT_REFERENCE", str(store))
    monkeypatch.setenv("RD3KIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(R, "get_protocol", lambda ref: proto)
    load_all.cache_clear()
    yield {"dir": tmp_path, "data": data, "protocol": tmp_path / "p.json", "proto": proto}
    load_all.cache_clear()


def _run(s: dict, out: str, set_args: list[str], seeds: str = "0,1,2") -> dict:
    res = runner.invoke(app, ["eval-decoupled", *set_args, "-p", str(s["protocol"]), "--teacher",
                              str(s["data"] / "t.safetensors"), "--teacher-source", HUB, "--test",
                              str(s["data"] / "test.npz"), "--seeds", seeds, "--out", str(s["dir"] / out)])
    assert res.exit_code == 0, res.output
    return json.loads((s["dir"] / out).read_text())


def _normalized(s: dict) -> list[str]:
    return [str(s["data"] / "set.pt"), "--space", "normalized", "--set-mean", ",".join(map(str, MEAN)),
            "--set-std", ",".join(map(str, STD))]


def _record(s: dict, *results: str, name: str = "tiny-dc") -> None:
    res = runner.invoke(app, ["reference", "record", *[str(s["dir"] / r) for r in results], "--name", name,
                              "--method", "DC", "--data-dir", str(s["data"])])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("kind", ["distilled", "random-subset"])
def test_record_then_rerun_reproduces_bitwise(setup, kind):
    set_args = _normalized(setup) if kind == "distilled" else [str(setup["data"] / "train.npz"), "--ipc", "2",
                                                               "--subset-seed", "3"]
    result = _run(setup, "r.json", set_args)
    _record(setup, "r.json")
    entry = load_all()["tiny-dc"]
    assert entry.tier == "heavy" and entry.ipc == 2 and entry.dataset == "cifar10"
    assert (entry.teacher.root, entry.teacher.path, entry.teacher.source) == ("shared-data", "t.safetensors", HUB)
    if kind == "distilled":
        assert (entry.set.path, entry.set.space, entry.set.set_mean, entry.set.set_std) == \
            ("set.pt", "normalized", list(MEAN), list(STD))
    else:
        assert (entry.set.path, entry.set.subset_seed) == ("train.npz", 3) and entry.set.indices_sha256
    outcome = R.reproduce(entry, setup["data"], api.Runtime(cache_dir=None, progress=False))
    assert outcome.result["top1"] == result["top1"]  # same process, same seeds, CPU: bitwise
    assert [v.status for v in outcome.verdicts] == ["reproduced"]


def test_verify_all_reruns_a_heavy_decoupled_entry_and_skips_it_without_its_teacher(setup):
    _run(setup, "r.json", _normalized(setup))
    _record(setup, "r.json")
    args = ["reference", "verify-all", "--tier", "heavy", "--data-dir", str(setup["data"]), "--out",
            str(setup["dir"] / "v")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "REPRODUCED: tiny-dc" in res.output and "1 reran, 0 failed" in res.output, res.output
    (setup["data"] / "t.safetensors").unlink()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "SKIPPED: tiny-dc (needs its teacher file" in res.output and "0 reran, 0 failed, 1 skipped" in res.output


def test_a_swapped_teacher_is_refused_on_rerun_and_fails_v2(setup):
    result = _run(setup, "r.json", _normalized(setup), seeds="0")
    entry = reproduction_from_result(result, name="tiny-dc", method="DC", claim=None, tier="heavy",
                                     data_dir=setup["data"], command="")
    other = D.build_seeded(setup["proto"].teacher.model, setup["proto"].data, 8, torch.device("cpu"))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(setup["data"] / "t.safetensors"))
    with pytest.raises(DataError, match="sha256 differs from the pin"):
        R.reproduce(entry, setup["data"], api.Runtime(cache_dir=None, progress=False))
    swapped = result | {"inputs": result["inputs"] | {"teacher": result["inputs"]["teacher"] | {"sha256": "f" * 64}}}
    verdict = verify(swapped, entry)
    assert verdict.status == "not reproduced" and any(r.startswith("V2 teacher sha256") for r in verdict.reasons)


def test_runs_with_disjoint_seeds_merge_into_one_entry(setup):
    _run(setup, "a.json", _normalized(setup), seeds="0")
    _run(setup, "b.json", _normalized(setup), seeds="1")
    _record(setup, "a.json", "b.json")
    entry = load_all()["tiny-dc"]
    assert entry.seeds == [0, 1] and len(entry.top1) == 2 and " && " in entry.command
    res = runner.invoke(app, ["reference", "record", str(setup["dir"] / "a.json"), str(setup["dir"] / "a.json"),
                              "--name", "tiny-dc-2", "--method", "DC", "--data-dir", str(setup["data"])])
    assert res.exit_code == 2 and "seeds overlap" in res.output


def test_merge_refuses_runs_with_different_teachers(setup):
    a = _run(setup, "a.json", _normalized(setup), seeds="0")
    b = a | {"seeds": [1], "inputs": a["inputs"] | {"teacher": a["inputs"]["teacher"] | {"sha256": "0" * 64}}}
    with pytest.raises(ConfigError, match="inputs.teacher.sha256 differs"):
        merge_results([a, b], ["a.json", "b.json"])


@pytest.mark.parametrize("drop, key", [("inputs.set.ipc_checked", "inputs.set.ipc_checked"),
                                       ("inputs.teacher", "inputs.teacher"), ("protocol", "protocol")])
def test_a_decoupled_record_lacking_a_key_is_a_config_error_naming_it(setup, drop, key):
    result = _run(setup, "r.json", _normalized(setup), seeds="0")
    *parents, last = drop.split(".")
    node = result
    for p in parents:
        node = node[p]
    del node[last]
    with pytest.raises(ConfigError, match=f"missing key '{key}'"):
        reproduction_from_result(result, name="x", method="DC", claim=None, tier="heavy", data_dir=setup["data"],
                                 command="")


def test_a_coupled_record_without_its_spec_is_a_config_error_not_a_key_error(tmp_path):
    record = {"protocol": {"ref": "dc-cifar10@v1", "sha256": "0" * 64}, "environment": {}, "inputs": {"set": {}}}
    with pytest.raises(ConfigError, match="missing key 'protocol.spec'"):
        reproduction_from_result(record, name="x", method="DC", claim=None, tier="cpu", data_dir=tmp_path, command="")


def test_a_teacher_outside_the_data_folder_and_home_is_refused(setup):
    result = _run(setup, "r.json", _normalized(setup), seeds="0")
    outside = setup["dir"] / "t.safetensors"
    outside.write_bytes((setup["data"] / "t.safetensors").read_bytes())
    with pytest.raises(ConfigError, match="under neither the shared data folder"):
        reproduction_from_result(result, name="x", method="DC", claim=None, tier="heavy", data_dir=setup["data"],
                                 command="", teacher_file=outside)
