"""Time DC-style per-seed evaluation and rd3kit's engines (per-seed, multiseed, compiled, compiled over two one-thread
ranks) on the same inputs, interleaved.

Must not: write anywhere but --out, or run anything the command line did not ask for. Every variant runs in this
one process, in rotated order (ABC, BCA, CAB, ...) so a shared machine's load falls on all of them alike; the
FLOP floor comes from FlopCounterMode on the model and a torch.mm rate timed between the variants.

    .venv/bin/python benchmarks/bench_multiseed.py --ipc 1 10 --epochs 301 31 --seeds 10 --reps 1
    .venv/bin/python benchmarks/bench_multiseed.py --render benchmarks/results-cpu.json > benchmarks/results-cpu.md

--epochs gives run_epochs per --ipc entry (301 is the released protocol; less is a stated cut).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from rd3kit import api
from rd3kit.preprocess import prepare_set, prepare_test
from rd3kit.protocols import get_protocol, parse_protocol
from rd3kit.sources.formats import load_local
from rd3kit.sources.realdata import load_split
from rd3kit.train import multiseed as ms
from rd3kit.train.compiled import Compiled
from rd3kit.train.coupled import build_seeded, streams, top1, train

DATA = Path("/work/shared/data")
MM_SIDE = 2048  # 17 GFLOP per product: large enough for MKL's peak path, short enough to repeat often


def short_protocol(run_epochs: int):
    """dc-cifar10@v1 cut to `run_epochs` (DC's decay kept at the middle); everything else as released."""
    released = get_protocol("dc-cifar10@v1")
    if run_epochs == released.run_epochs:
        return released
    doc = released.model_dump(mode="json")
    doc.update(run_epochs=run_epochs, epochs=max(run_epochs - 1, 1), seeds=list(range(10)))
    doc["schedule"]["milestones"] = [(run_epochs - 1) // 2 + 1]  # DC's E//2+1 with E = run_epochs - 1
    return parse_protocol(json.dumps(doc), f"benchmark cut of dc-cifar10@v1 to {run_epochs} epochs")


# ------------------------------------------------------------------ (a) the original loop, written as DC does it


def dc_epoch(mode, loader, net, optimizer):
    """DC utils.epoch: per batch forward, loss, numpy accuracy, and a step in train mode (no no_grad in test)."""
    net.train() if mode == "train" else net.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for img, lab in loader:
        img, lab = img.float(), lab.long()
        output = net(img)
        loss = F.cross_entropy(output, lab)
        correct += int(np.sum(np.equal(np.argmax(output.cpu().data.numpy(), axis=-1), lab.cpu().data.numpy())))
        loss_sum += loss.item() * lab.shape[0]
        seen += lab.shape[0]
        if mode == "train":
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return loss_sum / seen, correct / seen


def dc_train(protocol, x, y, seed, lr):
    """DC evaluate_synset's training half: DataLoader over a TensorDataset, E+1 epochs, SGD re-made at E//2+1."""
    net = build_seeded(protocol, streams(seed, x.device).init, x.device)
    sgd = dict(momentum=protocol.optimizer.momentum, weight_decay=protocol.optimizer.weight_decay)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, **sgd)
    loader = DataLoader(TensorDataset(x, y), batch_size=protocol.batch_size, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(seed))
    for ep in range(protocol.run_epochs):
        dc_epoch("train", loader, net, optimizer)
        if ep in protocol.schedule.milestones:
            lr *= protocol.schedule.gamma
            optimizer = torch.optim.SGD(net.parameters(), lr=lr, **sgd)
    return net


def dc_test(net, xt, yt, batch):
    return dc_epoch("test", DataLoader(TensorDataset(xt, yt), batch_size=batch, shuffle=False, num_workers=0), net, None)[1]


# ------------------------------------------------------------------------------------------------ the variants


def variant_dc(protocol, x, y, xt, yt, seeds):
    t0, nets = time.perf_counter(), [dc_train(protocol, x, y, s, protocol.optimizer.lr) for s in seeds]
    t1 = time.perf_counter()
    accs = [dc_test(n, xt, yt, protocol.test_batch_size) for n in nets]
    return t1 - t0, time.perf_counter() - t1, accs


def variant_single(protocol, x, y, xt, yt, seeds):
    t0, nets = time.perf_counter(), [train(protocol, x, y, s, protocol.optimizer.lr) for s in seeds]
    t1 = time.perf_counter()
    accs = [top1(n, xt, yt, protocol.test_batch_size) for n in nets]
    return t1 - t0, time.perf_counter() - t1, accs


def variant_multi(protocol, x, y, xt, yt, seeds, size=None):
    size = size or ms.seeds_per_pass(protocol, x.shape[0], x.device)
    chunks = [seeds[i:i + size] for i in range(0, len(seeds), size)]
    t0, stacks = time.perf_counter(), [ms.train_seeds(protocol, x, y, c, protocol.optimizer.lr) for c in chunks]
    t1 = time.perf_counter()
    accs = [a for st in stacks for a in ms.top1_all(st, xt, yt, ms.test_batch(protocol, st, xt.device))]
    return t1 - t0, time.perf_counter() - t1, accs


def variant_compiled(protocol, x, y, xt, yt, seeds):
    """`--engine compiled`: a new Compiled per call, as each evaluation makes one. Dynamo keys its graphs on the
    network's code, not the object, so the warm-up's graphs (same shapes) serve it: no compile is timed."""
    trainer, train_s, test_s, accs = Compiled(protocol, x.device), 0.0, 0.0, []
    for s in seeds:  # one held network: each seed is tested before the next one trains
        t0 = time.perf_counter()
        trainer.train(x, y, s, protocol.optimizer.lr)
        t1 = time.perf_counter()
        accs.append(trainer.top1(xt, yt, protocol.test_batch_size))
        train_s, test_s = train_s + t1 - t0, test_s + time.perf_counter() - t1
    return train_s, test_s, accs


RANKS = 2  # rd3kit_compiled_ranks: processes of one thread each, as many as this machine's cores


def variant_compiled_ranks(protocol, x, y, xt, yt, seeds):
    """`rd3kit eval-distributed --nproc 2 --threads 1 --engine compiled`: the seeds split over two gloo ranks of one
    thread each (distributed.spawn, the command's own path). The ranks start, import torch and compile during an
    untimed first job (seeds 0 and 1 of this protocol on 64 test images; Inductor's disk cache holds the graphs
    after the first call); the timed job is the second. train s: the ranks' summed seed training time / ranks;
    test s: the rest of the timed job's wall time (rank 0's, gather included)."""
    from rd3kit.scale import distributed

    dset, test = INPUTS[id(x)]
    test = replace(test, images=test.images[:xt.shape[0]], labels=test.labels[:xt.shape[0]])
    runtime = api.Runtime(cache_dir=None, progress=False, engine="compiled")
    short = replace(test, images=test.images[:64], labels=test.labels[:64])
    jobs = [distributed.DistJob(dset, protocol, short, seeds=tuple(seeds[:RANKS]), runtime=runtime, threads=1),
            distributed.DistJob(dset, protocol, test, seeds=tuple(seeds), runtime=runtime, threads=1)]
    record = distributed.spawn(jobs, nprocs=RANKS, backend="gloo")[1]
    train_s = sum(run["train_s"] for run in record["per_seed"]) / RANKS
    return train_s, record["wall_s"] - train_s, record["top1"]


VARIANTS = {"dc_loop": variant_dc, "rd3kit_single": variant_single, "rd3kit_multiseed": variant_multi,
            "rd3kit_compiled": variant_compiled, "rd3kit_compiled_ranks": variant_compiled_ranks}


# -------------------------------------------------------------------------------------------- floor and machine


def matmul_gflops(products: int = 3) -> float:
    """The median rate of `products` timed torch.mm calls (one call swings by up to ~30 % on this VM)."""
    a, b = torch.randn(MM_SIDE, MM_SIDE), torch.randn(MM_SIDE, MM_SIDE)
    torch.mm(a, b)
    rates = []
    for _ in range(products):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * MM_SIDE**3 / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def _mm_rank(barrier, results) -> None:
    torch.set_num_threads(1)
    a, b = torch.randn(MM_SIDE, MM_SIDE), torch.randn(MM_SIDE, MM_SIDE)
    torch.mm(a, b)
    barrier.wait()
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * MM_SIDE**3 / (time.perf_counter() - t0) / 1e9)
    results.put(statistics.median(rates))


