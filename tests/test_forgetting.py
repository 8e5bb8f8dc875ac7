"""Forgetting scores: event counting and class-balanced selection by hand, a seeded tiny training run
(deterministic, cached), the stored file format, and `rd3kit baseline forgetting` on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from rd3kit.audit import variant
from rd3kit.baselines import forgetting as fg
from rd3kit.baselines import runs, store
from rd3kit.errors import ConfigError, DataError
from rd3kit.protocols import get_protocol
from rd3kit.sources.realdata import RealSplit


def test_counts_by_hand():
    correct = np.array([[1, 0, 1, 0],
                        [0, 0, 1, 1],
                        [1, 0, 0, 1],
                        [0, 0, 1, 1]], dtype=bool)
    # ex0: 1->0 at 1 and at 3 (2 events); ex1 never correct (inf); ex2: 1->0 at 2 (1); ex3: learned, never forgotten.
    assert fg.forgetting_counts(correct).tolist() == [2.0, np.inf, 1.0, 0.0]
    with pytest.raises(ConfigError):
        fg.forgetting_counts(np.zeros(3, dtype=bool))


def test_selection_is_class_balanced_most_forgotten_first_ties_lowest_index():
    counts = np.array([0, 3, 3, np.inf, 1, 5, 0, 2])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert fg.select_forgetting(counts, labels, 2) == {0: [3, 1], 1: [5, 7]}
    assert fg.select_forgetting(counts, labels, 3) == {0: [3, 1, 2], 1: [5, 7, 4]}
    with pytest.raises(ConfigError):
        fg.select_forgetting(counts[:-1], labels, 1)


def _tiny_protocol():
    base = get_protocol("coupled-digits@v1")
    return variant(base, batch_size=16)


def _split(n_per_class: int = 12, classes: int = 10) -> RealSplit:
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    # Class-dependent brightness plus noise: learnable, but not at once, so some examples flip.
    base = (labels.float() * 25).view(-1, 1, 1, 1)
    noise = torch.randint(0, 120, (labels.numel(), 1, 8, 8), generator=g).float()
    images = (base + noise).clamp(0, 255).to(torch.uint8)
    return RealSplit(images, labels, "digits", "train", "synthetic", "cd" * 32, "synthetic digits-like")


def test_run_is_seeded_and_shapes_match():
    split = _split()
    run = fg.ForgettingRun(_tiny_protocol(), epochs=3, seed=0)
    a = fg.record_correctness(run, split.images, split.labels)
    b = fg.record_correctness(run, split.images, split.labels)
    assert a.shape == (3, split.labels.numel()) and a.dtype == bool
    assert np.array_equal(a, b)
    c = fg.record_correctness(fg.ForgettingRun(_tiny_protocol(), epochs=3, seed=1), split.images, split.labels)
    assert not np.array_equal(a, c)  # another seed: another init and batch order
    with pytest.raises(ConfigError):
        fg.record_correctness(fg.ForgettingRun(_tiny_protocol(), epochs=1, seed=0), split.images, split.labels)


def test_selections_store_and_reload_with_their_run(tmp_path):
    split = _split()
    run = fg.ForgettingRun(_tiny_protocol(), epochs=3, seed=0)
    correct, _, cached = runs.cached_correctness(run, split, tmp_path)
    again, _, cached_again = runs.cached_correctness(run, split, tmp_path)
    assert not cached and cached_again and np.array_equal(correct, again)
    counts = fg.forgetting_counts(correct)
    sel = store.make_selection(fg.select_forgetting(counts, split.labels, 2), method="forgetting", train=split,
                               ipc=2, seed=0, feature_space=None, run=run.describe())
    path = tmp_path / sel.name
    store.save(sel, path)
    loaded = store.load(path)
    assert sel.name == "digits-forgetting-ipc2-seed0.json" and loaded.run["epochs"] == 3
    assert loaded.flat() == sel.flat()
    doc = path.read_text().replace('"run": {', '"run_": {')
    path.write_text(doc)
    with pytest.raises(DataError, match="run"):
        store.load(path)
    with pytest.raises(DataError, match="run"):
        store.make_selection({0: [0]}, method="forgetting", train=split, ipc=1, seed=0, feature_space=None)


def test_cli_forgetting_writes_selections(tmp_path, monkeypatch):
    from rd3kit.cli_baseline import register

    split = _split()
    monkeypatch.setattr("rd3kit.sources.realdata.load_split", lambda *a, **k: split)
    monkeypatch.setattr("rd3kit.protocols.get_protocol", lambda ref: _tiny_protocol())
    app = typer.Typer()
    register(app)
    args = ["baseline", "forgetting", "--dataset", "digits", "--train", str(tmp_path / "unused.npz"),
            "--protocol", "tiny", "--epochs", "2", "--seed", "0", "--ipc", "1,3",
            "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(tmp_path / "sel")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "sel").iterdir()) == ["digits-forgetting-ipc1-seed0.json",
                                                                    "digits-forgetting-ipc3-seed0.json"]
    rerun = CliRunner().invoke(app, args)
    assert rerun.exit_code == 0 and rerun.output.count("unchanged") == 2 and "cached" in rerun.output
    bad = CliRunner().invoke(app, args[:-6] + ["--ipc", "x", "--out-dir", str(tmp_path / "sel")])
    assert bad.exit_code == 2
