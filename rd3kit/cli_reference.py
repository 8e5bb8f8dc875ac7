"""CLI for claims and reproductions: `verify`, `reproduce`, `reference list|show|record|verify-all`.

Must not: hold verdict or store logic (rd3kit.reference does); it parses, calls and renders.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from rd3kit.cli_common import emit_json, engine_option, guarded
from rd3kit.errors import ConfigError

reference_app = typer.Typer(no_args_is_help=True, help="Reference accuracies: papers' claims and the kit's reproductions.")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)
    app.command("reproduce")(reproduce_cmd)
    app.add_typer(reference_app, name="reference")


@guarded
def verify_cmd(
    result_path: Path = typer.Argument(..., metavar="RESULT.json"),
    against: Optional[List[str]] = typer.Option(None, "--against", help="Entry name(s); default: every matching entry."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Verify a result record against reference entries; exit 0 if all hold, 1 if any does not."""
    from rd3kit.record import read_json
    from rd3kit.reference.store import get_entry, load_all
    from rd3kit.reference.verdict import candidates, verify

    result = read_json(result_path)
    entries = [get_entry(n) for n in against] if against else candidates(result, load_all())
    if not entries:
        raise ConfigError(f"{result_path}: no reference entry matches protocol {result['protocol']['ref']} and this "
                          "set; name one with --against")
    verdicts = [verify(result, e) for e in entries]
    if as_json:
        emit_json([v.as_dict() for v in verdicts])
    else:
        for v in verdicts:
            typer.echo(v.render())
    raise typer.Exit(0 if all(v.passed for v in verdicts) else 1)


@guarded
def reproduce_cmd(
    entries: Optional[List[str]] = typer.Argument(None, metavar="[ENTRY]...", help="Reference entries; default: the embedded offline set."),
    data_dir: Optional[Path] = typer.Option(None, help="Shared data folder (default $RD3KIT_DATA or ../shared/data)."),
    device: str = typer.Option("cpu"),
    out: Optional[Path] = typer.Option(None, help="Folder for result records (default ./results)."),
    use_cache: bool = typer.Option(False, "--use-cache", help="Reuse cached per-seed runs (default: rerun everything)."),
    as_json: bool = typer.Option(False, "--json"),
    engine: str = engine_option(),
) -> None:
    """Rerun reference entries from pinned inputs and verify them; with no ENTRY, the embedded default."""
    from rd3kit import api
    from rd3kit.record import write_json
    from rd3kit.reference.reproduce import DEFAULT_ENTRIES, default_data_dir, reproduce, reproductions_for

    names = list(entries or DEFAULT_ENTRIES)
    targets = [r for n in names for r in reproductions_for(n)]
    runtime = api.Runtime(device=device, cache_dir=api.default_cache_dir() if use_cache else None,
                          progress=not as_json and sys.stderr.isatty(), engine=engine)
    out = out or Path("results")
    report, ok = [], True
    for entry in targets:
        if not as_json:
            typer.echo(f"reproducing {entry.name}: {entry.method} {entry.dataset} IPC {entry.ipc} under {entry.protocol}, "
                       f"{len(entry.seeds)} seeds ...")
        t0 = time.perf_counter()
        outcome = reproduce(entry, data_dir or default_data_dir(), runtime)
        took = time.perf_counter() - t0
        write_json(out / f"{entry.name}.json", outcome.result | {"verdicts": [v.as_dict() for v in outcome.verdicts]})
        ok &= outcome.passed
        report.append({"entry": entry.name, "passed": outcome.passed, "wall_s": round(took, 1),
                       "mean": outcome.result["mean"], "std": outcome.result["std"],
                       "verdicts": [v.as_dict() for v in outcome.verdicts], "record": str(out / f"{entry.name}.json")})
        if not as_json:
            typer.echo(f"  top1 {100 * outcome.result['mean']:.2f} +- {100 * outcome.result['std']:.2f} % in {took:.1f} s")
            for v in outcome.verdicts:
                typer.echo("  " + v.render().replace("\n", "\n  "))
    if as_json:
        emit_json(report)
    else:
        typer.echo(f"{sum(r['passed'] for r in report)}/{len(report)} reproduced; records in {out}/")
    raise typer.Exit(0 if ok else 1)


