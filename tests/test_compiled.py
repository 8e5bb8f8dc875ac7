"""The compiled engine (rd3kit.train.compiled): the per-seed loop under torch.compile.

Checked: each seed equals the eager per-seed path within float order (weights and accuracy), a seed's result
does not depend on which seeds the process compiled and ran before it, the graph is traced once for all seeds,
and the evaluate/CLI plumbing keys and records it apart from the reference engine.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_protocol

from rd3kit import api
from rd3kit.embedded import digits_split, digits_subset
from rd3kit.errors import ConfigError
from rd3kit.preprocess import prepare_set, prepare_test
from rd3kit.train import coupled
from rd3kit.train.compiled import ENGINE, Compiled, train_chunk

# One test image of 360 (the embedded digits test split).
ONE_IMAGE = 1 / 360
# Weights after 4 epochs of SGD, up to ~1.0: Inductor fuses GroupNorm/ReLU/pool and sums in another order, so
# eager and compiled weights differ by rounding grown over the steps; measured max |diff| 3e-8, 1.2e-7 and
# 5.1e-5 for seeds 0, 1, 2 on the 2-core EPYC (seed 2 is not in this test); 1e-3 leaves room for other CPUs.
WEIGHT_ATOL = 1e-3


def _tiny():
    return tiny_protocol(run_epochs=4, epochs=3, schedule__milestones=[2], seeds=[0, 1, 2])


def _inputs(protocol):
    dset = digits_subset("random", 2, 0)
    test = digits_split("test")
    return (prepare_set(dset, protocol.data, None), dset.labels, prepare_test(test, protocol.data, None),
            test.labels)


@pytest.fixture(scope="module")
def compiled_runs():
    """Seeds 0, 1 on one compiled network, then seed 1 on a fresh one: (weights, top-1) per run."""
    protocol = _tiny()
    x, y, xt, yt = _inputs(protocol)
    first = Compiled(protocol, torch.device("cpu"))
    runs = []
    for trainer, seed in ((first, 0), (first, 1), (Compiled(protocol, torch.device("cpu")), 1)):
        net = trainer.train(x, y, seed, protocol.optimizer.lr)
        runs.append(({k: v.detach().clone() for k, v in net.state_dict().items()},
                     trainer.top1(xt, yt, protocol.test_batch_size)))
    return protocol, runs


def test_each_seed_matches_the_eager_per_seed_path_within_float_order(compiled_runs):
    protocol, runs = compiled_runs
    x, y, xt, yt = _inputs(protocol)
    for (weights, acc), seed in zip(runs[:2], (0, 1)):
        net = coupled.train(protocol, x, y, seed, protocol.optimizer.lr)
        eager = net.state_dict()
        assert weights.keys() == eager.keys()
        for name, value in eager.items():
            torch.testing.assert_close(weights[name], value, atol=WEIGHT_ATOL, rtol=0, msg=f"seed {seed} {name}")
        assert acc == pytest.approx(coupled.top1(net, xt, yt, protocol.test_batch_size), abs=ONE_IMAGE)


def test_a_seed_does_not_depend_on_the_seeds_run_before_it(compiled_runs):
    _protocol, runs = compiled_runs
    (after_seed0, acc_after), (fresh, acc_fresh) = runs[1], runs[2]
    assert acc_after == acc_fresh
    for name in fresh:
        assert torch.equal(after_seed0[name], fresh[name]), name
    assert not torch.equal(runs[0][0]["classifier.weight"], fresh["classifier.weight"])  # seeds differ


def test_the_graph_is_traced_once_for_every_seed():
    from torch._dynamo.utils import counters

    protocol = _tiny()
    x, y, _xt, _yt = _inputs(protocol)
    trainer = Compiled(protocol, torch.device("cpu"))
    trainer.train(x, y, 0, protocol.optimizer.lr)
    before = dict(counters["stats"])
    trainer.train(x, y, 1, protocol.optimizer.lr)
    assert counters["stats"].get("unique_graphs", 0) == before.get("unique_graphs", 0)


def test_a_partial_last_test_chunk_is_filled_up_not_compiled_anew():
    from torch._dynamo.utils import counters

    protocol = _tiny()
    x, y, xt, yt = _inputs(protocol)
    trainer = Compiled(protocol, torch.device("cpu"))
    net = trainer.train(x, y, 0, protocol.optimizer.lr)
    trainer.top1(xt[:200], yt[:200], 100)  # compiles the eval graph for chunks of 100
    before = counters["stats"].get("unique_graphs", 0)
    for n in (360, 250, 101):  # last chunks of 60, 50, 1 rows
        acc = trainer.top1(xt[:n], yt[:n], 100)
        eager = coupled.top1(net, xt[:n], yt[:n], n)
        assert acc == pytest.approx(eager, abs=1 / n), n
    assert counters["stats"].get("unique_graphs", 0) == before


def test_chunked_batches_sum_to_the_whole_batch_gradients():
    """coupled.fit's `chunk` (the compiled engine's cache-sized pieces) is the same math in another float order."""
    protocol = _tiny()
    x, y, _xt, _yt = _inputs(protocol)  # 20 images in one batch: pieces of 7, 7 and 6
    nets = []
    for chunk in (None, 7):
        rng = coupled.streams(0, x.device)
        net = coupled.build_seeded(protocol, rng.init, x.device)
        coupled.fit(protocol, net, net, x, y, rng, protocol.optimizer.lr, chunk=chunk)
        nets.append(net.state_dict())
    for name, value in nets[0].items():
        # 4 epochs of SGD from a float-order difference per step; measured max |diff| 1.5e-8 to 3e-8 (seeds 0-2)
        torch.testing.assert_close(nets[1][name], value, atol=1e-5, rtol=0, msg=name)


def test_train_chunk_only_splits_per_sample_nets_on_cpu():
    from rd3kit.protocols import get_protocol

    cifar = get_protocol("dc-cifar10@v1")
    x = torch.zeros(100, 3, 32, 32)
    assert train_chunk(coupled.build_seeded(cifar, 0, x.device), x) == 20
    assert train_chunk(coupled.build_seeded(cifar, 0, x.device), torch.zeros(2, 3, 64, 64)) == 5
    bn = tiny_protocol("dc-cifar10@v1", model__norm="batchnorm")
    assert train_chunk(coupled.build_seeded(bn, 0, x.device), x) is None  # batch statistics couple the images


def _evaluate(tmp_path, seeds, engine):
    runtime = api.Runtime(cache_dir=tmp_path, progress=False, engine=engine)
    return api.evaluate(digits_subset("random", 2, 0), _tiny(), digits_split("test"), seeds=seeds, runtime=runtime)


def test_evaluate_keys_and_records_the_compiled_engine_apart(tmp_path):
    compiled = _evaluate(tmp_path, [0, 1], "compiled")
    assert [(r["cached"], r["engine"]) for r in compiled["per_seed"]] == [(False, ENGINE), (False, ENGINE)]
    assert compiled["engine"] == ENGINE and compiled["runtime"]["engine"] == "compiled"
    single = _evaluate(tmp_path, [0, 1, 2], "per-seed")  # never served the compiled seeds
    assert [(r["cached"], r["engine"]) for r in single["per_seed"]] == [(False, api.PER_SEED)] * 3
    assert single["top1"][:2] == pytest.approx(compiled["top1"], abs=ONE_IMAGE)
    again = _evaluate(tmp_path, [0, 1, 2, 3], "compiled")  # reads the reference first, its own for none left
    assert [(r["cached"], r["engine"]) for r in again["per_seed"]] == [
        (True, api.PER_SEED), (True, api.PER_SEED), (True, api.PER_SEED), (False, ENGINE)]


def test_unknown_engine_is_a_config_error():
    with pytest.raises(ConfigError, match="engine must be one of per-seed, compiled, multiseed, got 'fast'"):
        api.Runtime(engine="fast")


def test_no_compiler_is_a_config_error_naming_the_fix(monkeypatch):
    import shutil

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(ConfigError, match="needs a C/C\\+\\+ compiler on PATH.*--engine per-seed"):
        Compiled(_tiny(), torch.device("cpu"))


def test_cli_engine_option(tmp_path):
    from typer.testing import CliRunner

    from rd3kit.cli import app

    proto = tmp_path / "tiny.json"
    proto.write_text(_tiny().model_dump_json())
    base = ["eval", "embedded:digits/random/ipc2/seed0", "-p", str(proto), "--seeds", "0", "--no-cache", "--json"]
    res = CliRunner().invoke(app, base + ["--engine", "compiled"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["engine"] == ENGINE and doc["per_seed"][0]["engine"] == ENGINE
    bad = CliRunner().invoke(app, base + ["--engine", "fast"])
    flat = " ".join(bad.output.replace("│", " ").split())  # click's usage error is boxed and wrapped
    assert bad.exit_code == 2 and "expected one of per-seed, compiled, multiseed, got 'fast'" in flat
    both = CliRunner().invoke(app, base + ["--engine", "compiled", "--batch-seeds"])
    assert both.exit_code == 2 and "--batch-seeds is --engine multiseed" in both.output
