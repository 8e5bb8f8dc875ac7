"""`rd3kit report [RESULTS...] --out DIR`: parse, call rd3kit.report.write_report, print the paths.

Must not: build, plot or render anything itself (rd3kit.report does), or print tracebacks for expected errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rd3kit.cli_common import emit_json, guarded


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)


@guarded
def report_cmd(
    results: Optional[List[Path]] = typer.Argument(
        None, metavar="[RESULTS]...", help="Result records (rd3kit eval/reproduce --out) and audit records."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for index.html, report.md and plots/."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Leaderboard per dataset and IPC from reference/ and RESULTS: claimed vs reproduced, verdicts, scores."""
    from rd3kit.report import write_report

    written = write_report(list(results or []), out)
    if as_json:
        return emit_json(written)
    typer.echo(written["html"])
    typer.echo(written["markdown"])
    for path in written["plots"]:
        typer.echo(path)
