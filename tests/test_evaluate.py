"""The evaluator: determinism, resumption after a crash, the run cache, and a tiny deterministic snapshot."""

from __future__ import annotations

import pytest
import torch

from rd3kit import api
from rd3kit.embedded import digits_split, digits_subset
from rd3kit.errors import DataError


@pytest.fixture(scope="module")
def inputs():
    return digits_subset("random", 2, 0), digits_split("test")


def run(protocol, inputs, tmp_path=None, seeds=None):
    dset, test = inputs
    runtime = api.Runtime(cache_dir=tmp_path, progress=False)
    return api.evaluate(dset, protocol, test, seeds=seeds, runtime=runtime)


def test_same_seed_same_result_bitwise(tiny, inputs):
    a, b = run(tiny, inputs), run(tiny, inputs)
    assert a["top1"] == b["top1"] and a["seeds"] == [0, 1, 2]


def test_different_seeds_differ(tiny, inputs):
    from rd3kit.train.coupled import train

    dset, _ = inputs
    x = dset.images.sub(0.3).div(0.37)
    w0 = train(tiny, x, dset.labels, 0, 0.01).state_dict()
    w1 = train(tiny, x, dset.labels, 1, 0.01).state_dict()
    assert not torch.equal(w0["classifier.weight"], w1["classifier.weight"])


def test_training_leaves_global_rng_alone(tiny, inputs):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    run(tiny, inputs)
    assert torch.equal(torch.rand(1), before)


def test_tiny_run_snapshot(tiny, inputs, num_regression):
    """Final-epoch accuracies of a 4-epoch run; exact on one machine, tolerance for other CPUs' float order."""
    result = run(tiny, inputs)
    # 1/360 is one test image: a different BLAS may flip a borderline prediction, never more than a couple.
    num_regression.check({"top1": result["top1"]}, default_tolerance={"atol": 2.5 / 360})


def test_crash_keeps_finished_seeds_and_rerun_finishes(tiny, inputs, tmp_path, monkeypatch):
    calls = []
    real = api._run_seed

    def crashing(protocol, prepared, seed, lr, runtime, trainer=None):
        if seed == 2:
            raise KeyboardInterrupt
        calls.append(seed)
        return real(protocol, prepared, seed, lr, runtime, trainer)

    monkeypatch.setattr(api, "_run_seed", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(tiny, inputs, tmp_path)
    assert calls == [0, 1] and len(list(tmp_path.glob("*.json"))) == 2
    monkeypatch.setattr(api, "_run_seed", real)
    result = run(tiny, inputs, tmp_path)
    assert [r["cached"] for r in result["per_seed"]] == [True, True, False]
    assert result["top1"] == run(tiny, inputs)["top1"]  # resumed == uninterrupted
    # each seed keeps the thread count it ran with (float order depends on it), cached or not
    assert [r["torch_threads"] for r in result["per_seed"]] == [torch.get_num_threads()] * 3


def test_cache_key_changes_with_protocol(tiny, inputs, tmp_path):
    from conftest import tiny_protocol

    run(tiny, inputs, tmp_path)
    other = tiny_protocol(run_epochs=5, epochs=4, schedule__milestones=[2], seeds=[0, 1, 2])
    result = run(other, inputs, tmp_path)
    assert not any(r["cached"] for r in result["per_seed"])


def test_record_carries_provenance(tiny, inputs):
    r = run(tiny, inputs, seeds=[0])
    assert r["protocol"]["ref"] == "coupled-digits@v1" and len(r["protocol"]["sha256"]) == 64
    assert r["inputs"]["set"]["files"] and r["inputs"]["test"]["sha256"]
    env = r["environment"]
    assert {"rd3kit", "git_sha", "torch", "device", "torch_threads", "deterministic_algorithms"} <= set(env)
    assert r["metric"] == "top1_final_epoch" and r["per_seed"][0]["wall_s"] > 0
    assert 0.0 <= r["top1"][0] <= 1.0


@pytest.mark.parametrize("mutate, message", [
    (lambda x, y: (x[:, :, :4], y), "expects"),
    (lambda x, y: (x.repeat(1, 3, 1, 1), y), "channels"),
    (lambda x, y: (x.masked_fill(torch.zeros_like(x, dtype=torch.bool).index_fill_(0, torch.tensor([0]), True), float("nan")), y), "NaN"),
    (lambda x, y: (x, y.masked_fill(y == 9, 10)), "outside"),
    (lambda x, y: (x[y != 3], y[y != 3]), "no images"),
    (lambda x, y: (x[1:], y[1:]), "not constant"),
])
def test_bad_sets_are_data_errors(tiny, inputs, mutate, message):
    from dataclasses import replace

    dset, test = inputs
    x, y = mutate(dset.images, dset.labels)
    with pytest.raises(DataError, match=message) as info:
        api.evaluate(replace(dset, images=x, labels=y), tiny, test, runtime=api.Runtime(cache_dir=None, progress=False))
    assert info.value.exit_code == 3 and "embedded:digits" in str(info.value)


def test_zca_protocol_needs_train(inputs):
    from conftest import tiny_protocol

    from rd3kit.errors import ConfigError

    zca = tiny_protocol(run_epochs=2, epochs=1, schedule__milestones=[0], data__zca={"eps": 0.1, "fit_on": "train"})
    with pytest.raises(ConfigError, match="--train"):
        run(zca, inputs)


def test_zca_run_whitens_with_the_train_split(inputs):
    from conftest import tiny_protocol

    zca = tiny_protocol(run_epochs=2, epochs=1, schedule__milestones=[0], seeds=[0],
                        data__zca={"eps": 0.1, "fit_on": "train"})
    dset, test = inputs
    r = api.evaluate(dset, zca, test, train=digits_split("train"), runtime=api.Runtime(cache_dir=None, progress=False))
    assert r["inputs"]["train"]["sha256"] == digits_split("train").sha256
