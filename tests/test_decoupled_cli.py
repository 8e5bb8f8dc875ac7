"""`rd3kit eval` dispatches decoupled protocols (same numbers as `eval-decoupled`); option misuse exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from rd3kit.cli import app
from rd3kit.train import decoupled as D
from test_decoupled import tiny_protocol, tiny_set

runner = CliRunner()
HUB = "hf://org/teacher@" + "a" * 40 + "/t.safetensors"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A tiny decoupled protocol file, a raw01 .pt set, a hub-style teacher file and a test .npz."""
    proto = tiny_protocol(epochs=1)
    (tmp_path / "p.json").write_text(proto.model_dump_json())
    x, y = tiny_set()
    torch.save({"images": x, "labels": y}, tmp_path / "set.pt")
    teacher = D.build_seeded(proto.teacher.model, proto.data, 7, torch.device("cpu"))
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(tmp_path / "t.safetensors"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "test.npz", x=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             y=np.arange(20, dtype=np.int64) % 10)
    return {"protocol": tmp_path / "p.json", "set": tmp_path / "set.pt", "teacher": tmp_path / "t.safetensors",
            "test": tmp_path / "test.npz", "dir": tmp_path}


def _common(f: dict[str, Path]) -> list[str]:
    return ["--teacher", str(f["teacher"]), "--teacher-source", HUB, "--test", str(f["test"]), "--space", "raw01",
            "--seeds", "0"]


def test_eval_dispatches_decoupled_and_matches_eval_decoupled(files):
    res = runner.invoke(app, ["eval", str(files["set"]), "-p", str(files["protocol"]), *_common(files), "--json",
                              "--out", str(files["dir"] / "a.json")])
    assert res.exit_code == 0, res.output
    via_eval = json.loads(res.stdout)
    assert via_eval["schema"] == "rd3kit.decoupled-result/v1" and via_eval["inputs"]["teacher"]["source"] == HUB
    res = runner.invoke(app, ["eval-decoupled", str(files["set"]), "-p", str(files["protocol"]), *_common(files),
                              "--out", str(files["dir"] / "b.json")])
    assert res.exit_code == 0, res.output
    via_old = json.loads((files["dir"] / "b.json").read_text())
    assert via_old["top1"] == via_eval["top1"] and via_old["protocol"] == via_eval["protocol"]
    assert via_old["per_seed"][0]["final_train_loss"] == via_eval["per_seed"][0]["final_train_loss"]


def test_teacher_options_with_a_coupled_protocol_exit_2(files):
    res = runner.invoke(app, ["eval", str(files["set"]), "-p", "dc-cifar10@v1", "--space", "raw01",
                              "--teacher", str(files["teacher"])])
    assert res.exit_code == 2 and "--teacher only apply to decoupled" in res.output


def test_coupled_options_with_a_decoupled_protocol_exit_2(files):
    res = runner.invoke(app, ["eval", str(files["set"]), "-p", str(files["protocol"]), *_common(files),
                              "--train", str(files["test"])])
    assert res.exit_code == 2 and "--train only apply to coupled" in res.output
    res = runner.invoke(app, ["eval", str(files["set"]), str(files["set"]), "-p", str(files["protocol"]),
                              *_common(files)])
    assert res.exit_code == 2 and "exactly one SET" in res.output
    res = runner.invoke(app, ["eval", str(files["set"]), "-p", str(files["protocol"]), "--test", str(files["test"])])
    assert res.exit_code == 2 and "--teacher FILE" in res.output


def test_teacher_protocol_through_eval_exits_2(files):
    res = runner.invoke(app, ["eval", str(files["set"]), "-p", "teacher-cifar10-convnetbn@v1", *_common(files)])
    assert res.exit_code == 2 and "rd3kit teacher train" in res.output


def test_eval_replays_fkd_labels_and_records_their_hashes(files):
    from rd3kit.sources.fkd import FkdWriter
    from rd3kit.sources.realdata import from_npz
    from test_fkd import _protocols

    online, replay = _protocols({"name": "cutmix", "beta": 1.0, "prob": 1.0})
    replay = replay.model_copy(update={"epochs": 1})
    (files["dir"] / "replay.json").write_text(replay.model_dump_json())
    x, y = tiny_set()
    teacher = D.build_seeded(online.teacher.model, online.data, 7, torch.device("cpu"))
    writer = FkdWriter(files["dir"] / "fkd")
    run = D.train_decoupled(online.model_copy(update={"epochs": 1}), x, y, teacher, 0, D.Hooks(record=writer))
    writer.finish()
    expected = D.evaluate_top1(run.model, from_npz(files["test"], "cifar10", "test"), online.data, online.eval)
    base = ["eval", str(files["set"]), "-p", str(files["dir"] / "replay.json"), "--test", str(files["test"]),
            "--space", "raw01", "--seeds", "0"]
    res = runner.invoke(app, [*base, "--fkd", str(files["dir"] / "fkd"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["top1"] == [expected]
    assert doc["inputs"]["teacher"]["fkd"]["files_read"] == 2 and "source" not in doc["inputs"]["teacher"]
    res = runner.invoke(app, base)
    assert res.exit_code == 2 and "--fkd DIR is required" in res.output
    res = runner.invoke(app, ["eval", str(files["set"]), "-p", str(files["protocol"]), *_common(files),
                              "--fkd", str(files["dir"] / "fkd")])
    assert res.exit_code == 2 and "only for fkd_replay" in res.output