@reference_app.command("list")
@guarded
def reference_list(
    kind: Optional[str] = typer.Option(None, help="claim or reproduction"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List reference entries."""
    from rd3kit.reference.store import load_all

    rows = [{"name": e.name, "kind": e.kind, "method": e.method, "dataset": e.dataset, "ipc": e.ipc,
             "protocol": e.protocol, "mean": e.mean, "std": e.std}
            for e in load_all().values() if kind is None or e.kind == kind]
    if as_json:
        return emit_json(rows)
    for r in rows:
        std = "  n/a" if r["std"] is None else f"{100 * r['std']:5.2f}"
        typer.echo(f"{r['kind']:<12} {r['name']:<60} {100 * r['mean']:6.2f} +- {std} %  {r['protocol']}")


@reference_app.command("show")
@guarded
def reference_show(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show one entry in full."""
    import json

    from rd3kit.reference.store import get_entry

    entry = get_entry(name)
    doc = entry.model_dump(mode="json") | {"mean": entry.mean, "std": entry.std}
    if as_json:
        return emit_json(doc)
    typer.echo(json.dumps(doc, indent=2))


@reference_app.command("record")
@guarded
def reference_record(
    result_paths: List[Path] = typer.Argument(..., metavar="RESULT.json...", help="One record, or several runs of "
                                               "one setup with disjoint seeds (merged into one entry)."),
    name: str = typer.Option(..., help="Entry name (kebab-case)."),
    method: str = typer.Option(..., help="Method that produced the set, e.g. DC, random."),
    claim: Optional[str] = typer.Option(None, help="Claim entry this reproduces."),
    tier: Optional[str] = typer.Option(None, help="cpu, gpu or heavy: which `make verify` target reruns it "
                                       "[default: cpu; heavy for decoupled records]."),
    data_dir: Optional[Path] = typer.Option(None, help="Shared data folder the inputs came from."),
    teacher: Optional[Path] = typer.Option(None, help="Decoupled records: where the teacher file lives now, under "
                                           "the data folder or $RD3KIT_HOME (sha256 checked against the record)."),
    command: str = typer.Option("", help="The command that produced the result (default: from the record)."),
    notes: str = typer.Option("", help="Anything a reader of the entry must know (partial seeds, machine load)."),
    replace: bool = typer.Option(False, "--replace"),
    reason: Optional[str] = typer.Option(None, help="Why an existing entry is replaced (required with --replace)."),
) -> None:
    """Record a result as a reproduction entry; refuses to overwrite without --replace --reason."""
    from rd3kit.record import read_json
    from rd3kit.reference.record import DECOUPLED_SCHEMA, merge_results, reproduction_from_result
    from rd3kit.reference.reproduce import default_data_dir
    from rd3kit.reference.store import save_entry

    if replace and not reason:
        raise ConfigError("--replace needs --reason '...' saying why the old numbers are superseded")
    results = [read_json(p) for p in result_paths]
    result = merge_results(results, [str(p) for p in result_paths]) if len(results) > 1 else results[0]
    # decoupled CPU runs take 5-6 min per seed on an idle thread (30 min per 5-seed entry): never in `make verify`
    tier = tier or ("heavy" if result.get("schema") == DECOUPLED_SCHEMA else "cpu")
    entry = reproduction_from_result(result, name=name, method=method, claim=claim, tier=tier,
                                     data_dir=data_dir or default_data_dir(), command=command, notes=notes,
                                     teacher_file=teacher)
    path = save_entry(entry, replace_reason=reason if replace else None)
    typer.echo(f"recorded {entry.name}: {100 * entry.mean:.2f} +- {100 * entry.std:.2f} % over {len(entry.seeds)} seeds -> {path}")


@reference_app.command("verify-all")
@guarded
def reference_verify_all(
    tier: List[str] = typer.Option(["cpu"], help="Tiers to rerun: cpu, gpu, heavy."),
    data_dir: Optional[Path] = typer.Option(None),
    device: str = typer.Option("cpu"),
    out: Path = typer.Option(Path("results/verify")),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Rerun just these entries (repeatable)."),
    engine: str = engine_option(),
) -> None:
    """Rerun every reproduction of the given tiers whose inputs are available; exit 1 if any drifts."""
    from rd3kit import api
    from rd3kit.record import write_json
    from rd3kit.reference.reproduce import default_data_dir, missing_inputs, reproduce
    from rd3kit.reference.store import Reproduction, get_entry, load_all

    for name in only or []:
        if not isinstance(get_entry(name), Reproduction):  # get_entry names near misses for unknown names
            raise ConfigError(f"--only {name}: a claim, not a reproduction; `rd3kit reproduce {name}` reruns its reproductions")
    data_dir = data_dir or default_data_dir()
    runtime = api.Runtime(device=device, cache_dir=None, progress=sys.stderr.isatty(), engine=engine)
    failed, ran, skipped = [], 0, []
    for entry in load_all().values():
        if not isinstance(entry, Reproduction) or entry.tier not in tier or (only and entry.name not in only):
            continue
        missing = missing_inputs(entry, data_dir)
        if missing:
            skipped.append(f"{entry.name} ({missing})")
            continue
        t0 = time.perf_counter()
        outcome = reproduce(entry, data_dir, runtime)
        ran += 1
        write_json(out / f"{entry.name}.json", outcome.result | {"verdicts": [v.as_dict() for v in outcome.verdicts]})
        for v in outcome.verdicts:
            typer.echo(v.render() + f"  ({time.perf_counter() - t0:.0f} s)")
            if not v.passed:
                failed.append(v.entry)
    for s in skipped:
        typer.echo(f"SKIPPED: {s}")
    typer.echo(f"verify-all: {ran} reran, {len(failed)} failed, {len(skipped)} skipped")
    if failed:
        typer.secho(f"not reproduced: {', '.join(failed)}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
