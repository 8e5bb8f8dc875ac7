"""Real test sets: TinyImageNet (official folder, ImageFolder, HF parquet) and torchvision folders (--data-root).

Every dataset here is a tiny fake written into tmp_path in the exact on-disk format the reader expects; nothing
is downloaded (a socket guard fails any test that tries).
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import shutil
import socket
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import shared_file, tiny_protocol
from rd3kit.errors import ConfigError, DataError
from rd3kit.sources.realdata import from_torchvision, load_split, tensor_digest
from rd3kit.sources.tinyimagenet import load_tinyimagenet

# Line order of this fake wnids.txt is not sorted, so the two class orders give different labels.
WNIDS = ["n03000003", "n01000001", "n02000002"]
RED = {w: 60 * int(w[-1]) for w in WNIDS}  # each image's red channel says which wnid it belongs to
N_TRAIN, N_VAL = 3, 2


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _jpeg(wnid: str, k: int, size: int = 64, mode: str = "RGB") -> bytes:
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = RED[wnid], 20 * k, 100
    img = Image.fromarray(pixels)
    buf = io.BytesIO()
    (img.convert("L") if mode == "L" else img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_official(root, wnids=WNIDS):
    """A tiny-imagenet-200/ folder: train/<wnid>/images, val/images + val_annotations.txt, wnids.txt, test/."""
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "test" / "images").mkdir(parents=True)
    (base / "test" / "images" / "test_0.JPEG").write_bytes(_jpeg(wnids[0], 9))  # unlabelled: never read
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    notes = []
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for k in range(N_TRAIN):
            (base / "train" / w / "images" / f"{w}_{k}.JPEG").write_bytes(_jpeg(w, k))
    for i in range(N_VAL * len(wnids)):
        w = wnids[(i * 2) % len(wnids)]  # annotation order is not class order
        (base / "val" / "images" / f"val_{i}.JPEG").write_bytes(_jpeg(w, i))
        notes.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(notes) + "\n")
    return base


def _wnid_of(images: torch.Tensor) -> list[str]:
    """Which wnid each decoded image shows (JPEG moves a flat colour by a grey level or two; reds are 60 apart)."""
    reds = images[:, 0].float().mean(dim=(1, 2))
    return [min(WNIDS, key=lambda w: abs(RED[w] - float(r))) for r in reds]


def test_official_folder_labels_follow_the_class_order(tmp_path):
    base = make_official(tmp_path)
    by_sorted = load_tinyimagenet(base, "train", num_classes=3, workers=2)
    by_lines = load_tinyimagenet(base, "train", num_classes=3, class_order="wnids", workers=2)
    assert by_sorted.images.shape == (9, 3, 64, 64) and by_sorted.images.dtype == torch.uint8
    shown = _wnid_of(by_sorted.images)
    assert by_sorted.labels.tolist() == [sorted(WNIDS).index(w) for w in shown] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [WNIDS.index(w) for w in _wnid_of(by_lines.images)] == by_lines.labels.tolist()
    assert by_lines.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert "classes: sorted wnids" in by_sorted.origin and "classes: wnids wnids" in by_lines.origin
    assert by_sorted.sha256 != by_lines.sha256


def test_test_split_reads_val_images_by_annotation(tmp_path):
    base = make_official(tmp_path)
    split = load_tinyimagenet(base, "test", num_classes=3, workers=2)
    assert split.split == "test" and "tinyimagenet:val@" in split.origin and "(the test split)" in split.label
    assert split.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert [sorted(WNIDS).index(w) for w in _wnid_of(split.images)] == split.labels.tolist()
    assert load_tinyimagenet(base, "val", num_classes=3, workers=2).sha256 == split.sha256


def test_digest_is_stable_across_reads_workers_and_layouts(tmp_path):
    base = make_official(tmp_path)
    first = load_tinyimagenet(base, "train", num_classes=3, workers=1)
    again = load_tinyimagenet(tmp_path, "train", num_classes=3, workers=3)  # the folder holding tiny-imagenet-200/
    assert first.sha256 == again.sha256 == tensor_digest(first.images.permute(0, 2, 3, 1).numpy(), first.labels.numpy())
    plain = tmp_path / "plain"
    for w in WNIDS:
        shutil.copytree(base / "train" / w / "images", plain / w)
    folder = load_tinyimagenet(plain, "train", num_classes=3, workers=2)
    assert folder.sha256 == first.sha256 and "ImageFolder" in folder.origin
    (plain / WNIDS[0] / f"{WNIDS[0]}_0.JPEG").write_bytes(_jpeg(WNIDS[0], 7))
    assert load_tinyimagenet(plain, "train", num_classes=3, workers=2).sha256 != first.sha256


def test_val_already_in_wnid_folders_reads_like_imagefolder(tmp_path):
    base = make_official(tmp_path)
    expected = load_tinyimagenet(base, "val", num_classes=3, workers=2)
    for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        (base / "val" / "images" / wnid).mkdir(exist_ok=True)
        (base / "val" / "images" / name).rename(base / "val" / "images" / wnid / name)
    (base / "val" / "val_annotations.txt").unlink()
    assert load_tinyimagenet(base, "val", num_classes=3, workers=2).sha256 == expected.sha256


def test_grayscale_jpeg_becomes_rgb_like_torchvision(tmp_path):
    base = make_official(tmp_path)
    grey = base / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_0.JPEG"
    grey.write_bytes(_jpeg(WNIDS[1], 0, mode="L"))
    assert Image.open(grey).mode == "L"
    split = load_tinyimagenet(base, "train", num_classes=3, workers=2)
    expected = np.asarray(Image.open(grey).convert("RGB")).transpose(2, 0, 1).copy()
    assert torch.equal(split.images[0], torch.from_numpy(expected))  # n01.. sorts first; its _0 image leads
    assert torch.equal(split.images[0, 0], split.images[0, 2])


@pytest.mark.parametrize("damage, message", [
    (lambda b: (b / "val" / "val_annotations.txt").unlink(), "val_annotations.txt: not found"),
    (lambda b: (b / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn09999999\t0\t0\t1\t1\n"),
     "val_annotations.txt:1: wnid 'n09999999' is not in wnids.txt"),
    (lambda b: (b / "val" / "images" / "val_0.JPEG").unlink(), "missing ['val_0.JPEG']"),
    (lambda b: (b / "val" / "images" / "val_0.JPEG").write_bytes(_jpeg(WNIDS[0], 0, size=32)),
     "val_0.JPEG: expected a 64x64 RGB image (H,W,C) (64, 64, 3), got (32, 32, 3)"),
    (lambda b: (b / "val" / "images" / "val_1.JPEG").write_bytes(b"not a jpeg"), "val_1.JPEG: not a decodable image"),
])
def test_damaged_val_folder_is_a_data_error_naming_the_file(tmp_path, damage, message):
    base = make_official(tmp_path)
    damage(base)
    with pytest.raises(DataError) as err:
        load_tinyimagenet(base, "val", num_classes=3, workers=2)
    assert message in str(err.value)


def test_unknown_train_wnid_and_class_count_are_data_errors(tmp_path):
    base = make_official(tmp_path)
    (base / "train" / "n09999999" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"class folder\(s\) \['n09999999'\] are not in the class list"):
        load_tinyimagenet(base, "train", num_classes=3, workers=2)
    with pytest.raises(DataError, match=r"wnids.txt: expected 4 wnids \(classes\), got 3"):
        load_tinyimagenet(base, "train", num_classes=4, workers=2)


def test_load_split_wants_200_classes_and_finds_tiny_imagenet_under_data_root(tmp_path):
    make_official(tmp_path)
    with pytest.raises(DataError) as err:
        load_split("tinyimagenet", "test", None, tmp_path)
    assert f"{tmp_path / 'tiny-imagenet-200' / 'wnids.txt'}: expected 200 wnids (classes), got 3" in str(err.value)
    with pytest.raises(DataError, match="does not download"):
        load_split("tinyimagenet", "test", None, None, download=True)


def test_imagefolder_class_count_and_wnids_order_refused(tmp_path):
    plain = tmp_path / "plain"
    for w in WNIDS[:2]:
        (plain / "val" / w).mkdir(parents=True)
        (plain / "val" / w / "a.JPEG").write_bytes(_jpeg(w, 0))
    with pytest.raises(DataError, match=r"val: expected 3 class folders, got 2"):
        load_tinyimagenet(plain, "test", num_classes=3, workers=2)
    with pytest.raises(ConfigError, match="only class_order 'sorted'"):
        load_tinyimagenet(plain, "test", num_classes=2, class_order="wnids")


# -- HF parquet (zh-plus/tiny-imagenet layout: image = {bytes, path}, label int; splits train / valid) --------
def _write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    image = pa.array([{"bytes": b, "path": p} for b, p, _ in rows],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": image, "label": pa.array([lab for *_, lab in rows], pa.int64())}), path)


def _val_rows(base):
    order = sorted(WNIDS)
    rows = []
    for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        rows.append(((base / "val" / "images" / name).read_bytes(), name, order.index(wnid)))
    return rows[::-1]  # row order must not matter


def test_parquet_shards_pick_the_valid_split_and_match_the_folder(tmp_path):
    base = make_official(tmp_path / "official")
    rows = _val_rows(base)
    shards = tmp_path / "hf" / "data"
    _write_parquet(shards / "valid-00000-of-00001.parquet", rows)
    _write_parquet(shards / "train-00000-of-00001.parquet", rows[:1])  # must not be read for the test split
    from_parquet = load_tinyimagenet(tmp_path / "hf", "test", num_classes=3, workers=2)
    from_folder = load_tinyimagenet(base, "test", num_classes=3, workers=2)
    assert from_parquet.labels.tolist() == [0, 0, 1, 1, 2, 2] and "HF parquet" in from_parquet.origin
    assert from_parquet.sha256 == from_folder.sha256
    single = load_tinyimagenet(shards / "valid-00000-of-00001.parquet", "test", num_classes=3, workers=2)
    assert single.sha256 == from_folder.sha256


def test_parquet_errors_name_the_file(tmp_path):
    base = make_official(tmp_path / "official")
    rows = _val_rows(base)
    _write_parquet(tmp_path / "only-train" / "train-0.parquet", rows)
    with pytest.raises(DataError, match=r"no parquet shard for the val split .* found \['train-0.parquet'\]"):
        load_tinyimagenet(tmp_path / "only-train", "test", num_classes=3)
    bad = tmp_path / "bad.parquet"
    _write_parquet(bad, rows[:-1] + [(rows[-1][0], rows[-1][1], 7)])
    with pytest.raises(DataError, match=r"bad.parquet: labels must lie in 0..2; got 7"):
        load_tinyimagenet(bad, "test", num_classes=3)
    _write_parquet(bad, rows)
    with pytest.raises(DataError, match=r"bad.parquet: expected 200 classes in the val split, got 3"):
        load_tinyimagenet(bad, "test")


# -- torchvision folders under --data-root ------------------------------------------------------------------
def _idx(array: np.ndarray) -> bytes:
    """The idx format torchvision reads: magic 0x08 (uint8) and ndim, then big-endian dims, then the bytes."""
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def make_mnist(root, name="MNIST", n_test=20, n_train=10):
    """torchvision 0.29 reads <root>/<name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte; with
    download=False it checks only that the four files exist (MNIST.resources md5s apply to the .gz downloads)."""
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("t10k", n_test), ("train", n_train)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(x))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(y))
    return raw


@pytest.mark.parametrize("dataset, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_raw_idx_folders_are_read_without_download(tmp_path, dataset, folder):
    raw = make_mnist(tmp_path, folder)
    split = load_split(dataset, "test", None, tmp_path)
    x = np.frombuffer((raw / "t10k-images-idx3-ubyte").read_bytes()[16:], np.uint8).reshape(20, 1, 28, 28)
    assert torch.equal(split.images, torch.from_numpy(x.copy()))
    assert split.labels.tolist() == [i % 10 for i in range(20)] and split.origin == f"torchvision:{folder}@{tmp_path}"
    assert load_split(dataset, "test", None, tmp_path).sha256 == split.sha256
    assert load_split(dataset, "train", None, tmp_path).labels.numel() == 10


def test_absent_root_names_download_and_downloads_nothing(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    calls = []

    def fake_download(url, download_root, filename, md5):  # writes what the real one would have unpacked
        calls.append(url)
        if not (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists():
            shutil.rmtree(tmp_path / "MNIST")
            make_mnist(tmp_path)

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake_download)
    with pytest.raises(DataError, match=r"no MNIST test files there .*--download") as err:
        load_split("mnist", "test", None, tmp_path)
    assert str(tmp_path) in str(err.value) and calls == [] and not (tmp_path / "MNIST").exists()
    split = load_split("mnist", "test", None, tmp_path, download=True)
    assert calls and split.labels.numel() == 20  # the flag reaches torchvision, which calls its downloader


def test_corrupt_idx_file_is_a_data_error(tmp_path):
    raw = make_mnist(tmp_path)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x07garbage")
    with pytest.raises(DataError, match="MNIST test files there are unreadable"):
        from_torchvision(tmp_path, "mnist", "test")


def test_fake_cifar10_folder_is_refused_by_torchvision_md5_check(tmp_path):
    """CIFAR10 checks the md5 of all seven files, even with download=False: only the official files pass, so
    the CIFAR path is tested through this refusal (and MNIST above for the read itself)."""
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (batches / name).write_bytes(pickle.dumps(entry))
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    with pytest.raises(DataError, match=r"no CIFAR10 test files there \(Dataset not found or corrupted"):
        load_split("cifar10", "test", None, tmp_path)


def test_real_mnist_test_split_from_shared_raw_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("t10k", "train"):
        for part in ("images-idx3", "labels-idx1"):
            name = f"{prefix}-{part}-ubyte"
            (raw / name).write_bytes(gzip.decompress(shared_file(f"mnist/{name}.gz").read_bytes()))
    split = load_split("mnist", "test", None, tmp_path)
    assert split.images.shape == (10000, 1, 28, 28)
    assert np.bincount(split.labels.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# -- through the CLI: rd3kit eval SET -p PROTOCOL --data-root DIR --------------------------------------------
@pytest.fixture
def mnist_cli(tmp_path):
    proto = tiny_protocol("coupled-mnist@v1", run_epochs=3, epochs=2, schedule__milestones=[1], seeds=[0])
    (tmp_path / "tiny.json").write_text(proto.model_dump_json())
    torch.save((torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(10)),
               tmp_path / "set.pt")
    return tmp_path


def test_cli_eval_reads_the_test_split_from_data_root(mnist_cli):
    from rd3kit.cli import app

    root = mnist_cli / "data"
    make_mnist(root)
    args = ["eval", str(mnist_cli / "set.pt"), "--space", "raw01", "-p", str(mnist_cli / "tiny.json"),
            "--data-root", str(root), "--json", "--no-cache"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    test = json.loads(res.stdout)["inputs"]["test"]
    expected = load_split("mnist", "test", None, root)
    assert test == expected.describe() and test["n"] == 20
    shutil.rmtree(root / "MNIST")
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code == 3 and "--download" in missing.output and str(root) in missing.output
