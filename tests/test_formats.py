"""Readers of published tensor formats: every layout, the numpy allow-list, and their error paths."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from conftest import shared_file
from rd3kit.errors import DataError
from rd3kit.sources.formats import decode_zoom, load_local, read_pt, safe_load


def save(tmp_path, name, obj):
    path = tmp_path / name
    torch.save(obj, path)
    return path


X = torch.rand(4, 3, 8, 8)
Y = torch.tensor([0, 1, 0, 1])


def test_dc_dict_with_numpy_scalars_loads_under_weights_only(tmp_path):
    path = save(tmp_path, "res.pt", {"data": [[X, Y], [X + 1, Y]], "accs_all_exps": {"ConvNet": [np.float64(0.5)]}})
    images, labels = read_pt(path, select=-1)
    assert torch.equal(images, X + 1) and torch.equal(labels, Y)
    with pytest.raises(DataError, match="holds 2 sets; choose one with --select"):
        read_pt(path)
    with pytest.raises(DataError, match="--select 5 out of range for 2"):
        read_pt(path, select=5)


def test_tuple_dict_tensor_and_datadam_layouts(tmp_path):
    assert torch.equal(read_pt(save(tmp_path, "t.pt", (X, Y)))[0], X)
    assert torch.equal(read_pt(save(tmp_path, "d.pt", {"images": X, "labels": Y}))[1], Y)
    assert read_pt(save(tmp_path, "x.pt", X))[1] is None
    assert torch.equal(read_pt(save(tmp_path, "dam.pt", {"data": [X, Y]}))[0], X)


def test_mtt_datm_folder_reads_labels_and_learned_lr(tmp_path):
    save(tmp_path, "images_best.pt", X)
    save(tmp_path, "labels_best.pt", torch.randn(4, 2))
    save(tmp_path, "lr_best.pt", torch.tensor(0.0123))
    dset = load_local([tmp_path], "zca")
    assert dset.soft and dset.lr == pytest.approx(0.0123) and len(dset.files) == 3
    assert all(len(h) == 64 for h in dset.files.values())


def test_images_only_needs_labels(tmp_path):
    with pytest.raises(DataError, match="holds images only"):
        load_local([save(tmp_path, "x.pt", X)], "raw01")


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"data": Evil()}, handle)
    with pytest.raises(DataError, match="cannot be read safely"):
        safe_load(path)


def test_missing_and_unknown_layouts(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_local([tmp_path / "nope.pt"], "raw01")
    with pytest.raises(DataError, match="unknown layout"):
        read_pt(save(tmp_path, "odd.pt", {"foo": X}))
    with pytest.raises(DataError, match="space must be one of"):
        load_local([save(tmp_path, "t.pt", (X, Y))], "imagenet")


def test_idc_decode_zoom_splits_tiles_and_repeats_labels():
    img = torch.arange(16.0).view(1, 1, 4, 4)
    out, labels = decode_zoom(img, torch.tensor([7]), 2)
    assert out.shape == (4, 1, 4, 4) and labels.tolist() == [7, 7, 7, 7]
    # the top-left tile holds 0,1,4,5; bilinear upsampling keeps its corner values at the corners' centres
    assert out[0].min() == 0 and out[0].max() == 5


def test_real_dc_files_load():
    path = shared_file("distilled/dc/res_DC_CIFAR10_ConvNet_1ipc.pt")
    dset = load_local([path], "normalized", select=-1)
    assert dset.images.shape == (10, 3, 32, 32) and dset.labels.tolist() == list(range(10))
    assert dset.files[str(path)] == "58d1e70d6c538c313dcde739b0472eda1e94adfb006f39b89c3ca56be00f15d5"


def test_pinned_npz_is_checked_against_the_split_asked_for():
    from rd3kit.sources.realdata import from_npz

    path = shared_file("cifar10/test.npz")
    with pytest.raises(DataError, match="pinned CIFAR-10 test"):
        from_npz(path, "cifar10", "train")
    assert from_npz(path, "cifar10", "test").label == "CIFAR-10 test (rebuilt)"


def test_npz_errors_name_keys(tmp_path):
    from rd3kit.sources.realdata import from_npz

    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"missing key\(s\) \['y'\]"):
        from_npz(tmp_path / "bad.npz", "cifar10", "test")
    np.savez(tmp_path / "f.npz", x=np.zeros((2, 8, 8, 3), np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="must be uint8"):
        from_npz(tmp_path / "f.npz", "cifar10", "test")
