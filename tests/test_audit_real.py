"""The DD-Ranking audits of the DC CIFAR-10 sets on the real data (`make audit-ipc1`, `make audit-ipc10`).

Slow (minutes to hours on 2 CPU cores, see docs/metrics.md section 5); skipped when ../shared/data is absent.
Checks what the acceptance asks for: every arm with its seeds and per-seed top-1, the scores with intervals,
under the released audit protocol, with no ad-hoc setting.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {1: "res_DC_CIFAR10_ConvNet_1ipc.pt", 10: "res_DC_CIFAR10_ConvNet_10ipc.pt"}


@pytest.mark.slow
@pytest.mark.parametrize("ipc", [1, 10])
def test_dc_cifar10_audit(ipc, tmp_path):
    needed = [DATA / "distilled" / "dc" / SETS[ipc], DATA / "cifar10" / "train.npz", DATA / "cifar10" / "test.npz"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(f"real data absent: {', '.join(missing)} (see ../shared/data/README.md)")
    from rd3kit.cli import app

    out = tmp_path / "audit.json"
    args = ["audit", str(needed[0]), "--select", "-1", "--space", "normalized", "--protocol",
            "ddranking-dc-cifar10@v1", "--train", str(needed[1]), "--test", str(needed[2]), "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    record = json.loads(out.read_text())
    assert record["audit_protocol"]["ref"] == "ddranking-dc-cifar10@v1" and record["set"]["ipc"] == ipc
    assert set(record["arms"]) == {"syn", "syn_hard", "rand", "herding", "kcenter", "full"}
    for name in ("syn", "rand", "herding", "kcenter"):
        arm = record["arms"][name]
        assert arm["seeds"] == [0, 1, 2, 3, 4] and len(arm["top1"]) == 5
        assert f"seeds [0, 1, 2, 3, 4]: {' '.join(f'{100 * v:.2f}' for v in arm['top1'])}" in res.output
    for score in ("hlr", "ior", "lrs"):
        value = record["scores"][score]
        assert value["low"] <= value["point"] <= value["high"] and score.upper() in res.output
    assert 0.0 <= record["scores"]["lrs"]["point"] <= 1.0
