"""Released protocols: strict loading, canonical hashing, the `id@vN` registry and its lock.

Must not: change a released file's meaning. A changed protocol gets a new version; `lock.json` and a test
enforce it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from functools import cache
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from rd3kit.errors import ConfigError
from rd3kit.protocols.spec import Protocol

RELEASED_DIR = Path(__file__).parent / "released"
LOCK_PATH = Path(__file__).parent / "lock.json"
_ADAPTER = TypeAdapter(Protocol)


def canonical_json(obj: object) -> str:
    """JSON with sorted keys, no whitespace and non-ASCII kept: the bytes the hash is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def protocol_hash(protocol: Protocol) -> str:
    """sha256 hex of the protocol's canonical JSON."""
    return hashlib.sha256(canonical_json(protocol.model_dump(mode="json")).encode()).hexdigest()


def parse_protocol(text: str, origin: str) -> Protocol:
    """Parse one protocol document strictly; errors name `origin` and the offending key."""
    try:
        return _ADAPTER.validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in _key_path(err['loc'])) or '<root>'}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else "")
            for err in exc.errors()
        )
        raise ConfigError(f"{origin}: invalid protocol: {problems}") from None


def _key_path(loc: tuple) -> tuple:
    # A discriminated union prefixes the location with the family tag ("coupled", ...): not a key in the file.
    return loc[1:] if len(loc) > 1 and loc[0] in ("coupled", "decoupled", "teacher", "audit") else loc


def load_protocol_file(path: Path) -> Protocol:
    """Load a protocol file and check that its name is `{id}@v{version}.json`."""
    protocol = parse_protocol(path.read_text(encoding="utf-8"), str(path))
    if path.name != f"{protocol.ref}.json":
        raise ConfigError(f"{path}: file name must be {protocol.ref}.json to match its id and version")
    return protocol


@cache
def released() -> dict[str, Protocol]:
    """All released protocols by `id@vN`; a duplicate ref is an error."""
    found: dict[str, Protocol] = {}
    for path in sorted(RELEASED_DIR.glob("*.json")):
        protocol = load_protocol_file(path)
        if protocol.ref in found:
            raise ConfigError(f"{path}: duplicate protocol {protocol.ref}")
        found[protocol.ref] = protocol
    return found


def get_protocol(ref: str) -> Protocol:
    """Look up `id@vN` (or a path to a protocol JSON file), saying 'did you mean' on a miss."""
    if ref.endswith(".json") and Path(ref).is_file():
        return parse_protocol(Path(ref).read_text(encoding="utf-8"), ref)
    table = released()
    if "@v" not in ref:
        versions = sorted((p for p in table.values() if p.id == ref), key=lambda p: p.version)
        hint = f" Released versions: {', '.join(p.ref for p in versions)}." if versions else ""
        raise ConfigError(f"protocol {ref!r} needs a version, as id@vN.{hint}")
    if ref not in table:
        close = difflib.get_close_matches(ref, table, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else " See `rd3kit protocol list`."
        raise ConfigError(f"unknown protocol {ref!r}.{hint}")
    return table[ref]


def read_lock() -> dict[str, str]:
    """The released `id@vN` -> sha256 map."""
    return json.loads(LOCK_PATH.read_text(encoding="utf-8"))


def check_lock() -> list[str]:
    """Return one message per released protocol whose hash differs from (or is missing in) the lock."""
    lock = read_lock()
    problems = []
    for ref, protocol in released().items():
        digest = protocol_hash(protocol)
        if ref not in lock:
            problems.append(f"{ref}: not in {LOCK_PATH.name}; run `make lock-protocols` to release it")
        elif lock[ref] != digest:
            problems.append(
                f"{ref}: released with sha256 {lock[ref][:12]}..., now {digest[:12]}...; "
                "a released protocol never changes: copy it to a new version instead"
            )
    problems += [f"{ref}: in the lock but its file is gone" for ref in lock if ref not in released()]
    return problems


def release_new() -> list[str]:
    """Add released files that are not yet in the lock; never changes an existing entry. Returns the new refs."""
    lock = read_lock()
    new = {ref: protocol_hash(p) for ref, p in released().items() if ref not in lock}
    if new:
        LOCK_PATH.write_text(json.dumps(dict(sorted((lock | new).items())), indent=2) + "\n", encoding="utf-8")
    return sorted(new)
