"""Container policy checks hadolint does not make: pinned bases, non-root, hash-locked installs; reads only.

Rules (each violation names its rule, file and line, expected and got):
  P1  every FROM, after ARG substitution, is pinned as image[:tag]@sha256:<64 hex> (or names an earlier
      stage, or scratch): a tag alone can be moved to other content at any time.
  P2  the final stage's last USER is not root and comes before its ENTRYPOINT.
  P3  every `pip install` uses --require-hashes, or installs local files only (--no-deps and --no-index).
  P4  no script fetched with curl/wget is piped or handed to a shell or interpreter.
  P5  no ADD of a URL or git source (its content is not pinned by anything in the build).
  P6  the final stage's ENTRYPOINT is the exec form ["rd3kit", ...].
  L1  every requirement of a lock file is pinned with == and carries --hash=sha256:<64 hex>.

Usage: python docker/policy.py [Dockerfile [LOCK]]  ->  exit 0 clean, 2 violations (a config error).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import dockerfile

DIGEST_PINNED = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
ROOT_USERS = {"root", "0"}
PIP_INSTALL = re.compile(r"\b(?:pip3?|pip3\.\d+)\s+install\b")
SHELL_SPLIT = re.compile(r"&&|\|\||;|\n|\bthen\b|\belse\b|\bdo\b")
PIPE_TO_SHELL = re.compile(
    r"\b(?:curl|wget)\b[^|;&]*\|\s*(?:sudo\s+)?(?:\S*/)?(?:ba|da|k|z)?sh\b"
    r"|\b(?:curl|wget)\b[^|;&]*\|\s*(?:sudo\s+)?(?:\S*/)?python[\d.]*\b"
    r"|\b(?:ba|da|k|z)?sh\s+(?:-c\s+)?[\"']?\$\(\s*(?:curl|wget)\b"
    r"|<\(\s*(?:curl|wget)\b"
)
REMOTE_SOURCE = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://|git@)")
VAR = re.compile(r"\$\{(\w+)(?::([-+])([^}]*))?\}|\$(\w+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


@dataclass(frozen=True)
class Violation:
    """One broken rule at one line of one file."""

    rule: str
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule} {self.message}"


def substitute(text: str, env: dict[str, str]) -> str:
    """Expand $VAR, ${VAR}, ${VAR:-default} and ${VAR:+alternative} the way the Dockerfile frontend does."""

    def expand(m: re.Match) -> str:
        name = m.group(1) or m.group(4)
        value = env.get(name, "")
        if m.group(2) == "-":
            return value or m.group(3)
        if m.group(2) == "+":
            return m.group(3) if value else ""
        return value

    return VAR.sub(expand, text)


def stages(commands: tuple) -> tuple[list, list[list]]:
    """Split parsed commands into the global ARGs before the first FROM and one list per stage."""
    preamble, per_stage = [], []
    for command in commands:
        if command.cmd.lower() == "from":
            per_stage.append([command])
        elif per_stage:
            per_stage[-1].append(command)
        else:
            preamble.append(command)
    return preamble, per_stage


def global_args(preamble: list, build_args: dict[str, str]) -> dict[str, str]:
    """ARG defaults declared before the first FROM, overridden by build args (as `--build-arg` does)."""
    env: dict[str, str] = {}
    for command in preamble:
        if command.cmd.lower() != "arg":
            continue
        for item in command.value:
            name, _, default = item.partition("=")
            env[name] = build_args.get(name, substitute(default, env))
    return env


def check_from(per_stage: list[list], env: dict[str, str], path: str) -> list[Violation]:
    """P1: every FROM resolves to a digest-pinned reference, an earlier stage or scratch."""
    found, names = [], set()
    for stage in per_stage:
        command = stage[0]
        image = substitute(command.value[0], env)
        if not (DIGEST_PINNED.match(image) or image.lower() in names or image == "scratch"):
            found.append(Violation("P1", path, command.start_line,
                                   f"FROM not pinned by digest: expected image:tag@sha256:<64 hex>, got '{image}' "
                                   f"(from '{command.original}'); read the digest with `skopeo inspect` or "
                                   "`crane digest` and append it"))
        if len(command.value) >= 3 and command.value[1].lower() == "as":
            names.add(command.value[2].lower())
    return found


def is_root(user: str) -> bool:
    """True for root by name or id, with or without a group (root, 0, root:root, 0:0, 0:1000)."""
    return user.split(":", 1)[0].strip() in ROOT_USERS


def check_user_and_entrypoint(final: list, env: dict[str, str], path: str) -> list[Violation]:
    """P2 and P6 on the final stage."""
    found = []
    users = [c for c in final if c.cmd.lower() == "user"]
    entrypoints = [c for c in final if c.cmd.lower() == "entrypoint"]
    entry_line = entrypoints[-1].start_line if entrypoints else final[-1].start_line
    if not users:
        found.append(Violation("P2", path, entry_line,
                               "no USER in the final stage: the container would run as root; add `USER 10001:10001`"))
    else:
        last = users[-1]
        user = substitute(last.value[0], env)
        if is_root(user):
            found.append(Violation("P2", path, last.start_line,
                                   f"final USER is root: expected a non-root user, got '{user}'"))
        elif last.start_line > entry_line:
            found.append(Violation("P2", path, last.start_line,
                                   f"USER comes after ENTRYPOINT (line {entry_line}): expected it before"))
    if not entrypoints:
        found.append(Violation("P6", path, final[-1].start_line, 'no ENTRYPOINT: expected ENTRYPOINT ["rd3kit"]'))
    else:
        last = entrypoints[-1]
        program = last.value[0] if last.value else ""
        if not last.json or not (program == "rd3kit" or program.endswith("/rd3kit")):
            found.append(Violation("P6", path, last.start_line,
                                   f"ENTRYPOINT must be the exec form [\"rd3kit\", ...], got '{last.original}'"))
    return found


def check_pip(command, path: str) -> list[Violation]:
    """P3 on one RUN: each pip install segment needs --require-hashes or --no-deps with --no-index."""
    found = []
    for segment in SHELL_SPLIT.split(" ".join(command.value)):
        if not PIP_INSTALL.search(segment):
            continue
        words = segment.split()
        local_only = "--no-deps" in words and "--no-index" in words
        if "--require-hashes" not in words and not local_only:
            found.append(Violation("P3", path, command.start_line,
                                   f"pip install without --require-hashes: got '{segment.strip()}'; install from "
                                   "a hash-locked file (`--no-deps --require-hashes -r requirements/...`) or, "
                                   "for the local source tree only, use --no-deps --no-index"))
    return found


def check_run_and_add(per_stage: list[list], path: str) -> list[Violation]:
    """P3, P4 and P5 over every stage."""
    found = []
    for command in (c for stage in per_stage for c in stage):
        kind = command.cmd.lower()
        if kind == "run":
            found += check_pip(command, path)
            text = " ".join(command.value)
            if PIPE_TO_SHELL.search(text):
                found.append(Violation("P4", path, command.start_line,
                                       f"remote script run by a shell: got '{command.original}'; download it, "
                                       "check its sha256, then run it"))
        elif kind == "add":
            sources = [v for v in command.value[:-1] if not v.startswith("--")]
            for source in sources:
                if REMOTE_SOURCE.match(source):
                    found.append(Violation("P5", path, command.start_line,
                                           f"ADD of a remote source: got '{source}'; fetch it in a RUN with a "
                                           "checked sha256, or COPY a vendored file"))
    return found


def check_dockerfile(text: str, path: str = "Dockerfile", build_args: dict[str, str] | None = None) -> list[Violation]:
    """All Dockerfile rules (P1-P6) on Dockerfile text, optionally with `--build-arg` overrides applied."""
    preamble, per_stage = stages(dockerfile.parse_string(text))
    if not per_stage:
        return [Violation("P1", path, 1, "no FROM: not a Dockerfile")]
    env = global_args(preamble, build_args or {})
    found = check_from(per_stage, env, path)
    found += check_user_and_entrypoint(per_stage[-1], env, path)
    found += check_run_and_add(per_stage, path)
    return sorted(found, key=lambda v: (v.line, v.rule))


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Requirements-file lines with backslash continuations joined, each with its first line number."""
    joined, start, parts = [], 0, []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not parts:
            start = number
        line = raw.split(" #", 1)[0] if not raw.lstrip().startswith("#") else ""
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        joined.append((start, " ".join(parts).strip()))
        parts = []
    return [(n, line) for n, line in joined if line]