def matmul_gflops_ranks(ranks: int = RANKS) -> float:
    """The summed torch.mm rate of `ranks` one-thread processes timed at once: the machine's rate as the ranks
    variant uses it (it can differ from one process's rate on all threads; both floors are reported)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(ranks), ctx.Queue()
    procs = [ctx.Process(target=_mm_rank, args=(barrier, results)) for _ in range(ranks)]
    for p in procs:
        p.start()
    rates = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def model_flops(protocol, batch: int) -> tuple[float, float]:
    """FLOPs of one training step on `batch` images (forward+backward) and of one test image (forward)."""
    net = build_seeded(protocol, 0, torch.device("cpu"))
    c, (h, w) = protocol.data.channels, protocol.data.image_size
    x, y = torch.randn(batch, c, h, w), torch.randint(0, protocol.data.num_classes, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), y).backward()
    train_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.randn(1, c, h, w))
    return float(train_flops), float(counter.get_total_flops())


def _epochs(ipc: int, args) -> int:
    return args.epochs[args.ipc.index(ipc)] if len(args.epochs) > 1 else args.epochs[0]


def scheduling() -> dict:
    """This process's scheduling: nice, and the autogroup nice that ranks it against other sessions' processes."""
    group = Path("/proc/self/autogroup")
    return {"nice": os.nice(0), "autogroup": group.read_text().strip() if group.exists() else None}


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version(),
            "scheduling": scheduling()}


# --------------------------------------------------------------------------------------------------------- main


# The raw set and test split behind load_inputs' tensors, for variants that hand them to rd3kit whole (ranks).
INPUTS: dict[int, tuple] = {}


def load_inputs(ipc: int, protocol, test_images: int):
    dset = load_local([DATA / f"distilled/dc/res_DC_CIFAR10_ConvNet_{ipc}ipc.pt"], "normalized", select=-1)
    test = load_split("cifar10", "test", DATA / "cifar10/test.npz", None)
    test = replace(test, images=test.images[:test_images].contiguous(), labels=test.labels[:test_images].contiguous())
    x, y = prepare_set(dset, protocol.data, None), dset.labels
    xt, yt = prepare_test(test, protocol.data, None), test.labels
    INPUTS[id(x)] = (dset, test)  # by object: spawn moves a pickled storage to shared memory (new data_ptr)
    return x, y, xt, yt


def bench_ipc(ipc: int, args) -> dict:
    protocol = short_protocol(_epochs(ipc, args))
    x, y, xt, yt = load_inputs(ipc, protocol, args.test_images)
    seeds = list(range(args.seeds))
    step_flops, test_flops = model_flops(protocol, min(x.shape[0], protocol.batch_size))
    steps = -(-x.shape[0] // protocol.batch_size) * protocol.run_epochs
    variants = {name: VARIANTS[name] for name in args.variants}
    warm, one_time = short_protocol(2), {}
    for name, fn in variants.items():  # one-time costs (oneDNN primitives, allocator, compiling) stay out
        t0 = time.perf_counter()
        fn(warm, x, y, xt[:64], yt[:64], seeds[:2])
        one_time[name] = time.perf_counter() - t0
    names, times, accs, mm = list(variants), {k: [] for k in variants}, {}, [matmul_gflops()]
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate the order each repetition
            train_s, test_s, acc = variants[name](protocol, x, y, xt, yt, seeds)
            mm.append(matmul_gflops())  # the rate right after this variant: its own floor, under the same load
            times[name].append({"train_s": train_s, "test_s": test_s, "matmul_gflops_after": mm[-1],
                                "load1": os.getloadavg()[0]})
            if name == "rd3kit_compiled_ranks":
                times[name][-1]["matmul_gflops_ranks_after"] = matmul_gflops_ranks()
            accs[name] = acc
            print(f"ipc{ipc} rep{rep} {name}: train {train_s:.1f}s test {test_s:.1f}s load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)
    rate = statistics.median(mm)
    total_flops = args.seeds * (steps * step_flops + args.test_images * test_flops)
    floor_s = total_flops / (rate * 1e9)
    out = {"ipc": ipc, "protocol": protocol.ref, "n_images": int(x.shape[0]), "run_epochs": protocol.run_epochs,
           "steps_per_seed": steps,
           "seeds": args.seeds, "test_images": args.test_images, "step_gflop": step_flops / 1e9,
           "test_gflop_per_image": test_flops / 1e9, "matmul_gflops": {"median": rate, "max": max(mm), "all": mm},
           "floor_s": floor_s, "variants": {},
           # The warm-up call per variant (2 epochs, 64 test images, 2 seeds): for rd3kit_compiled it holds the
           # process's compile, from an empty Inductor cache when the run started with one (inductor_cache).
           "warmup_s": one_time, "inductor_cache": args.inductor_cache_state}
    for name in names:
        tr = statistics.median(t["train_s"] for t in times[name])
        te = statistics.median(t["test_s"] for t in times[name])
        out["variants"][name] = {
            "train_s_median": tr, "test_s_median": te, "total_s_median": tr + te, "runs": times[name],
            "time_over_floor": (tr + te) / floor_s,
            "time_over_own_floor_median": statistics.median(
                (t["train_s"] + t["test_s"]) * t["matmul_gflops_after"] * 1e9 / total_flops for t in times[name]),
            "per_epoch_per_seed_s": tr / (protocol.run_epochs * args.seeds),
            "per_test_image_per_seed_ms": 1e3 * te / (args.test_images * args.seeds), "top1": accs[name],
        }
        ranks_mm = [t["matmul_gflops_ranks_after"] for t in times[name] if "matmul_gflops_ranks_after" in t]
        if ranks_mm:  # the same variant against the floor at the ranks' own summed one-thread matmul rate
            out["variants"][name]["matmul_gflops_ranks_median"] = statistics.median(ranks_mm)
            out["variants"][name]["time_over_ranks_floor"] = \
                (tr + te) * statistics.median(ranks_mm) * 1e9 / total_flops
    if "dc_loop" in out["variants"]:  # the ratio baseline; a run without it is timed against the floor only
        base = out["variants"]["dc_loop"]["total_s_median"]
        for v in out["variants"].values():
            v["speedup_vs_dc_loop"] = base / v["total_s_median"]
    return out


def equivalence(ipc: int, args) -> dict:
    """Full-length check: each seed's top-1 and weights from multiseed vs the single-seed loop (not timed ABAB)."""
    protocol = short_protocol(_epochs(ipc, args))
    x, y, xt, yt = load_inputs(ipc, protocol, args.test_images)
    seeds, lr = list(range(args.seeds)), protocol.optimizer.lr
    t0 = time.perf_counter()
    stacked = ms.train_seeds(protocol, x, y, seeds, lr)
    multi = ms.top1_all(stacked, xt, yt, ms.test_batch(protocol, stacked, xt.device))
    multi_s, rows = time.perf_counter() - t0, []
    for i, seed in enumerate(seeds):
        t0 = time.perf_counter()
        net = train(protocol, x, y, seed, lr)
        acc = top1(net, xt, yt, protocol.test_batch_size)
        diff = max(float((v - stacked.params[k][i]).abs().max()) for k, v in net.state_dict().items())
        rows.append({"seed": seed, "top1_single": acc, "top1_multiseed": multi[i], "max_abs_weight_diff": diff,
                     "test_images_differing": round(abs(acc - multi[i]) * xt.shape[0]), "single_s": time.perf_counter() - t0})
        print(f"ipc{ipc} seed {seed}: {rows[-1]}", file=sys.stderr, flush=True)
    return {"ipc": ipc, "protocol": protocol.ref, "run_epochs": protocol.run_epochs, "test_images": int(xt.shape[0]),
            "multiseed_s": multi_s, "seeds": rows}


