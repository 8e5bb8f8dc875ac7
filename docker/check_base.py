"""Build-time check that the base ships the torch the lock was made for and the venv's needs are met; reads only.

Run by the Dockerfile (`CHECK_BASE=1`, the default) as `python check_base.py requirements/base-image.txt`.
A version mismatch means BASE_IMAGE was bumped without requirements/base-image.txt (or the reverse): the
locked dependencies were then resolved against another torch, so the build stops instead of shipping that.
The requirement check is `pip check` limited to the venv's packages: the base's own packages are not ours
to judge (a base may carry, say, a torchaudio built for an older torch), but everything we install is.
"""

from __future__ import annotations

import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement


def expected_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of the base pins file as {name: version}."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def mismatches(pins: dict[str, str]) -> list[str]:
    """One message per pinned package whose installed public version differs (local labels like +cu130 ignored)."""
    problems = []
    for name, want in sorted(pins.items()):
        try:
            got = metadata.version(name)
        except metadata.PackageNotFoundError:
            got = "not installed"
        if got.split("+", 1)[0] != want:
            problems.append(f"{name}: expected {want} (requirements/base-image.txt), got {got} in the base image")
    return problems


def unmet_requirements() -> list[str]:
    """Requirements of packages installed in this environment's own site-packages that nothing satisfies."""
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    problems = []
    for dist in metadata.distributions(path=paths):
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # another platform's or an extra's requirement
            try:
                got = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{dist.metadata['Name']} requires {req}: not installed")
                continue
            if not req.specifier.contains(got, prereleases=True):
                problems.append(f"{dist.metadata['Name']} requires {req}: got {got}")
    return sorted(set(problems))


def main(argv: list[str]) -> int:
    """Exit 0 when the base matches the pins and requirements are met, 3 (integrity error) otherwise."""
    problems = mismatches(expected_pins(Path(argv[1]))) + unmet_requirements()
    for problem in problems:
        print(f"check_base: {problem}", file=sys.stderr)
    if problems:
        print("check_base: bump BASE_IMAGE and requirements/base-image.txt together, then run `make lock`",
              file=sys.stderr)
        return 3
    print("check_base: base torch/torchvision match requirements/base-image.txt; all venv requirements met")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
