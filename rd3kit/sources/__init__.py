"""Where inputs come from: local files, catalogue names and hf:// URIs, resolved to a DistilledSet.

Must not: guess a normalisation space for a local file; the catalogue or the caller states it.
"""

from __future__ import annotations

from pathlib import Path

from rd3kit.errors import ConfigError
from rd3kit.sources.formats import SPACES, DistilledSet, load_local


def resolve_set(args: list[str], space: str | None, select: int | None = None,
                idc_factor: int | None = None) -> DistilledSet:
    """Resolve SET arguments to a loaded, hashed DistilledSet."""
    first = args[0]
    if first.startswith("embedded:"):
        from rd3kit.embedded import digits_subset

        _, method, ipc, seed = first.removeprefix("embedded:").split("/")  # digits/{method}/ipc{N}/seed{S}
        return digits_subset(method, int(ipc.removeprefix("ipc")), int(seed.removeprefix("seed")))
    if first.startswith("hf://") or (len(args) == 1 and not Path(first).exists() and "/" not in first):
        from rd3kit.sources import hub  # the only module that may reach the network

        return hub.resolve(first, space=space, select=select, idc_factor=idc_factor)
    if space is None:
        raise ConfigError(f"{first}: say which space the images are in with --space ({', '.join(SPACES)})")
    paths = [Path(a) for a in args]
    if all(p.suffix == ".pt" or p.is_dir() for p in paths):
        return load_local(paths, space, select, idc_factor)  # type: ignore[arg-type]
    from rd3kit.sources.images import load_any

    return load_any(paths[0], space=space, select=select)