def scaling(ipc: int, args) -> dict:
    """Cost per seed with all S seeds in one stacked pass (S = 1, 2, 5, 10), order rotated per repetition."""
    protocol = short_protocol(_epochs(ipc, args))
    x, y, xt, yt = load_inputs(ipc, protocol, args.test_images)
    sizes, times = (1, 2, 5, 10), {1: [], 2: [], 5: [], 10: []}
    for size in sizes:  # warm-up: one-time costs out of the timings
        variant_multi(short_protocol(2), x, y, xt[:64], yt[:64], list(range(size)), size)
    for rep in range(args.reps):
        for size in sizes[rep % 4:] + sizes[:rep % 4]:
            train_s, test_s, _ = variant_multi(protocol, x, y, xt, yt, list(range(size)), size)
            times[size].append({"train_s": train_s, "test_s": test_s})
            print(f"ipc{ipc} S={size}: train {train_s:.1f}s test {test_s:.1f}s", file=sys.stderr, flush=True)
    rows = {}
    for size in sizes:
        tr = statistics.median(t["train_s"] for t in times[size])
        te = statistics.median(t["test_s"] for t in times[size])
        rows[size] = {"train_s_median": tr, "test_s_median": te, "per_seed_epoch_s": tr / (size * protocol.run_epochs),
                      "per_seed_test_image_ms": 1e3 * te / (size * args.test_images), "runs": times[size]}
    return {"ipc": ipc, "run_epochs": protocol.run_epochs, "test_images": args.test_images, "by_seeds": rows}


