"""Regenerate requirements/container.txt, the hash-locked container lock, from pyproject.toml; no other writes.

Run as `make lock` (or `python docker/lock.py`). Needs `uv` (`.venv/bin/pip install uv`) and an index.
Also importable: `inputs_digest()` lets a test tell, offline, whether the lock is stale.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = Path("requirements/container.txt")
EXTRA_INPUT = Path("requirements/container.in")
BASE_PINS = Path("requirements/base-image.txt")
DIGEST_PREFIX = "# inputs-sha256: "

# The CUDA base image ships these: torch/torchvision pinned in BASE_PINS and torch's CUDA stack. They are
# resolved (so shared dependencies fit the base's torch) but never emitted into the lock.
BASE_PROVIDED = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")

# 3.11 is the oldest interpreter an image is built on (Debian bookworm, the local smoke base); the CUDA
# base has 3.12. A universal lock carries environment markers, so one file serves both.
UV_FLAGS = (
    "--universal", "--python-version", "3.11", "--generate-hashes", "--only-binary", ":all:",
    "--extra", "test", "--custom-compile-command", "make lock",
)


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a requirements file, without comments or blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def lock_inputs(root: Path = ROOT) -> dict:
    """Everything the lock is computed from, as plain data (order-insensitive where order means nothing)."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    return {
        "dependencies": sorted(project["dependencies"]),
        "test": sorted(project.get("optional-dependencies", {}).get("test", [])),
        "build": sorted(pyproject["build-system"]["requires"]),
        "container.in": sorted(requirement_lines((root / EXTRA_INPUT).read_text(encoding="utf-8"))),
        "base-image": sorted(requirement_lines((root / BASE_PINS).read_text(encoding="utf-8"))),
        "uv_flags": list(UV_FLAGS),
        "base_provided": BASE_PROVIDED.pattern,
    }


def inputs_digest(root: Path = ROOT) -> str:
    """sha256 of the canonical JSON of lock_inputs(): the lock's first line records it."""
    canonical = json.dumps(lock_inputs(root), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def find_uv() -> str:
    """The uv next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        raise SystemExit("docker/lock.py: uv not found; install it with `.venv/bin/pip install uv`")
    return found


def run_compile(root: Path, build_in: Path, out: Path, no_emit: list[str]) -> None:
    """One `uv pip compile` of pyproject + container.in + build requirements, constrained by the base pins."""
    cmd = [find_uv(), "pip", "compile", "--quiet", "pyproject.toml", str(EXTRA_INPUT), str(build_in),
           "--constraints", str(BASE_PINS), *UV_FLAGS, "--output-file", str(out)]
    for name in no_emit:
        cmd += ["--no-emit-package", name]
    subprocess.run(cmd, cwd=root, check=True)


def pinned_names(lock_text: str) -> list[str]:
    """Names of the `name==version` requirements in a compiled lock."""
    return sorted({m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", lock_text, re.M)})


def main() -> int:
    """Compile twice: the first pass finds the base-provided names, the second leaves them out."""
    with tempfile.TemporaryDirectory(dir=ROOT / "requirements", prefix=".lock-") as tmp:
        # Inside requirements/ (a relative path), so uv's `# via -r ...` annotations stay stable.
        build_in = Path(tmp).relative_to(ROOT) / "build-system.in"
        (ROOT / build_in).write_text("\n".join(lock_inputs()["build"]) + "\n", encoding="utf-8")
        first = Path(tmp).relative_to(ROOT) / "all.txt"
        run_compile(ROOT, build_in, first, [])
        names = [n for n in pinned_names((ROOT / first).read_text(encoding="utf-8")) if BASE_PROVIDED.match(n)]
        run_compile(ROOT, build_in, LOCK, names)
    text = (ROOT / LOCK).read_text(encoding="utf-8")
    text = re.sub(r"requirements/\.lock-[^/\s]+/build-system\.in", "pyproject.toml [build-system]", text)
    (ROOT / LOCK).write_text(f"{DIGEST_PREFIX}{inputs_digest()}\n{text}", encoding="utf-8")
    print(f"wrote {LOCK} ({len(pinned_names(text))} pinned, {len(names)} left to the base image: {' '.join(names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
