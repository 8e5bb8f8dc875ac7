"""Offline podman smoke build of the repo's Dockerfile on a local Debian base; writes only build/ and the wheelhouse.

What it does (`make podman-smoke`, or the opt-in test `pytest -m podman tests/test_container.py`):
  1. a local base image: an mmdebstrap rootfs of Debian bookworm (python3, python3-venv, python3-pip),
     `podman import`ed once and then referred to by its digest, as the CUDA base is;
  2. the locked wheels, downloaded on the host with `pip download --require-hashes` into
     docker/wheelhouse/ (pip inside a build container cannot verify TLS here), plus optionally a
     CPU-runnable torch wheel with a hashed requirements file written for it;
  3. `podman build --network=none` of the SAME Dockerfile with INSTALL_FROM=wheelhouse;
  4. `podman run --network=none` of `rd3kit --help`, `protocol list`, `reference list`, `make --version`
     and an environment probe (user, ENV, torch).
Prints one JSON report (phases, seconds, outputs) on stdout. Exit 0 pass, 1 a check failed,
2 podman or mmdebstrap missing (a usage error, not a failure of the image).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "container-smoke"
WHEELHOUSE = ROOT / "docker" / "wheelhouse"
BASE_TAG = "localhost/rd3kit-smoke-base:bookworm"
IMAGE = "localhost/rd3kit:smoke"
TORCH_REQUIREMENTS = "torch-cpu.txt"
# python3-pip: the Dockerfile's venv is made --without-pip and uses the base's pip, as on the CUDA base.
DEBIAN_PACKAGES = "ca-certificates,python3,python3-venv,python3-pip"

# Inside the container: who runs, what the image recorded, and that torch (if any) computes on CPU.
PROBE = """
import json, os, sys
out = {"uid": os.getuid(), "python": sys.version.split()[0], "prefix": sys.prefix}
for key in ("PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG", "HF_HOME", "RD3KIT_IMAGE_BASE", "RD3KIT_IMAGE_REF",
            "RD3KIT_GIT_SHA", "RD3KIT_IMAGE_DIGEST"):
    out[key] = os.environ.get(key)
try:
    import torch
    g = torch.Generator().manual_seed(0)
    out["torch"] = torch.__version__
    out["torch_sum"] = float(torch.randn(1000, generator=g).sum())
except ImportError as exc:
    out["torch"] = f"not installed ({exc})"
import rd3kit
out["rd3kit"] = rd3kit.__version__
print(json.dumps(out))
"""


def run(cmd: list[str], report: dict, phase: str, **kwargs) -> subprocess.CompletedProcess:
    """Run one command, time it into report[phase], raise with its output tail when it fails."""
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kwargs)
    report.setdefault("phases", []).append(
        {"phase": phase, "cmd": " ".join(cmd), "seconds": round(time.monotonic() - start, 1), "rc": proc.returncode})
    if proc.returncode != 0:
        raise RuntimeError(f"{phase} failed (rc {proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return proc


def base_image(report: dict) -> str:
    """The local base as tag@digest, importing an mmdebstrap rootfs first when podman does not have it."""
    have = subprocess.run(["podman", "image", "exists", BASE_TAG], capture_output=True).returncode == 0
    if not have:
        if not shutil.which("mmdebstrap"):
            raise FileNotFoundError("mmdebstrap not found: `apt-get install -y mmdebstrap` (as root)")
        WORK.mkdir(parents=True, exist_ok=True)
        rootfs = WORK / "rootfs.tar"
        run(["mmdebstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}", "bookworm", str(rootfs)],
            report, "mmdebstrap")
        run(["podman", "import", str(rootfs), BASE_TAG], report, "podman import")
        rootfs.unlink()
    digest = run(["podman", "image", "inspect", "--format", "{{.Digest}}", BASE_TAG], report, "base digest")
    return f"{BASE_TAG}@{digest.stdout.strip()}"


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fill_wheelhouse(report: dict, torch_wheel: Path | None) -> str:
    """Download the locked wheels (hash-checked by pip) and stage the torch wheel; return EXTRA_REQUIREMENTS."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    # The host is Debian bookworm's Python 3.11 too, so pip picks the wheels the base will install.
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes", "--only-binary=:all:",
         "-r", "requirements/container.txt", "-d", str(WHEELHOUSE)], report, "pip download (locked wheels)")
    extra = WHEELHOUSE / TORCH_REQUIREMENTS
    extra.unlink(missing_ok=True)
    if torch_wheel is None:
        return ""
    staged = WHEELHOUSE / torch_wheel.name
    if not staged.exists():
        shutil.copyfile(torch_wheel, staged)
    version = torch_wheel.name.split("-")[1]
    # The hash is of the exact file staged here; pip refuses any other file with this name.
    extra.write_text(f"# written by docker/smoke.py for {torch_wheel.name}\n"
                     f"torch=={version} --hash=sha256:{sha256_file(staged)}\n", encoding="utf-8")
    return TORCH_REQUIREMENTS


