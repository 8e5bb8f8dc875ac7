"""`rd3kit sweep`: a tiny local sweep gathers the single-process records, resumes, and bad specs name file+key."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rd3kit import api
from rd3kit.cli import app
from rd3kit.embedded import digits_split, digits_subset
from rd3kit.errors import ConfigError, DataError
from rd3kit.record import read_json
from rd3kit.scale.sweep import SweepOptions, load_spec, run_sweep

SET = "embedded:digits/random/ipc2/seed0"


def write_spec(folder, tiny, **changes):
    """A sweep over one embedded set and the tiny protocol (stored next to the spec) with seeds 0 and 1."""
    (folder / "tiny.json").write_text(json.dumps(tiny.model_dump(mode="json")), encoding="utf-8")
    doc = {"schema": "rd3kit.sweep/v1", "sets": [{"name": "digits-ipc2", "source": [SET]}],
           "protocols": ["tiny.json"], "seeds": [0, 1]} | changes
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_local_sweep_gathers_and_resumes(tiny, tmp_path):
    spec, out = write_spec(tmp_path, tiny), tmp_path / "out"
    dset, test = digits_subset("random", 2, 0), digits_split("test")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the jobs run with --threads 1; compare like with like
    try:
        single = api.evaluate(dset, tiny, test, seeds=[0, 1], runtime=api.Runtime(cache_dir=None, progress=False))
        # Seed 0 already ran (an interrupted sweep, or `rd3kit eval` into the same cache): only seed 1 is left.
        api.evaluate(dset, tiny, test, seeds=[0], runtime=api.Runtime(cache_dir=out / "runs", progress=False))
    finally:
        torch.set_num_threads(before)

    # One local job (a process start costs seconds on a loaded machine, so the test keeps it to one).
    first = run_sweep(spec, out, SweepOptions(executor="local", threads=1, timeout_min=5))
    assert (first["jobs"], first["submitted"], first["already_cached"], first["failed"]) == (2, 1, 1, [])
    record = read_json(out / "records" / "digits-ipc2__coupled-digits@v1.json")
    assert record["seeds"] == [0, 1] and record["top1"] == single["top1"]  # identical, not close
    assert record["protocol"]["sha256"] == single["protocol"]["sha256"]
    sweep = record["runtime"]["sweep"]
    assert sweep["executor"] == "local" and sweep["set"] == "digits-ipc2"
    assert [j["seed"] for j in sweep["jobs"]] == [0, 1]
    assert sweep["jobs"][0]["job_id"] is None and sweep["jobs"][1]["job_id"]  # seed 0 ran outside the sweep

    # A rerun submits nothing and writes the same numbers.
    res = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(out), "--executor", "local", "--json"])
    assert res.exit_code == 0, res.output
    second = json.loads(res.stdout)
    assert (second["submitted"], second["already_cached"], second["open"]) == (0, 2, [])
    assert second["records"][0]["mean"] == first["records"][0]["mean"]


@pytest.mark.parametrize("changes,where", [
    ({"sets": [{"name": "digits-ipc2", "source": [SET], "spaec": "raw01"}]}, "sets.0.spaec"),
    ({"protocols": ["tiny.json", "coupled-digit@v1"]}, "protocols.1"),
    ({"seeds": [0, "1"]}, "seeds.1"),
    ({"seeds": [0, 0]}, "seeds.1"),
    ({"schema": "rd3kit.sweep/v0"}, "schema"),
])
def test_bad_spec_names_file_and_key(tiny, tmp_path, changes, where):
    spec = write_spec(tmp_path, tiny, **changes)
    with pytest.raises(ConfigError) as err:
        load_spec(spec)
    assert str(err.value).startswith(f"{spec}: {where}")


def test_bad_spec_is_a_usage_error_on_the_command_line(tiny, tmp_path):
    spec = write_spec(tmp_path, tiny, protocols=[])
    res = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and f"{spec}: protocols" in res.output and "Traceback" not in res.output


def test_set_that_does_not_fit_a_protocol_fails_before_submitting(tiny, tmp_path):
    from conftest import tiny_protocol

    (tmp_path / "big.json").write_text(json.dumps(tiny_protocol(id="digits-big", data__image_size=[16, 16]).model_dump(mode="json")))
    spec = write_spec(tmp_path, tiny, protocols=["tiny.json", "big.json"])
    with pytest.raises(DataError, match=r"sweep\.yaml: sets\.0 \(digits-ipc2\) x protocols\.1: .*\(8, 8\)"):
        run_sweep(spec, tmp_path / "out", SweepOptions(executor="debug"))
    assert not (tmp_path / "out" / "submitit").exists()


def test_missing_real_data_names_the_data_key(tiny, tmp_path):
    spec = write_spec(tmp_path, tiny, protocols=["dc-cifar10@v1"])
    with pytest.raises(DataError, match=r"sweep\.yaml: data\.test.*cifar10 splits for protocols\.0"):
        run_sweep(spec, tmp_path / "out", SweepOptions(executor="debug"))


class _FailedJob:
    """Stands in for a submitit job that failed (a real failing job would cost a process start)."""

    job_id = "4242_1"

    class paths:  # noqa: N801 - mirrors submitit's Job.paths
        stderr = "/logs/4242_1_0_log.err"

    def result(self):
        raise RuntimeError("Job (task=0) failed during processing with trace:\n...\nDataError: the set went missing")


def test_failed_job_is_reported_with_its_log(tiny, tmp_path):
    from rd3kit.scale import sweep

    job = sweep.Job(sweep.SetEntry(name="digits-ipc2", source=[SET]), "tiny.json", 1, sweep.DataEntry(),
                    api.Runtime(), "k" * 64, tmp_path)
    row = sweep._outcome(job, _FailedJob())
    assert row["ok"] is False and row["job_id"] == "4242_1" and row["log"] == "/logs/4242_1_0_log.err"
    assert row["error"].endswith("DataError: the set went missing")


def test_failed_jobs_exit_3_and_say_how_to_retry(tmp_path, monkeypatch):
    from rd3kit.scale import sweep

    failed = {"set": "digits-ipc2", "protocol": "tiny.json", "seed": 1, "job_id": "4242_1", "ok": False,
              "error": "boom", "log": "/logs/4242_1_0_log.err"}
    summary = {"spec": "s.yaml", "executor": "slurm", "jobs": 2, "already_cached": 1, "submitted": 1,
               "failed": [failed], "records": [], "open": ["digits-ipc2 x coupled-digits@v1"], "wall_s": 1.0}
    monkeypatch.setattr(sweep, "run_sweep", lambda *args, **kwargs: summary)
    res = CliRunner().invoke(app, ["sweep", "s.yaml", "--out", str(tmp_path)])
    assert res.exit_code == 3
    assert "seed 1 (job 4242_1): boom" in res.output and "rerun the same command" in res.output


def test_slurm_options_become_sbatch_lines(tmp_path, monkeypatch):
    """The --slurm-* options reach sbatch as written (a stand-in srun on PATH; no cluster is contacted)."""
    from rd3kit.scale import sweep

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    seen = {}
    empty = {"spec": "s.yaml", "executor": "slurm", "jobs": 0, "already_cached": 0, "submitted": 0, "failed": [],
             "records": [], "open": [], "wall_s": 0.0}
    monkeypatch.setattr(sweep, "run_sweep", lambda spec, out, options: seen.setdefault("options", options) and empty)
    res = CliRunner().invoke(app, ["sweep", "s.yaml", "--out", str(tmp_path), "--executor", "slurm", "--device", "cuda",
                                   "--slurm-partition", "gpu", "--slurm-gpus", "1", "--slurm-cpus", "8",
                                   "--slurm-mem-gb", "32", "--max-parallel", "8", "--timeout-min", "90"])
    assert res.exit_code == 0, res.output
    options = seen["options"]
    text = sweep._executor(options, tmp_path / "submitit")._executor._make_submission_file_text("cmd", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=90"):
        assert f"#SBATCH {line}\n" in text
    assert sweep._job_threads(options) == 8  # torch threads follow the CPUs Slurm gives the job


def test_slurm_options_need_the_slurm_executor(tmp_path):
    res = CliRunner().invoke(app, ["sweep", "s.yaml", "--out", str(tmp_path), "--slurm-partition", "gpu"])
    assert res.exit_code == 2 and "--executor slurm" in res.output