def step_compare(ipc: int, args) -> dict:
    """One training step of S seeds three ways: per-seed modules, vmap(functional_call), grouped convolutions."""
    from torch.func import functional_call, stack_module_state, vmap

    protocol, seeds = short_protocol(_epochs(ipc, args)), list(range(args.seeds))
    x, y, _, _ = load_inputs(ipc, protocol, 1)
    xs, ys = torch.stack([x] * len(seeds)), torch.stack([y] * len(seeds))
    nets = [build_seeded(protocol, streams(s, x.device).init, x.device) for s in seeds]
    params = {k: v.requires_grad_() for k, v in stack_module_state(nets)[0].items()}
    stacked = ms.stack_seeded(protocol, seeds, x.device)

    def per_seed():
        for net in nets:
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()

    def vmapped():
        out = vmap(lambda p, xb: functional_call(nets[0], p, (xb,)))(params, xs)
        sum(F.cross_entropy(o, yb) for o, yb in zip(out, ys)).backward()

    def grouped():
        out = stacked.forward(xs)
        sum(F.cross_entropy(o, yb) for o, yb in zip(out, ys)).backward()

    fns, times = {"per_seed_modules": per_seed, "vmap_functional_call": vmapped, "grouped_conv": grouped}, {}
    for name, fn in fns.items():
        fn()
        times[name] = []
    for rep in range(args.reps):
        names = list(fns)
        for name in names[rep % 3:] + names[:rep % 3]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {"ipc": ipc, "seeds": len(seeds), "step_s": times,
            "median_s": {k: statistics.median(v) for k, v in times.items()}}


