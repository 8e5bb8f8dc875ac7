"""`rd3kit sweep` and `rd3kit eval-distributed`: parse, call rd3kit.scale, render.

Must not: hold scheduling or evaluation logic (rd3kit.scale and rd3kit.api have it), or import torch,
torch.distributed or submitit at import time (`rd3kit --help` stays instant).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from rd3kit.cli_common import command_line, emit_json, engine_option, guarded, load_set_arg, parse_seeds, render_result
from rd3kit.errors import ConfigError


def sweep_cmd(
    spec: Path = typer.Argument(..., help="Sweep spec (.yaml/.yml/.json): sets, protocols, seeds, data paths."),
    out: Path = typer.Option(..., "--out", "-o", help="Sweep folder: runs/ (per-seed cache), records/, jobs/, submitit/ logs."),
    executor: str = typer.Option("local", help="local (processes here), slurm (sbatch arrays via submitit) or debug (in this process)."),
    device: str = typer.Option("cpu", help="Device each job trains on: cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="torch threads per job (default: torch's choice)."),
    max_parallel: Optional[int] = typer.Option(None, help="local: jobs at once (default 2); slurm: array parallelism."),
    timeout_min: int = typer.Option(240, help="Per-job time limit in minutes (local jobs are killed past it too)."),
    slurm_partition: Optional[str] = typer.Option(None, help="Slurm partition (sbatch --partition)."),
    slurm_account: Optional[str] = typer.Option(None, help="Slurm account (sbatch --account)."),
    slurm_qos: Optional[str] = typer.Option(None, help="Slurm QOS (sbatch --qos)."),
    slurm_constraint: Optional[str] = typer.Option(None, help="Slurm node constraint (sbatch --constraint)."),
    slurm_gpus: Optional[int] = typer.Option(None, help="GPUs per job (sbatch --gpus-per-node)."),
    slurm_cpus: Optional[int] = typer.Option(None, help="CPUs per job (sbatch --cpus-per-task)."),
    slurm_mem_gb: Optional[float] = typer.Option(None, help="Memory per job in GB (sbatch --mem)."),
    as_json: bool = typer.Option(False, "--json", help="Print the sweep summary as JSON."),
) -> None:
    """Fan (set x protocol x seed) out to Slurm or local processes; gather one record per (set, protocol).

    Resumable: seeds whose per-seed cache file exists are not submitted again; rerun to finish the rest.
    """
    from rd3kit.scale.sweep import SweepOptions, run_sweep

    slurm = {"slurm_partition": slurm_partition, "slurm_account": slurm_account, "slurm_qos": slurm_qos,
             "slurm_constraint": slurm_constraint, "slurm_gpus_per_node": slurm_gpus,
             "slurm_cpus_per_task": slurm_cpus, "slurm_mem_gb": slurm_mem_gb}
    if executor != "slurm" and any(v is not None for v in slurm.values()):
        raise ConfigError(f"--slurm-* options apply to --executor slurm, not {executor!r}")
    options = SweepOptions(executor=executor, device=device, threads=threads, max_parallel=max_parallel,
                           timeout_min=timeout_min, slurm=tuple((k, v) for k, v in slurm.items() if v is not None),
                           command=command_line(sys.argv[1:]))
    summary = run_sweep(spec, out, options)
    if as_json:
        emit_json(summary)
    else:
        render_sweep(summary)
    if summary["failed"]:
        typer.secho(f"error: {len(summary['failed'])} job(s) failed (logs above); rerun the same command to retry "
                    "only those", err=True, fg=typer.colors.RED)
        raise typer.Exit(3)


def render_sweep(summary: dict) -> None:
    typer.echo(f"sweep {summary['spec']} ({summary['executor']}): {summary['jobs']} seed runs, "
               f"{summary['already_cached']} already cached, {summary['submitted']} submitted, "
               f"{len(summary['failed'])} failed; {summary['wall_s']:.1f} s")
    for cell in summary["records"]:
        typer.echo(f"  {cell['set']} x {cell['protocol']}: top1 {100 * cell['mean']:.2f} +- {100 * cell['std']:.2f} % "
                   f"over {cell['n']} seeds -> {cell['path']}")
    for name in summary["open"]:
        typer.echo(f"  {name}: not all seeds done; no record yet")
    for row in summary["failed"]:
        typer.echo(f"  failed: {row['set']} x {row['protocol']} seed {row['seed']} (job {row['job_id']}): "
                   f"{row['error']}  log: {row['log']}")


def _under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or {"RANK", "WORLD_SIZE", "MASTER_ADDR"} <= os.environ.keys()


def eval_distributed_cmd(
    set_paths: List[str] = typer.Argument(..., metavar="SET", help="Distilled set, as for `rd3kit eval`."),
    protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol id@vN (coupled family)."),
    nproc: Optional[int] = typer.Option(None, help="Start this many local ranks (omit under torchrun)."),
    backend: str = typer.Option("gloo", help="torch.distributed backend: gloo (CPU) or nccl (one GPU per rank)."),
    mode: str = typer.Option("seeds", help="seeds: ranks split the seeds (numbers identical to `rd3kit eval`); "
                                           "ddp: each seed's batches split over ranks (see docs/scale.md tolerance)."),
    threads: Optional[int] = typer.Option(None, help="torch threads per rank (default: torch's choice)."),
    engine: str = engine_option(),
    space: Optional[str] = typer.Option(None, help="Normalisation space of the set: raw01, normalized or zca."),
    select: Optional[int] = typer.Option(None, help="Which set of a multi-set DC file."),
    idc_factor: Optional[int] = typer.Option(None, help="IDC multi-formation factor to decode."),
    test: Optional[Path] = typer.Option(None, help="Test split file (.npz)."),
    train: Optional[Path] = typer.Option(None, help="Train split file, needed to fit ZCA."),
    data_root: Optional[Path] = typer.Option(None, help="Folder with torchvision datasets."),
    download: bool = typer.Option(False, help="Allow torchvision to download missing real data."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds; default: the protocol's list."),
    device: str = typer.Option("cpu", help="cpu, or cuda (rank r uses cuda:LOCAL_RANK)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the result record here (rank 0)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Per-seed run cache (default $RD3KIT_HOME/runs)."),
    no_cache: bool = typer.Option(False, help="Do not read or write the per-seed cache."),
    as_json: bool = typer.Option(False, "--json", help="Print the result record as JSON (rank 0)."),
) -> None:
    """Evaluate over several processes with torch.distributed (spawned here, or one rank under torchrun)."""
    from rd3kit import api
    from rd3kit.protocols import get_protocol
    from rd3kit.record import write_json
    from rd3kit.scale import distributed
    from rd3kit.sources.realdata import load_split

    if mode not in distributed.MODES or backend not in distributed.BACKENDS:
        raise ConfigError(f"--mode must be one of {', '.join(distributed.MODES)} and --backend one of "
                          f"{', '.join(distributed.BACKENDS)}; got --mode {mode!r} --backend {backend!r}")
    distributed.check_engine(mode, engine)  # before any rank starts
    proto = get_protocol(protocol)

    def load():
        dset = load_set_arg(set_paths, space, select, idc_factor)
        test_split = load_split(proto.data.name, "test", test, data_root, download)
        train_split = load_split(proto.data.name, "train", train, data_root, download) if proto.data.zca else None
        return dset, test_split, train_split

    seed_list = parse_seeds(seeds)
    runtime = api.Runtime(device=device, cache_dir=None if no_cache else (cache_dir or api.default_cache_dir()),
                          progress=False, engine=engine)

    def job(inputs) -> "distributed.DistJob":
        return distributed.DistJob(inputs[0], proto, inputs[1], inputs[2], tuple(seed_list) if seed_list else None,
                                   runtime, mode, threads)

    if _under_torchrun():
        if nproc is not None:
            raise ConfigError("--nproc starts local ranks; under torchrun the world size is torchrun's --nproc_per_node")
        result = _torchrun_rank(distributed, backend, load, job)
        if result is None:  # not rank 0: rank 0 writes and prints
            return
    else:
        result = distributed.spawn([job(load())], nproc or 1, backend)[0]
    argv = sys.argv[1:]  # under `torchrun -m rd3kit.scale.distributed` the subcommand is implied
    result["command"] = command_line(argv if argv[:1] == ["eval-distributed"] else ["eval-distributed", *argv])
    if out is not None:
        write_json(out, result)
    if as_json:
        return emit_json(result)
    render_result(result, out)


def _torchrun_rank(distributed, backend: str, load, job) -> Optional[dict]:
    import torch.distributed as dist

    local_rank = distributed.init_from_env(backend)
    try:
        return distributed.run_job(job(distributed.rank0_first(load)), local_rank)
    finally:
        dist.destroy_process_group()


def register(app: typer.Typer) -> None:
    app.command("sweep")(guarded(sweep_cmd))
    app.command("eval-distributed")(guarded(eval_distributed_cmd))