def check_lock(text: str, path: str = "requirements/container.txt") -> list[Violation]:
    """L1: every requirement is pinned with == and has at least one sha256 hash."""
    found, requirements = [], 0
    for number, line in logical_lines(text):
        if line.startswith("-"):
            continue  # options such as --index-url; pip refuses -r/-e lines in hash mode anyway
        requirements += 1
        name = line.split()[0]
        if "==" not in name:
            found.append(Violation("L1", path, number, f"requirement not pinned with ==: got '{name}'"))
        if not HASH.search(line):
            found.append(Violation("L1", path, number,
                                   f"requirement without --hash=sha256: got '{name}'; regenerate with `make lock`"))
    if requirements == 0:
        found.append(Violation("L1", path, 1, "no requirements: expected a compiled lock; run `make lock`"))
    return found


def main(argv: list[str]) -> int:
    """Check the Dockerfile and the lock; print every violation; exit 2 on any."""
    dockerfile_path = Path(argv[1] if len(argv) > 1 else "Dockerfile")
    lock_path = Path(argv[2] if len(argv) > 2 else "requirements/container.txt")
    found = check_dockerfile(dockerfile_path.read_text(encoding="utf-8"), str(dockerfile_path))
    found += check_lock(lock_path.read_text(encoding="utf-8"), str(lock_path))
    for violation in found:
        print(violation, file=sys.stderr)
    print(f"policy: {len(found)} violation(s) in {dockerfile_path} and {lock_path}")
    return 2 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