def image_size_flops() -> list[dict]:
    """FLOPs per image (train step fwd+bwd, test fwd) of each released coupled geometry (counted, not timed)."""
    rows = []
    for ref in ("coupled-digits@v1", "dc-mnist@v1", "dc-cifar10@v1", "coupled-tinyimagenet@v1"):
        protocol = get_protocol(ref)
        train_flops, test_flops = model_flops(protocol, 1)
        rows.append({"protocol": ref, "image": f"{protocol.data.channels}x{protocol.data.image_size[0]}x"
                     f"{protocol.data.image_size[1]}", "depth": protocol.model.depth,
                     "train_gflop_per_image": train_flops / 1e9, "test_gflop_per_image": test_flops / 1e9})
    return rows


def render(doc: dict) -> str:
    """Markdown tables of a results JSON written by this script (timings, floor ratios, accuracies)."""
    lines = []
    for r in doc["results"]:
        if "variants" not in r:
            continue
        mm = r["matmul_gflops"]
        lines += [f"### DC CIFAR-10 IPC{r['ipc']}: {r['seeds']} seeds, {r['run_epochs']} epochs, {r['test_images']} "
                  f"test images", "", f"Model: {r['step_gflop']:.3f} GFLOP per training step ({r['n_images']} images, "
                  f"fwd+bwd), {r['test_gflop_per_image']:.4f} GFLOP per test image. torch.mm {MM_SIDE}^2 fp32: median "
                  f"{mm['median']:.1f} GFLOP/s (max {mm['max']:.1f}) over {len(mm['all'])} timings between the "
                  f"variants. FLOP floor: {r['floor_s']:.1f} s.", "",
                  "| variant | train s | test s | total s | time / floor (own-rep floor) | DC loop / variant, same rep: median "
                  "[per rep] | s per seed-epoch | ms per seed-test-image | top-1 per seed |",
                  "|---|---|---|---|---|---|---|---|---|"]
        loop = r["variants"].get("dc_loop")
        base = [t["train_s"] + t["test_s"] for t in loop["runs"]] if loop else []
        for name, v in r["variants"].items():
            accs = " ".join(f"{a:.3f}" for a in v["top1"])
            ratios = [b / (t["train_s"] + t["test_s"]) for b, t in zip(base, v["runs"])] or [float("nan")]
            per_rep = " ".join(f"{q:.2f}" for q in ratios)
            lines.append(f"| {name} | {v['train_s_median']:.1f} | {v['test_s_median']:.1f} | {v['total_s_median']:.1f} "
                         f"| {v['time_over_floor']:.2f} ({v.get('time_over_own_floor_median', float('nan')):.2f}) "
                         f"| {statistics.median(ratios):.2f} [{per_rep}] "
                         f"| {v['per_epoch_per_seed_s']:.3f} | {v['per_test_image_per_seed_ms']:.2f} | {accs} |")
        lines += ["", *per_rep_floor(r)]
        if "warmup_s" in r:
            cache = r.get("inductor_cache") or {}
            state = ("an Inductor cache that was empty when this benchmark process started (a later setting "
                     "finds the graphs an earlier one compiled)") if cache.get("empty_at_start") else \
                "a warm (or unrecorded) Inductor cache"
            lines += ["", "Warm-up call per variant, not in the times above (2 epochs, 64 test images, 2 seeds; "
                      f"rd3kit_compiled's holds this process's compile, from {state}; rd3kit_compiled_ranks also runs "
                      "an untimed first job in its ranks at every repetition): "
                      + ", ".join(f"{k} {v:.1f} s" for k, v in r["warmup_s"].items()) + "."]
        for name, v in r["variants"].items():
            if "time_over_ranks_floor" in v:
                lines += ["", f"{name} against the floor at its ranks' own rate ({RANKS} one-thread processes timing "
                          f"torch.mm at once, summed: median {v['matmul_gflops_ranks_median']:.1f} GFLOP/s): "
                          f"{v['time_over_ranks_floor']:.2f}x."]
        lines += ["", *extrapolate(r), ""]
    return "\n".join(lines)


