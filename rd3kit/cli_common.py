"""Pieces every command module shares: error guarding with exit codes, JSON output.

Must not: import any command module (they all import this one) or anything heavy.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Callable, List, Optional

import click
import typer

from rd3kit import engines
from rd3kit.errors import RD3Error, redact


def engine_option() -> str:
    """`--engine`, shared by the commands that train coupled seeds."""
    return typer.Option(engines.PER_SEED, "--engine", callback=_check_engine, help=engines.HELP)


def _check_engine(value: str) -> str:
    if value not in engines.ENGINES:
        raise typer.BadParameter(f"expected one of {', '.join(engines.ENGINES)}, got {value!r}")
    return value


# Exit codes 0-3 are rd3kit's documented outcomes (README); 4 says the command crashed on a bug.
INTERNAL_ERROR = 4


def guarded(fn: Callable) -> Callable:
    """Turn rd3kit errors into a short message (tokens redacted) and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RD3Error as exc:
            typer.secho(f"error: {redact(str(exc))}", err=True, fg=typer.colors.RED)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.secho("interrupted: finished seeds are cached; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.ClickException,
                click.exceptions.Abort):
            raise  # typer.Exit and usage errors already carry their exit code
        except Exception as exc:  # a bug, not a verdict: exit 1 must keep meaning "a number did not hold"
            import traceback

            typer.echo(redact(traceback.format_exc()), err=True)
            typer.secho(f"internal error ({type(exc).__name__}): a bug in rd3kit, please report it with the "
                        "traceback above", err=True, fg=typer.colors.RED)
            raise typer.Exit(INTERNAL_ERROR) from None

    return wrapper


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def load_set_arg(paths: List[str], space: str, select: Optional[int], idc_factor: Optional[int]):
    """Resolve SET arguments: local files now; catalogue names and hf:// URIs when the Hub module is present."""
    from rd3kit.sources import resolve_set

    return resolve_set(paths, space=space, select=select, idc_factor=idc_factor)


def command_line(argv: list[str]) -> str:
    import shlex

    return "rd3kit " + " ".join(shlex.quote(a) for a in argv)


def parse_seeds(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise RD3Error(f"--seeds must be comma-separated integers, got {text!r}") from None


def render_result(result: dict, out: Optional[Path]) -> None:
    s = result["inputs"]["set"]
    typer.echo(f"{result['protocol']['ref']} (sha256 {result['protocol']['sha256'][:12]}) on {s['origin']} "
               f"(IPC {s['ipc']}, {s['n']} images), test: {result['inputs']['test']['label']}")
    for r in result["per_seed"]:
        typer.echo(f"  seed {r['seed']:>3}: top1 {100 * r['top1']:6.2f} %  ({r['wall_s']:.1f} s{', cached' if r.get('cached') else ''})")
    typer.echo(f"final-epoch top1: {100 * result['mean']:.2f} +- {100 * result['std']:.2f} % over {result['n']} seeds "
               f"(lr {result['lr']['value']:g} from {result['lr']['source']}); wall {result['wall_s']:.1f} s")
    if out is not None:
        typer.echo(f"record: {out}")
