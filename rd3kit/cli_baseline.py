"""`rd3kit baseline make|forgetting|show`: parse, call rd3kit.baselines, render. Must not hold selection logic itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rd3kit.errors import ConfigError, RD3Error

DEFAULT_DIR = Path("reference") / "baselines"


def _fail(exc: RD3Error) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exc.exit_code)


def make(
    method: str = typer.Option(..., help="random | herding | kcenter"),
    dataset: str = typer.Option(..., help="dataset the train file holds, e.g. cifar10"),
    ipc: int = typer.Option(..., help="images per class"),
    train: Path = typer.Option(..., help="train split .npz (pinned CIFAR-10: shared/data/cifar10/train.npz)"),
    seed: Optional[int] = typer.Option(None, help="required for random; herding and kcenter take none"),
    out: Optional[Path] = typer.Option(None, help="output file [default: reference/baselines/<name>.json]"),
    overwrite: bool = typer.Option(False, help="replace a different selection already stored at the path"),
) -> None:
    """Select a class-balanced coreset and store it as indices into the train file."""
    from rd3kit.baselines import select as sel_mod
    from rd3kit.baselines import store
    from rd3kit.sources.realdata import load_split

    try:
        split = load_split(dataset, "train", train, None)
        picks = sel_mod.select(method, split.images, split.labels, ipc, seed)
        space = None if method == "random" else sel_mod.PIXEL_SPACE
        selection = store.make_selection(picks, method=method, train=split, ipc=ipc, seed=seed, feature_space=space)
        path = out if out is not None else DEFAULT_DIR / selection.name
        written = store.save(selection, path, overwrite=overwrite)
    except RD3Error as exc:
        raise _fail(exc) from None
    typer.echo(f"{'wrote' if written else 'unchanged'} {path}: {method} ipc={ipc} seed={seed} "
               f"({len(selection.flat())} images, train sha256 {split.sha256[:12]})")


def forgetting(
    dataset: str = typer.Option(..., help="dataset the train file holds, e.g. cifar10"),
    train: Path = typer.Option(..., help="train split .npz (pinned CIFAR-10: shared/data/cifar10/train.npz)"),
    protocol: str = typer.Option(..., help="coupled protocol giving network, SGD settings and batch size"),
    epochs: int = typer.Option(..., help="epochs of the scoring run (no augmentation, constant lr)"),
    seed: int = typer.Option(..., help="seed of the scoring run (model init and batch order)"),
    ipc: str = typer.Option(..., help="comma-separated IPCs to store, e.g. 1,10,50"),
    cache_dir: Optional[Path] = typer.Option(None, help="where the per-example correctness is cached [default "
                                                        "$RD3KIT_HOME/forgetting; RD3KIT_HOME: ~/.cache/rd3kit]"),
    out_dir: Path = typer.Option(DEFAULT_DIR, help="folder for the selection files"),
    overwrite: bool = typer.Option(False, help="replace different selections already stored"),
) -> None:
    """Score every train example by forgetting events in one seeded run; store the most-forgotten per class."""
    from rd3kit.baselines.runs import forgetting_selections

    try:
        ipcs = [int(v) for v in ipc.split(",") if v.strip()]
        written = forgetting_selections(dataset, train, protocol, epochs, seed, ipcs, cache_dir, out_dir, overwrite)
    except ValueError:
        raise _fail(ConfigError(f"--ipc must be comma-separated integers, got {ipc!r}")) from None
    except RD3Error as exc:
        raise _fail(exc) from None
    for line in written:
        typer.echo(line)


def show(
    file: Path = typer.Argument(..., help="a selection JSON file"),
    as_json: bool = typer.Option(False, "--json", help="print the stored record as JSON"),
) -> None:
    """Print a stored selection: provenance, and the first indices of each class."""
    from rd3kit.baselines import store

    try:
        selection = store.load(file)
    except RD3Error as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(selection.as_dict(), indent=2))
        return
    rows = [f"{selection.name}  ({file})",
            f"  method         {selection.method}",
            f"  dataset        {selection.dataset}",
            f"  ipc            {selection.ipc}",
            f"  seed           {selection.seed if selection.seed is not None else '- (deterministic)'}",
            f"  feature space  {selection.feature_space or '- (none)'}",
            f"  train sha256   {selection.train_sha256}",
            f"  rd3kit         {selection.rd3kit_version}"]
    for c, idx in selection.indices.items():
        more = f" ... (+{len(idx) - 8})" if len(idx) > 8 else ""
        rows.append(f"  class {c:<3}      {' '.join(str(i) for i in idx[:8])}{more}")
    typer.echo("\n".join(rows))


def register(app: typer.Typer) -> None:
    """Add the `baseline` command group to the main app."""
    sub = typer.Typer(help="Coreset baselines (random, herding, k-center, forgetting) stored as index lists.",
                      no_args_is_help=True)
    sub.command("make")(make)
    sub.command("forgetting")(forgetting)
    sub.command("show")(show)
    app.add_typer(sub, name="baseline")
