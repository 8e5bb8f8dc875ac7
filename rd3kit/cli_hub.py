"""Hub commands for the `rd3kit` CLI: `pull`, `push` and `catalog list|show`. Parse, call, render.

Must not: hold Hub logic (rd3kit.sources.hub does), import heavy modules at import time (so `--help` stays
fast), print tracebacks for expected errors, or print a token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from rd3kit.errors import RD3Error

catalog_app = typer.Typer(no_args_is_help=True, help="Known published distilled sets and teachers.")


from rd3kit.cli_common import emit_json as _emit
from rd3kit.cli_common import guarded as _guard


@_guard
def pull_cmd(
    target: str = typer.Argument(..., metavar="TARGET", help="Catalogue name, NS/NAME[@REV] or hf://NS/NAME@REV/PATH."),
    files: Optional[List[str]] = typer.Option(None, "--file", help="Only these repo paths or globs (repeatable)."),
    offline: bool = typer.Option(False, help="Use the local cache only (also on with HF_HUB_OFFLINE=1)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Download a Hub dataset pinned to its commit, lock every file's sha256, verify the lock on every use."""
    from rd3kit.sources import hub

    config = hub.HubConfig.from_env(offline=True if offline else None)
    if "/" not in target and _local_entry(target, as_json):
        return None
    repo, revision, patterns, label = _pull_target(target, files)
    try:
        snap = hub.pull(repo, revision, files=patterns, config=config)
    except RD3Error as exc:
        if label is None:
            raise
        raise type(exc)(f"catalogue entry {label}: {exc}") from None
    out = {"repo": snap.repo, "revision": snap.revision, "commit": snap.commit, "resolved_via": snap.resolved_via,
           "directory": str(snap.directory), "lock": str(snap.lock_path), "files": snap.files}
    if as_json:
        return _emit(out)
    pin = snap.commit if snap.revision == snap.commit else f"{snap.revision} -> {snap.commit}"
    typer.echo(f"{snap.repo}@{pin}: {len(snap.files)} file(s) verified against {snap.lock_path}")
    if snap.resolved_via.startswith("lock"):
        typer.echo(f"note: {snap.revision!r} resolved offline from the ref recorded at an earlier pull; it may have moved")
    typer.echo(f"snapshot: {snap.directory}")


def _pull_target(target: str, files: Optional[List[str]]) -> tuple[str, Optional[str], Optional[list], Optional[str]]:
    """(repo, revision, file patterns, catalogue name or None) for a pull target."""
    from rd3kit.sources.hub import parse_uri

    if "/" not in target:
        from rd3kit.catalog import get_entry

        entry = get_entry(target)
        return entry.hub.repo, entry.hub.commit or entry.hub.revision, list(files or entry.hub.files), target
    ref = parse_uri(target)
    patterns = list(files) if files else ([ref.path, f"{ref.path}/*"] if ref.path else None)
    return ref.repo, ref.revision, patterns, None


def _local_entry(name: str, as_json: bool) -> bool:
    """For a catalogue entry that is a local file: check its sha256 and say where it is (True if handled)."""
    from rd3kit.catalog import get_entry, local_path

    entry = get_entry(name)
    if entry.local is None:
        return False
    path = local_path(entry)
    if as_json:
        _emit({"name": name, "local": str(path), "sha256": entry.local.sha256})
    else:
        typer.echo(f"{name} is a local file, nothing to download: {path} (sha256 verified)")
    return True


@_guard
def push_cmd(
    source: Path = typer.Argument(..., metavar="SET", help="The set: a file or folder the kit reads."),
    repo: str = typer.Argument(..., metavar="REPO", help="Target dataset repo NS/NAME (created if missing)."),
    method: str = typer.Option(..., help="Distillation method, e.g. DC, MTT, SRe2L."),
    dataset: str = typer.Option(..., help="Source dataset id, e.g. cifar10."),
    space: str = typer.Option(..., help="Space of the images: raw01, normalized or zca."),
    ipc: Optional[int] = typer.Option(None, help="Images per class (checked against the labels)."),
    protocol: Optional[str] = typer.Option(None, help="Recommended protocol id@vN (its sha256 goes in the card)."),
    license_id: str = typer.Option("other", "--license", help="Card license id, e.g. mit, cc-by-4.0."),
    claim: Optional[List[str]] = typer.Option(None, help="Claimed accuracy: REFERENCE_ENTRY[=TOP1] (repeatable)."),
    select: Optional[int] = typer.Option(None, help="Which set of a multi-set DC file (e.g. -1)."),
    fmt: str = typer.Option("safetensors", "--format", help="safetensors (exact) or parquet (PNG, raw01 only)."),
    tag: Optional[str] = typer.Option(None, help="Also tag the new commit."),
    private: bool = typer.Option(False, help="Create the repo as private."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Publish a set with a dataset card holding a machine-readable rd3kit block; prints the commit."""
    from rd3kit.sources import hub
    from rd3kit.sources.images import load_any

    dset = load_any(source, space=space, select=select)
    card = hub.build_card(dset, method=method, dataset=dataset, ipc=ipc, protocol=protocol, license_id=license_id,
                          claims=[_parse_claim(c, protocol) for c in claim or []])
    record = hub.push(dset, repo, card, fmt=fmt, tag=tag, private=private, config=hub.HubConfig.from_env())
    if as_json:
        return _emit(record)
    typer.echo(f"pushed {repo}@{record['commit']}" + (f" (tag {tag})" if tag else ""))
    typer.echo(f"get it back with: rd3kit pull {repo}@{record['commit']}")


def _parse_claim(text: str, protocol: Optional[str]) -> dict:
    from rd3kit.errors import ConfigError

    name, _, value = text.partition("=")
    try:
        top1 = float(value) if value else None
    except ValueError:
        raise ConfigError(f"--claim {text!r}: expected REFERENCE_ENTRY[=TOP1] with TOP1 a fraction") from None
    if top1 is not None and not 0 <= top1 <= 1:
        raise ConfigError(f"--claim {text!r}: top1 is a fraction in [0, 1], got {top1}")
    return {"reference": name, "top1": top1, "protocol": protocol}


@catalog_app.command("list")
@_guard
def catalog_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List catalogue entries: name, method, dataset, IPC, format, where, protocols."""
    from rd3kit.catalog import entries

    rows = list(entries().values())
    if as_json:
        return _emit([e.model_dump(mode="json") for e in rows])
    width = max(len(e.name) for e in rows)
    for e in rows:
        protos = ",".join(e.protocols) or "-"
        typer.echo(f"{e.name:<{width}}  {e.method:<8} {e.dataset:<12} ipc {e.ipc or '-':<4} {e.format:<16} {protos:<14} {e.location}")


@catalog_app.command("show")
@_guard
def catalog_show(name: str, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show one catalogue entry in full."""
    from rd3kit.catalog import get_entry

    entry = get_entry(name)
    if as_json:
        return _emit(entry.model_dump(mode="json"))
    typer.echo(f"{entry.name} ({entry.kind}): {entry.description}\nlocation: {entry.location}")
    typer.echo(json.dumps(entry.model_dump(mode="json", exclude={"name", "kind", "description"}), indent=2))


def register(app: typer.Typer) -> None:
    """Attach `pull`, `push` and `catalog` to the main app."""
    app.command("pull")(pull_cmd)
    app.command("push")(push_cmd)
    app.add_typer(catalog_app, name="catalog")
