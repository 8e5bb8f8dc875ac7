"""The `rd3kit` command line: parse, call the API, render. Heavy imports live inside commands.

Must not: hold evaluation logic (that is rd3kit.api) or print tracebacks for expected errors: an RD3Error
becomes a one-line message on stderr and its exit code (1 verify failed, 2 usage/config, 3 data).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from rd3kit.cli_common import command_line, emit_json, engine_option, guarded, load_set_arg, parse_seeds, render_result
from rd3kit.errors import ConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Reproducibility kit for dataset distillation.")
protocol_app = typer.Typer(no_args_is_help=True, help="Frozen, versioned evaluation protocols.")
app.add_typer(protocol_app, name="protocol")


@protocol_app.command("list")
@guarded
def protocol_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List released protocols with their hashes."""
    from rd3kit.protocols import protocol_hash, released

    rows = [{"ref": ref, "sha256": protocol_hash(p), "family": p.family, "kind": p.kind, "dataset": p.data.name}
            for ref, p in sorted(released().items())]
    if as_json:
        return emit_json(rows)
    width = max(len(r["ref"]) for r in rows)
    for r in rows:
        typer.echo(f"{r['ref']:<{width}}  {r['sha256'][:12]}  {r['family']:<9} {r['kind']:<14} {r['dataset']}")


@protocol_app.command("show")
@guarded
def protocol_show(ref: str, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show one protocol in full, with its sha256."""
    from rd3kit.protocols import get_protocol, protocol_hash

    p = get_protocol(ref)
    doc = {"ref": p.ref, "sha256": protocol_hash(p), "spec": p.model_dump(mode="json")}
    if as_json:
        return emit_json(doc)
    typer.echo(f"{p.ref}  sha256 {doc['sha256']}\n{p.description}\nsource: {p.source}\n")
    typer.echo(json.dumps(doc["spec"], indent=2))


@app.command("eval")
@guarded
def eval_cmd(
    set_paths: List[str] = typer.Argument(..., metavar="SET", help="Distilled set: file(s), folder, catalogue name or hf://REPO@REV/path."),
    protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol id@vN (see `rd3kit protocol list`)."),
    space: Optional[str] = typer.Option(None, help="Normalisation space of the set: raw01, normalized or zca."),
    select: Optional[int] = typer.Option(None, help="Which set of a multi-set DC file (e.g. -1 for the last)."),
    idc_factor: Optional[int] = typer.Option(None, help="IDC multi-formation factor to decode (2 for CIFAR)."),
    test: Optional[Path] = typer.Option(
        None, help="Test split: a CIFAR-style .npz (x uint8 NHWC, y); for tinyimagenet a tiny-imagenet-200/ folder, "
        "an ImageFolder or .parquet (docs/data.md)."),
    train: Optional[Path] = typer.Option(None, help="Train split in the same forms, needed to fit ZCA."),
    data_root: Optional[Path] = typer.Option(None, help="Folder with torchvision datasets."),
    download: bool = typer.Option(False, help="Allow torchvision to download missing real data."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds; default: the protocol's list."),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the result record here."),
    cache_dir: Optional[Path] = typer.Option(None, help="Per-seed run cache (default $RD3KIT_HOME/runs)."),
    no_cache: bool = typer.Option(False, help="Do not read or write the per-seed cache."),
    as_json: bool = typer.Option(False, "--json", help="Print the result record as JSON."),
    engine: str = engine_option(),
    batch_seeds: bool = typer.Option(False, help="Coupled only: the same as --engine multiseed (seeds stacked)."),
    teacher: Optional[Path] = typer.Option(None, help="Decoupled protocols only: teacher weights file."),
    teacher_source: Optional[str] = typer.Option(None, help="Decoupled only: hf://..., torchvision:..., rd3kit-teacher:REC.json"),
    set_mean: Optional[str] = typer.Option(None, help="Decoupled only: producer's mean for --space normalized."),
    set_std: Optional[str] = typer.Option(None, help="Decoupled only: producer's std for --space normalized."),
    ipc: Optional[int] = typer.Option(None, help="Decoupled only, .npz SET: images per class of a random subset."),
    subset_seed: Optional[int] = typer.Option(None, help="Decoupled only, .npz SET: seed of the random subset."),
    fkd: Optional[Path] = typer.Option(None, help="Decoupled fkd_replay only: FKD label dir (epoch_E/batch_B.tar)."),
) -> None:
    """Evaluate a distilled set under a frozen protocol over seeds; reports final-epoch top-1."""
    from rd3kit import api, api_decoupled, cli_decoupled
    from rd3kit.protocols import get_protocol
    from rd3kit.record import write_json
    from rd3kit.sources.realdata import load_split

    proto = get_protocol(protocol)
    if proto.family != "coupled":  # decoupled protocols: same options, the decoupled pipeline (cli_decoupled)
        cli_decoupled.reject_coupled_options(proto.ref, {"--idc-factor": idc_factor, "--train": train,
                                                         "--data-root": data_root, "--cache-dir": cache_dir,
                                                         "--batch-seeds": batch_seeds or None,
                                                         "--engine": None if engine == "per-seed" else engine})
        args = api_decoupled.EvalArgs(cli_decoupled.single_set(set_paths), teacher, teacher_source, test, space,
                                      (set_mean, set_std), select, (ipc, subset_seed), seeds, device, out, fkd)
        result = api_decoupled.run_eval(proto, args, progress=cli_decoupled.echo_progress)
        return emit_json(result) if as_json else cli_decoupled.render(result, out)
    cli_decoupled.reject_decoupled_options(proto.ref, dict(zip(cli_decoupled.DECOUPLED_ONLY, (
        teacher, teacher_source, set_mean, set_std, ipc, subset_seed, fkd))))
    if batch_seeds and engine not in ("per-seed", "multiseed"):
        raise ConfigError(f"--batch-seeds is --engine multiseed; it contradicts --engine {engine}")
    dset = load_set_arg(set_paths, space, select, idc_factor)
    test_split = load_split(proto.data.name, proto.data.test_split, test, data_root, download)
    train_split = load_split(proto.data.name, "train", train, data_root, download) if proto.data.zca else None
    runtime = api.Runtime(device=device, cache_dir=None if no_cache else (cache_dir or api.default_cache_dir()),
                          progress=not as_json and sys.stderr.isatty(),
                          engine="multiseed" if batch_seeds else engine)
    result = api.evaluate(dset, proto, test_split, train=train_split, seeds=parse_seeds(seeds), runtime=runtime)
    result["command"] = command_line(sys.argv[1:])
    if out is not None:
        write_json(out, result)
    if as_json:
        return emit_json(result)
    render_result(result, out)


def _register_groups() -> None:
    """Attach the command groups that live in their own modules (each keeps its heavy imports lazy)."""
    from rd3kit import (cli_audit, cli_baseline, cli_decoupled, cli_hub, cli_reference, cli_report,
                        cli_scale)

    for module in (cli_reference, cli_hub, cli_baseline, cli_audit, cli_decoupled, cli_report, cli_scale):
        module.register(app)


_register_groups()
