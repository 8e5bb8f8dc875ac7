"""Result records: the environment and provenance every number carries, and atomic JSON writing.

Must not: record secrets (tokens, full environment dumps) or anything not needed to trace a number.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import rd3kit

SCHEMA = "rd3kit.result/v1"


@cache
def git_sha() -> str | None:
    """The commit of the rd3kit checkout (None when installed from a wheel), with '-dirty' if modified."""
    root = Path(rd3kit.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "rd3kit"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("RD3KIT_GIT_SHA")
    return sha + ("-dirty" if dirty else "")


def environment(device: str) -> dict:
    """What ran the numbers: versions, device, determinism settings, container identity if any."""
    import torch

    cuda = torch.version.cuda if torch.cuda.is_available() else None
    return {
        "rd3kit": rd3kit.__version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": cuda,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "container": {k: os.environ[k] for k in ("RD3KIT_IMAGE_DIGEST", "RD3KIT_IMAGE_BASE") if k in os.environ} or None,
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically (temp file + rename) so a crash never leaves half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; records are meant to be shared and committed
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    from rd3kit.errors import DataError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