def git_sha() -> str:
    """HEAD of the checkout, or 'unknown' outside git."""
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def build(report: dict, base: str, extra: str) -> None:
    """podman build of the repo's Dockerfile with no network at all."""
    args = {"BASE_IMAGE": base, "INSTALL_FROM": "wheelhouse", "EXTRA_REQUIREMENTS": extra,
            # The local base brings no torch of its own (or the host's CPU 2.13 wheel, not base-image.txt's).
            "CHECK_BASE": "0", "RD3KIT_IMAGE_REF": IMAGE, "RD3KIT_GIT_SHA": git_sha()}
    cmd = ["podman", "build", "--network=none", "--pull=never", "-f", "Dockerfile", "-t", IMAGE]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    previous = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", IMAGE],
                              capture_output=True, text=True).stdout.strip()
    run(cmd + ["."], report, "podman build")
    current = run(["podman", "image", "inspect", "--format", "{{.Id}}", IMAGE], report, "image id").stdout.strip()
    report["image_id"] = current
    if previous and previous != current:
        # The tag moved to the new build: drop the old image (by id, never a prune) so runs do not pile up GBs.
        subprocess.run(["podman", "rmi", previous], capture_output=True)
    report["build_args"] = args
    size = run(["podman", "image", "inspect", "--format", "{{.Size}}", IMAGE], report, "image size")
    report["image_size_mb"] = round(int(size.stdout.strip()) / 2**20)


def run_checks(report: dict) -> None:
    """The commands the smoke claims to exercise, each in a fresh container without network."""
    podman = ["podman", "run", "--rm", "--network=none", "-e", f"RD3KIT_IMAGE_DIGEST={report['image_id']}"]
    help_out = run(podman + [IMAGE, "--help"], report, "rd3kit --help").stdout
    listed = run(podman + [IMAGE, "protocol", "list"], report, "rd3kit protocol list").stdout
    # The installed kit finds the reference store only through RD3KIT_REFERENCE (it is not package data).
    references = run(podman + [IMAGE, "reference", "list"], report, "rd3kit reference list").stdout
    probe = run(podman + ["--entrypoint", "python", IMAGE, "-c", PROBE], report, "environment probe").stdout
    make = run(podman + ["--entrypoint", "make", IMAGE, "--version"], report, "make --version").stdout
    report["help_head"] = help_out.strip().splitlines()[:3]
    report["protocols_listed"] = len(listed.strip().splitlines())
    report["references_listed"] = len(references.strip().splitlines())
    report["probe"] = json.loads(probe.strip().splitlines()[-1])
    report["make"] = make.splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    """Build and run the smoke image; print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-wheel", type=Path, help="a CPU-runnable torch wheel to install (hash recorded)")
    args = parser.parse_args(argv)
    report: dict = {"ok": False}
    start = time.monotonic()
    try:
        if not shutil.which("podman"):
            raise FileNotFoundError("podman not found: `apt-get install -y podman` (as root), see docs/container.md")
        base = base_image(report)
        report["base_image"] = base
        extra = fill_wheelhouse(report, args.torch_wheel)
        build(report, base, extra)
        run_checks(report)
        report["ok"] = True
    except FileNotFoundError as exc:
        report["error"] = str(exc)
        print(json.dumps(report, indent=2))
        return 2
    except RuntimeError as exc:
        report["error"] = str(exc)
    report["total_seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
