"""`rd3kit audit SET --protocol ID@vN`: parse, call rd3kit.audit, render. Must not hold audit logic itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from rd3kit.cli_common import engine_option
from rd3kit.errors import ConfigError, RD3Error


def _csv_ints(text: Optional[str], what: str) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None


def _csv_methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in methods if m not in ("herding", "kcenter")]
    if bad:
        raise ConfigError(f"--baselines takes herding and/or kcenter (random always runs), got {bad}")
    return methods


def audit_cmd(
    set_paths: List[str] = typer.Argument(..., metavar="SET", help="Distilled set: file(s), folder or catalogue name."),
    protocol: str = typer.Option(..., "--protocol", "-p",
                                 help="Audit protocol id@vN (e.g. ddranking-dc-cifar10@v1: everything below that "
                                      "moves a score comes from it), or a coupled evaluation protocol for an "
                                      "ad-hoc audit, labelled as such."),
    space: Optional[str] = typer.Option(None, help="Normalisation space of the set: raw01, normalized or zca."),
    select: Optional[int] = typer.Option(None, help="Which set of a multi-set DC file (e.g. -1 for the last)."),
    idc_factor: Optional[int] = typer.Option(None, help="IDC multi-formation factor to decode."),
    train: Optional[Path] = typer.Option(None, help="Train split .npz: random/herding/k-center subsets come from it."),
    test: Optional[Path] = typer.Option(None, help="Test split .npz."),
    seeds: Optional[str] = typer.Option(None, help="Ad-hoc only: comma-separated seeds (default: the protocol's)."),
    baselines: Optional[str] = typer.Option(None, help="Ad-hoc only: coreset arms besides random "
                                                       "(default herding,kcenter)."),
    full_ref: Optional[str] = typer.Option(None, help="Ad-hoc only: reference entry giving full-data top-1."),
    full_run: bool = typer.Option(False, help="Ad-hoc only: train on the whole train set for full-data top-1."),
    w: Optional[float] = typer.Option(None, help="Ad-hoc only: LRS weight of IOR (default 0.5, DD-Ranking's)."),
    g: Optional[float] = typer.Option(None, help="Ad-hoc only: ARS weight of the with-aug gain (default 0.5)."),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
    engine: str = engine_option(),
    cache_dir: Optional[Path] = typer.Option(None, help="Per-seed run cache (default $RD3KIT_HOME/runs)."),
    no_cache: bool = typer.Option(False, help="Do not read or write the per-seed cache."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the audit record here."),
    as_json: bool = typer.Option(False, "--json", help="Print the audit record as JSON."),
) -> None:
    """Audit a distilled set: random/coreset subsets, hard labels, no augmentation; HLR/IOR/LRS/ARS with CIs."""
    opts = dict(locals())
    try:
        record = _run(opts)
    except RD3Error as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    if out is not None:
        from rd3kit.record import write_json

        write_json(out, record)
    if as_json:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
        return
    typer.echo(render(record) + (f"\nrecord: {out}" if out is not None else ""))


# Options that move a score: an audit protocol fixes them, so giving one with it is a usage error.
_AD_HOC = {"seeds": "--seeds", "baselines": "--baselines", "full_ref": "--full-ref", "full_run": "--full-run",
           "w": "--w", "g": "--g"}


def _spec(o: dict):
    """(evaluation protocol, AuditSpec) from an audit protocol, or from the options for an ad-hoc audit."""
    from rd3kit.audit import AuditSpec, evaluation_of, from_protocol, full_from_entry
    from rd3kit.metrics.ddranking import DEFAULT_G, DEFAULT_W
    from rd3kit.protocols import get_protocol

    proto = get_protocol(o["protocol"])
    if proto.family == "audit":
        given = [flag for key, flag in _AD_HOC.items() if o[key] not in (None, False)]
        if given:
            raise ConfigError(f"{', '.join(given)}: {proto.ref} fixes seeds, baselines, A_full, w and g (a frozen "
                              f"audit protocol); drop the option(s), or run an ad-hoc audit with "
                              f"--protocol {proto.evaluation}")
        return evaluation_of(proto), from_protocol(proto)
    if proto.family != "coupled":
        raise ConfigError(f"{proto.ref} is a {proto.family} protocol; audit runs an audit or a coupled protocol")
    if o["full_ref"] and o["full_run"]:
        raise ConfigError("give either --full-ref ENTRY or --full-run, not both")
    full, notes = full_from_entry(o["full_ref"], proto) if o["full_ref"] else (None, [])
    methods = _csv_methods(o["baselines"] if o["baselines"] is not None else "herding,kcenter")
    w = DEFAULT_W if o["w"] is None else o["w"]
    g = DEFAULT_G if o["g"] is None else o["g"]
    return proto, AuditSpec(w=w, g=g, seeds=_csv_ints(o["seeds"], "--seeds"), baselines=methods, full=full,
                            run_full=o["full_run"], notes=tuple(notes))


def _run(o: dict) -> dict:
    from rd3kit import api
    from rd3kit.audit import audit
    from rd3kit.sources import resolve_set
    from rd3kit.sources.realdata import load_split

    proto, spec = _spec(o)
    dset = resolve_set(o["set_paths"], space=o["space"], select=o["select"], idc_factor=o["idc_factor"])
    train_split = load_split(proto.data.name, "train", o["train"], None)
    test_split = load_split(proto.data.name, "test", o["test"], None)
    cache = None if o["no_cache"] else (o["cache_dir"] or api.default_cache_dir())
    runtime = api.Runtime(device=o["device"], cache_dir=cache, progress=not o["as_json"] and sys.stderr.isatty(),
                          engine=o["engine"])
    return audit(dset, proto, test_split, train_split, spec, runtime)


def _pct(values: list[float]) -> str:
    return " ".join(f"{100 * v:.2f}" for v in values)


def _score_line(name: str, value: object, scale: float, unit: str) -> str:
    if not isinstance(value, dict):
        return f"  {name:<18} -  ({value})"
    return (f"  {name:<18} {scale * value['point']:8.2f}{unit}  [{scale * value['low']:.2f}, "
            f"{scale * value['high']:.2f}] {int(100 * value['level'])}%")


def render(record: dict) -> str:
    """Human-readable audit: every arm with its seeds and per-seed top-1, then the scores."""
    s = record["set"]
    ap = record.get("audit_protocol")
    head = f"{ap['ref']} (sha256 {ap['sha256'][:12]}), evaluation " if ap else "AD-HOC audit (no audit protocol), "
    lines = [f"audit of {s['origin']} (IPC {s['ipc']}) under {head}{record['protocol']['ref']} "
             f"(sha256 {record['protocol']['sha256'][:12]}); test: {record['test']['label']}",
             "arms (final-epoch top-1, %):"]
    for name, arm in record["arms"].items():
        seeds = arm["seeds"] if arm["seeds"] is not None else "-"
        cached = f", {arm['cached']} cached" if arm.get("cached") else ""
        lines.append(f"  {name:<11} {100 * arm['mean']:6.2f} +- {100 * arm['std']:5.2f}  [{arm['protocol'] or 'ref'}] "
                     f"seeds {seeds}: {_pct(arm['top1'])}{cached}")
    sc = record["scores"]
    lines.append(f"scores (fractions; HLR/IOR shown in points, LRS/ARS x100; w={sc['w']}, g={sc['g']}):")
    for name in ("hlr", "ior", "ior_noaug", "lrs", "ars"):
        if name in sc:
            lines.append(_score_line(name.upper(), sc[name], 100, ""))
    for method, gain in sc["gain_over"].items():
        lines.append(_score_line(f"gain over {method}", gain, 100, ""))
    compat = sc["ddranking_0_2_0_percent_variant"]
    shown = ", ".join(f"{k.upper()} {v:.4f}" for k, v in compat.items() if k != "note")
    lines.append(f"DD-Ranking 0.2.0 percent variant (unit bug, not a score): {shown or '-'}")
    lines += [f"note: {n}" for n in record["notes"]]
    lines.append(f"wall {record['wall_s']:.1f} s")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add the `audit` command to the main app."""
    app.command("audit")(audit_cmd)