def per_rep_floor(r: dict) -> list[str]:
    """Time / floor per repetition, each against the median of the matmul rates timed within that repetition.

    One torch.mm timing swings by up to ~30 % on this shared VM, and the machine itself drifts between
    repetitions (every variant slows together); a repetition's own median rate tracks the drift with less noise
    than the single timing right after a variant (the "own-rep floor" column)."""
    rates, names = r["matmul_gflops"]["all"][1:], list(r["variants"])
    reps = len(rates) // len(names)
    if reps < 1 or len(rates) != reps * len(names):
        return []
    flops = r["floor_s"] * r["matmul_gflops"]["median"]  # GFLOP of the whole setting
    medians = [statistics.median(rates[i * len(names):(i + 1) * len(names)]) for i in range(reps)]
    out = ["Per repetition, against the median matmul rate timed within it (" +
           ", ".join(f"rep {i}: {m:.1f} GFLOP/s" for i, m in enumerate(medians)) + "), time / floor:"]
    for name in names:
        ratios = [(t["train_s"] + t["test_s"]) * m / flops for t, m in zip(r["variants"][name]["runs"], medians)]
        out.append(f"- {name}: " + " ".join(f"{q:.2f}" for q in ratios) + f" (median {statistics.median(ratios):.2f}, "
                   f"max {max(ratios):.2f})")
    return out


