"""The command line: --json outputs (snapshotted), exit codes, and messages for bad input."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_protocol
from rd3kit.cli import app

runner = CliRunner()
VOLATILE = {"created", "wall_s", "environment", "runtime", "command"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_protocol_list_json(data_regression):
    res = invoke("protocol", "list", "--json")
    assert res.exit_code == 0
    rows = [r for r in json.loads(res.stdout) if r["family"] == "coupled"]
    data_regression.check(rows)


def test_protocol_show_json_and_human():
    res = invoke("protocol", "show", "dc-cifar10@v1", "--json")
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and doc["ref"] == "dc-cifar10@v1" and doc["spec"]["epochs"] == 300
    human = invoke("protocol", "show", "dc-cifar10@v1")
    assert doc["sha256"] in human.stdout


def test_unknown_protocol_is_a_usage_error():
    res = invoke("protocol", "show", "dc-cifar1@v1")
    assert res.exit_code == 2 and "Did you mean" in res.output and "Traceback" not in res.output


@pytest.fixture
def tiny_file(tmp_path):
    proto = tiny_protocol(run_epochs=3, epochs=2, schedule__milestones=[1], seeds=[0, 1, 2])
    path = tmp_path / "tiny.json"
    path.write_text(proto.model_dump_json())
    return path


def test_eval_json_snapshot(tiny_file, tmp_path, data_regression):
    res = invoke("eval", "embedded:digits/random/ipc2/seed0", "-p", tiny_file, "--json", "--out", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert json.loads((tmp_path / "r.json").read_text())["top1"] == doc["top1"]
    for key in VOLATILE:
        doc.pop(key)
    for row in doc["per_seed"]:
        row.pop("wall_s"), row.pop("train_s")
        assert row.pop("torch_threads") >= 1  # machine-dependent, so not in the snapshot
    # float accuracies: one test image is 1/360; rounding keeps the snapshot stable across BLAS builds
    doc["top1"] = [round(v, 2) for v in doc["top1"]]
    doc["per_seed"] = [r | {"top1": round(r["top1"], 2)} for r in doc["per_seed"]]
    doc["mean"], doc["std"] = round(doc["mean"], 2), round(doc["std"], 2)
    data_regression.check(doc)


def test_verify_exit_codes(tiny_file, tmp_path):
    invoke("eval", "embedded:digits/random/ipc2/seed0", "-p", tiny_file, "--out", tmp_path / "r.json")
    result = json.loads((tmp_path / "r.json").read_text())
    from rd3kit.reference.store import Claim, Source, save_entry

    root = tmp_path / "ref"
    for name, mean in [("holds", result["mean"]), ("five-below", result["mean"] + 0.05)]:
        save_entry(Claim(kind="claim", name=name, method="random", dataset="digits", ipc=2, arch="ConvNet",
                         protocol="coupled-digits@v1", protocol_sha256=result["protocol"]["sha256"], mean=mean,
                         std=0.001, source=Source(id="T", type="test", citation="test")), root=root)
    import os

    os.environ["RD3KIT_REFERENCE"] = str(root)
    try:
        ok = invoke("verify", tmp_path / "r.json", "--against", "holds")
        bad = invoke("verify", tmp_path / "r.json", "--against", "five-below", "--json")
    finally:
        del os.environ["RD3KIT_REFERENCE"]
        from rd3kit.reference.store import load_all

        load_all.cache_clear()
    assert ok.exit_code == 0 and ok.stdout.startswith("REPRODUCED: holds")
    verdict = json.loads(bad.stdout)[0]
    assert bad.exit_code == 1 and verdict["status"] == "not reproduced" and "exceeds the band" in verdict["reasons"][0]


def test_bad_input_exits_3_naming_the_file(tiny_file, tmp_path):
    path = tmp_path / "bad.pt"
    torch.save((torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])), path)
    res = invoke("eval", path, "--space", "raw01", "-p", tiny_file)
    assert res.exit_code == 3 and str(path) in res.output and "channels" in res.output


def test_space_must_be_stated_for_local_files(tiny_file, tmp_path):
    path = tmp_path / "x.pt"
    torch.save((torch.rand(2, 1, 8, 8), torch.tensor([0, 1])), path)
    res = invoke("eval", path, "-p", tiny_file)
    assert res.exit_code == 2 and "--space" in res.output


def test_reference_list_json():
    res = invoke("reference", "list", "--json", "--kind", "reproduction")
    rows = json.loads(res.stdout)
    assert res.exit_code == 0 and any(r["name"] == "digits-random-ipc10-coupled-digits-v1" for r in rows)


def test_a_crash_exits_4_not_1(monkeypatch):
    """Exit 1 means "a number did not hold"; an unexpected exception must not be read as a verdict by CI."""
    from typer.testing import CliRunner

    from rd3kit import protocols
    from rd3kit.cli import app

    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(protocols, "released", broken)
    res = CliRunner().invoke(app, ["protocol", "list"])
    assert res.exit_code == 4, res.output
    assert "internal error (ZeroDivisionError)" in res.output and "injected" in res.output
