"""Coreset selectors, the selection store and `rd3kit baseline`: tiny synthetic data, plus the committed
CIFAR-10 selections checked against the pinned train file when shared/data is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from rd3kit.baselines import select as sel
from rd3kit.baselines import store
from rd3kit.cli_baseline import register
from rd3kit.errors import ConfigError, DataError
from rd3kit.sources.realdata import RealSplit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TRAIN_NPZ = SHARED / "cifar10" / "train.npz"
REF_DIR = ROOT / "reference" / "baselines"
FAKE_SHA = "ab" * 32


def _split(images: torch.Tensor, labels: torch.Tensor, sha: str = FAKE_SHA) -> RealSplit:
    return RealSplit(images, labels, "cifar10", "train", "synthetic", sha, "synthetic")


def _line_class() -> tuple[torch.Tensor, torch.Tensor]:
    """One class of 1-pixel images with values 0, 100, 120, 250 (mean 117.5) and one class of 3 others."""
    values = torch.tensor([0, 100, 120, 250, 10, 20, 30], dtype=torch.uint8)
    return values.reshape(-1, 1, 1, 1), torch.tensor([0, 0, 0, 0, 1, 1, 1])


def _blobs(n_per_class: int = 40, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_per_class * classes, 3, 4, 4), generator=g, dtype=torch.uint8)
    return images, torch.arange(classes).repeat_interleave(n_per_class)


def test_herding_hand_example():
    images, labels = _line_class()
    # 120 is closest to the mean 117.5; then the x minimising |117.5 - (120 + x)/2| is 100.
    assert sel.select_herding(images, labels, 2)[0] == [2, 1]


def test_kcenter_hand_example():
    images, labels = _line_class()
    # Start at 120 (closest to the mean), then 250 (130 away beats 0 at 120), then 0 (120 from 120).
    assert sel.select_kcenter(images, labels, 3)[0] == [2, 3, 0]
    assert sel.select_kcenter(images, labels, 3)[1] == [5, 4, 6]  # 10 and 30 tie: lowest index first


def test_herding_first_pick_is_closest_to_class_mean():
    images, labels = _blobs()
    picks = sel.select_herding(images, labels, 5)
    for c, idx in picks.items():
        pos = torch.nonzero(labels == c).flatten().numpy()
        feats = sel.pixel_embed(images[pos])
        assert idx[0] == pos[np.argmin(((feats - feats.mean(0)) ** 2).sum(1))]
        assert len(set(idx)) == 5 and set(idx) <= set(pos.tolist())


def test_kcenter_second_pick_is_farthest_from_first():
    images, labels = _blobs()
    for c, idx in sel.select_kcenter(images, labels, 4).items():
        pos = torch.nonzero(labels == c).flatten().numpy()
        feats = sel.pixel_embed(images[pos])
        dist = ((feats - sel.pixel_embed(images[idx[0]:idx[0] + 1])) ** 2).sum(1)
        assert idx[1] == pos[np.argmax(dist)]


def test_herding_mean_beats_random_subset_mean():
    images, labels = _blobs(n_per_class=200, classes=1)
    feats = sel.pixel_embed(images)
    herd = sel.select_herding(images, labels, 10)[0]
    rand = sel.select_random(labels, 10, seed=0)[0]
    gap = lambda idx: np.linalg.norm(feats[idx].mean(0) - feats.mean(0))  # noqa: E731
    assert gap(herd) < gap(rand)


def test_random_is_class_balanced_seeded_and_reproducible():
    _, labels = _blobs(n_per_class=50, classes=4)
    a = sel.select_random(labels, 7, seed=3)
    assert a == sel.select_random(labels, 7, seed=3)
    assert a != sel.select_random(labels, 7, seed=4)
    for c, idx in a.items():
        assert len(idx) == len(set(idx)) == 7 and all(int(labels[i]) == c for i in idx)
    # A class's draw depends on (seed, class) only, not on which other classes are present.
    only_two = sel.select_random(labels[labels == 2], 7, seed=3)
    assert [i + 100 for i in only_two[2]] == a[2]


def test_selectors_are_deterministic_and_validate():
    images, labels = _blobs()
    assert sel.select("herding", images, labels, 3, None) == sel.select("herding", images, labels, 3, None)
    assert sel.select("kcenter", images, labels, 3, None) == sel.select("kcenter", images, labels, 3, None)
    for bad in [lambda: sel.select("random", images, labels, 3, None),
                lambda: sel.select("herding", images, labels, 3, 0),
                lambda: sel.select("forgetting", images, labels, 3, None),
                lambda: sel.select_random(labels, 41, seed=0),
                lambda: sel.select_random(labels, 0, seed=0)]:
        with pytest.raises(ConfigError):
            bad()


def _selection(method: str = "random", seed: int | None = 1) -> tuple[store.Selection, RealSplit]:
    images, labels = _blobs()
    split = _split(images, labels)
    picks = sel.select(method, images, labels, 4, seed)
    space = None if method == "random" else sel.PIXEL_SPACE
    return store.make_selection(picks, method=method, train=split, ipc=4, seed=seed, feature_space=space), split


def test_store_round_trip_and_rebuild(tmp_path):
    selection, split = _selection("herding", None)
    path = tmp_path / selection.name
    assert selection.name == "cifar10-herding-ipc4.json"
    assert store.save(selection, path) is True
    assert store.save(selection, path) is False  # identical content: nothing rewritten
    loaded = store.load(path)
    assert loaded == selection and store.to_json(loaded) == path.read_text()
    images, labels = store.rebuild(loaded, split)
    idx = torch.tensor(selection.flat())
    assert torch.equal(images, split.images[idx]) and torch.equal(labels, torch.arange(3).repeat_interleave(4))


def test_store_refuses_overwrite_and_wrong_train(tmp_path):
    first, split = _selection("random", 1)
    other, _ = _selection("random", 2)
    path = tmp_path / "sel.json"
    store.save(first, path)
    with pytest.raises(ConfigError, match="overwrite"):
        store.save(other, path)
    assert store.save(other, path, overwrite=True) and store.load(path) == other
    with pytest.raises(DataError, match="sha256"):
        store.rebuild(other, _split(split.images, split.labels, sha="cd" * 32))
    with pytest.raises(DataError, match="labels"):
        store.rebuild(other, _split(split.images, split.labels.flip(0)))


@pytest.mark.parametrize("edit,key", [
    (lambda d: d.update(extra=1), "<keys>"),
    (lambda d: d.pop("seed"), "<keys>"),
    (lambda d: d.update(ipc=True), "ipc"),
    (lambda d: d.update(ipc=5), "indices.0"),
    (lambda d: d.update(seed=None), "seed"),
    (lambda d: d.update(feature_space="pixels"), "feature_space"),
    (lambda d: d.update(train_sha256="B26406"), "train_sha256"),
    (lambda d: d.update(method="forgetting"), "method"),
    (lambda d: d["indices"].update({"1": d["indices"]["0"]}), "no index twice"),
    (lambda d: d["indices"].update({"01": [1, 2, 3, 4]}), "indices"),
    (lambda d: d["indices"].update({"0": [1, 2, 3, "4"]}), "indices.0"),
])
def test_loader_is_strict(tmp_path, edit, key):
    selection, _ = _selection("random", 1)
    data = json.loads(store.to_json(selection))
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=key.replace(".", r"\.").replace("<", ".").replace(">", ".")):
        store.load(path)


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:  # a callback keeps `baseline` a named group, as in the real app
        pass

    return app


def _npz(tmp_path: Path) -> Path:
    images, labels = _blobs()
    path = tmp_path / "train.npz"
    np.savez(path, x=images.permute(0, 2, 3, 1).numpy(), y=labels.numpy())
    return path


def test_cli_make_and_show(tmp_path):
    runner, app, train = CliRunner(), _app(), _npz(tmp_path)
    out = tmp_path / "k.json"
    args = ["baseline", "make", "--method", "kcenter", "--dataset", "cifar10", "--ipc", "2", "--train", str(train)]
    res = runner.invoke(app, args + ["--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and store.load(out).method == "kcenter"
    assert "unchanged" in runner.invoke(app, args + ["--out", str(out)]).output
    shown = runner.invoke(app, ["baseline", "show", str(out)])
    assert shown.exit_code == 0 and "kcenter" in shown.output and "pixels-flat-unit" in shown.output
    as_json = json.loads(runner.invoke(app, ["baseline", "show", str(out), "--json"]).output)
    assert as_json["indices"]["0"] == list(store.load(out).indices[0])


def test_cli_errors_exit_with_their_codes(tmp_path):
    runner, app, train = CliRunner(), _app(), _npz(tmp_path)
    base = ["baseline", "make", "--dataset", "cifar10", "--ipc", "2"]
    no_seed = runner.invoke(app, base + ["--method", "random", "--train", str(train), "--out", str(tmp_path / "r")])
    assert no_seed.exit_code == 2 and "seed" in no_seed.output
    missing = runner.invoke(app, base + ["--method", "herding", "--train", str(tmp_path / "none.npz")])
    assert missing.exit_code == 3 and "not found" in missing.output
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert runner.invoke(app, ["baseline", "show", str(bad)]).exit_code == 3


def test_committed_selections_parse_and_are_named_canonically():
    files = sorted(REF_DIR.glob("*.json"))
    assert len(files) >= 14, f"expected the CIFAR-10 IPC 1/10 selections in {REF_DIR}"
    for path in files:
        selection = store.load(path)
        assert path.name == selection.name
        assert selection.train_sha256 == "b26406f7573e728d0d500aed41229882f1ab94f6cfdb3b66f54a8c6ba67b6084"


def _as_tuples(picks: dict[int, list[int]]) -> dict[int, tuple[int, ...]]:
    return {c: tuple(v) for c, v in picks.items()}


@pytest.mark.skipif(not TRAIN_NPZ.is_file(), reason=f"pinned CIFAR-10 train file absent ({TRAIN_NPZ}); "
                    "committed selections cannot be rebuilt here")
def test_committed_selections_rebuild_and_reproduce_on_real_cifar10():
    from rd3kit.sources.realdata import load_split

    train = load_split("cifar10", "train", TRAIN_NPZ, None)
    for path in sorted(REF_DIR.glob("*.json")):
        selection = store.load(path)
        images, labels = store.rebuild(selection, train)
        assert images.shape == (10 * selection.ipc, 3, 32, 32) and images.dtype == torch.uint8
        if selection.method == "random":  # cheap to redraw: the stored indices must come back exactly
            assert _as_tuples(sel.select_random(train.labels, selection.ipc, selection.seed)) == selection.indices
        elif selection.ipc == 1:  # one greedy step per class: fast enough for every test run
            redo = sel.select(selection.method, train.images, train.labels, 1, None)
            assert _as_tuples(redo) == selection.indices