def extrapolate(r: dict, epochs: int = 301, test_images: int = 10000, seeds: int = 10) -> list[str]:
    """The released protocol's cost from the measured per-seed-epoch and per-test-image costs (stated as such)."""
    steps = epochs * r["steps_per_seed"] // r["run_epochs"]
    flops = seeds * (steps * r["step_gflop"] + test_images * r["test_gflop_per_image"])
    floor = flops / r["matmul_gflops"]["median"]
    out = [f"Extrapolated to {epochs} epochs x {seeds} seeds x {test_images} test images from the per-seed costs "
           f"above ({flops / 1e3:.1f} TFLOP, floor {floor:.0f} s at the median matmul rate):", "",
           "| variant | train s | test s | total s | time / floor |", "|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        tr = v["per_epoch_per_seed_s"] * epochs * seeds
        te = v["per_test_image_per_seed_ms"] / 1e3 * test_images * seeds
        out.append(f"| {name} | {tr:.0f} | {te:.0f} | {tr + te:.0f} | {(tr + te) / floor:.2f} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, nargs="+", default=[301],
                        help="run_epochs, one per --ipc or one for all (the released protocol: 301)")
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="which variants to time (without dc_loop: no DC-loop ratio, only the floor)")
    parser.add_argument("--equivalence", action="store_true", help="compare multiseed with the single loop instead")
    parser.add_argument("--scaling", action="store_true", help="time multiseed at 1, 2, 5, 10 seeds instead")
    parser.add_argument("--steps", action="store_true", help="time one step: modules vs vmap vs grouped, instead")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results-cpu.json"))
    parser.add_argument("--render", type=Path, default=None, help="print a results JSON as markdown and exit")
    args = parser.parse_args()
    if args.render is not None:
        print(render(json.loads(args.render.read_text())))
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    args.inductor_cache_state = {"dir": cache, "empty_at_start": not (cache and Path(cache).exists() and any(Path(cache).iterdir()))}
    started, load_before = time.time(), os.getloadavg()
    mode = equivalence if args.equivalence else scaling if args.scaling else step_compare if args.steps else bench_ipc
    results = [mode(ipc, args) for ipc in args.ipc]
    doc = {"machine": machine(), "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "wall_s": time.time() - started,
           "results": results, "image_size_flops": image_size_flops()}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    if mode is bench_ipc:
        print(json.dumps({r["ipc"]: {k: round(v["time_over_floor"], 2) for k, v in r["variants"].items()}
                          for r in results}))


if __name__ == "__main__":
    main()
