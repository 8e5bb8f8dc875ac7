"""CLI for the decoupled family: `rd3kit teacher train` and `rd3kit eval-decoupled`. Parse, call, render.

Must not: hold evaluation or training logic (rd3kit.api_decoupled, rd3kit.train.decoupled, rd3kit.teacher) or
print tracebacks for expected errors: an RD3Error becomes a one-line message on stderr and its exit code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from rd3kit.api_decoupled import EvalArgs, run_eval
from rd3kit.cli_common import guarded as _guarded
from rd3kit.errors import ConfigError


def _decoupled(ref: str):
    from rd3kit.protocols import get_protocol
    from rd3kit.protocols.decoupled import DecoupledProtocol, TeacherProtocol

    proto = get_protocol(ref)
    if not isinstance(proto, (DecoupledProtocol, TeacherProtocol)):
        raise ConfigError(f"--protocol {ref}: family {proto.family!r}; use `rd3kit eval` for coupled protocols")
    return proto


def teacher_train(
    protocol: str = typer.Option(..., "--protocol", "-p", help="Teacher protocol id@vN (family 'teacher')."),
    train: Path = typer.Option(..., help="Real train split (.npz: x uint8 NHWC, y)."),
    test: Path = typer.Option(..., help="Real test split (.npz)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <id>-v<N>-seed<S>.safetensors and its .json record."),
    seed: Optional[int] = typer.Option(None, help="Seed; default: the protocol's first seed."),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
) -> None:
    """Train the kit's own teacher under a frozen teacher protocol; writes weights (safetensors) and a record."""
    import torch

    from rd3kit.protocols.decoupled import TeacherProtocol
    from rd3kit.sources.realdata import load_split
    from rd3kit.teacher import save_teacher, train_teacher

    proto = _decoupled(protocol)
    if not isinstance(proto, TeacherProtocol):
        raise ConfigError(f"--protocol {protocol}: expected a 'teacher' family protocol, got {proto.family!r}")
    seed = proto.seeds[0] if seed is None else seed
    t0 = time.perf_counter()
    splits = (load_split(proto.data.name, "train", train, None), load_split(proto.data.name, "test", test, None))
    report = lambda e, loss: typer.echo(f"epoch {e + 1}/{proto.epochs}: train loss {loss:.4f} "
                                        f"({time.perf_counter() - t0:.0f} s)", err=True)
    run = train_teacher(proto, splits[0], splits[1], seed, torch.device(device), on_epoch=report)
    record = save_teacher(run, proto, seed, splits, out, time.perf_counter() - t0, device)
    typer.echo(f"{proto.ref} seed {seed}: final-epoch test top1 {100 * run.top1:.2f} %, train {run.train_s:.1f} s, "
               f"wall {time.perf_counter() - t0:.1f} s\nrecord: {record}\n"
               f"use with: --teacher {record.with_suffix('.safetensors')} --teacher-source rd3kit-teacher:{record}")


# `rd3kit eval` options that only a decoupled protocol reads; given with a coupled protocol they are an error.
DECOUPLED_ONLY = ("--teacher", "--teacher-source", "--set-mean", "--set-std", "--ipc", "--subset-seed", "--fkd")


def reject_decoupled_options(ref: str, given: dict[str, object]) -> None:
    """Exit 2 when a coupled protocol is run with options it would silently ignore."""
    extra = [flag for flag, value in given.items() if value is not None]
    if extra:
        raise ConfigError(f"--protocol {ref} is a coupled protocol: {', '.join(extra)} only apply to decoupled "
                          "protocols (family 'decoupled'); drop them")


def reject_coupled_options(ref: str, given: dict[str, object]) -> None:
    """Exit 2 when a decoupled protocol is run with `rd3kit eval` options only the coupled pipeline reads."""
    extra = [flag for flag, value in given.items() if value is not None]
    if extra:
        raise ConfigError(f"--protocol {ref} is a decoupled protocol: {', '.join(extra)} only apply to coupled "
                          "protocols (decoupled runs take no ZCA, IDC decoding, torchvision folders or run cache)")


def single_set(paths: list[str]) -> Path:
    """A decoupled evaluation takes exactly one local SET (a .pt set or a real train .npz)."""
    if len(paths) != 1:
        raise ConfigError(f"a decoupled protocol takes exactly one SET (a .pt file or a train .npz), got {len(paths)}: "
                          f"{paths}")
    return Path(paths[0])


def echo_progress(line: str) -> None:
    """Where `run_eval` reports epochs: stderr, so --json output on stdout stays clean."""
    typer.echo(line, err=True)


def render(result: dict, out: Optional[Path]) -> None:
    for r in result["per_seed"]:
        typer.echo(f"  seed {r['seed']}: final-epoch top1 {100 * r['top1']:.2f} % (train {r['train_s']:.1f} s; "
                   f"diagnostic best-epoch {100 * r['diagnostic_best_epoch_top1']:.2f} % at epoch "
                   f"{r['diagnostic_best_epoch'] + 1})")
    typer.echo(f"{result['protocol']['ref']}: final-epoch top1 {100 * result['mean']:.2f} +- "
               f"{100 * result['std']:.2f} % over {result['n']} seed(s); wall {result['wall_s']:.1f} s"
               + (f"\nrecord: {out}" if out else ""))


def eval_decoupled(
    set_path: Path = typer.Argument(..., metavar="SET", help="Distilled set (.pt, ImageFolder dir/.zip, .parquet) or a real train .npz."),
    protocol: str = typer.Option(..., "--protocol", "-p", help="Decoupled protocol id@vN."),
    teacher: Optional[Path] = typer.Option(None, help="Teacher weights (.safetensors or weights-only .pt/.pth); "
                                           "required unless the protocol replays FKD labels."),
    teacher_source: Optional[str] = typer.Option(None, help="hf://OWNER/REPO@COMMIT/PATH, torchvision:<Weights>, "
                                                 "rd3kit-teacher:REC.json"),
    test: Path = typer.Option(..., help="Real test split (.npz)."),
    space: Optional[str] = typer.Option(None, help="Space of a .pt set: raw01 or normalized."),
    set_mean: Optional[str] = typer.Option(None, help="Producer's mean (comma-separated) for --space normalized."),
    set_std: Optional[str] = typer.Option(None, help="Producer's std (comma-separated) for --space normalized."),
    select: Optional[int] = typer.Option(None, help="Which set of a multi-set DC file (e.g. -1)."),
    ipc: Optional[int] = typer.Option(None, help="For a .npz SET: images per class of the random subset."),
    subset_seed: Optional[int] = typer.Option(None, help="For a .npz SET: seed of the random subset."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds; default: the protocol's list."),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the result record here."),
    fkd: Optional[Path] = typer.Option(None, help="fkd_replay protocols: FKD label dir (epoch_E/batch_B.tar)."),
) -> None:
    """Train students on SET under a decoupled protocol with a checked teacher; report final-epoch top-1."""
    proto = _decoupled(protocol)
    args = EvalArgs(set_path, teacher, teacher_source, test, space, (set_mean, set_std), select, (ipc, subset_seed),
                    seeds, device, out, fkd)
    render(run_eval(proto, args, progress=echo_progress), out)


def register(app: typer.Typer) -> None:
    """Attach `teacher train` and `eval-decoupled` to the main app."""
    teacher_app = typer.Typer(no_args_is_help=True, help="The kit's own teachers, trained under frozen protocols.")
    teacher_app.command("train")(_guarded(teacher_train))
    app.add_typer(teacher_app, name="teacher")
    app.command("eval-decoupled")(_guarded(eval_decoupled))
