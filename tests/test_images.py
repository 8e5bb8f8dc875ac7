"""Format adapters on tiny generated inputs: HF parquet, ImageFolders (plain and zipped, every class-folder
naming variant), safetensors, and `load_any`'s dispatch (with .pt falling back to formats.load_local)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rd3kit.errors import ConfigError, DataError
from rd3kit.sources.formats import DistilledSet
from rd3kit.sources.images import (class_index, detect_format, load_any, load_imagefolder, load_parquet,
                                   load_safetensors, write_parquet, write_safetensors)

RNG = np.random.default_rng(0)


def _pixels(n: int, size: int = 8, channels: int = 3) -> np.ndarray:
    shape = (n, size, size, channels) if channels == 3 else (n, size, size)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def _encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _expected(pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels)
    x = x[..., None] if x.ndim == 3 else x
    return x.permute(0, 3, 1, 2).float() / 255


# -- parquet --------------------------------------------------------------------------------------------
def _rethinkdc_shard(path: Path, pixels: np.ndarray, labels: list[int]) -> None:
    """The rethinkdc layout: `image` as a struct {bytes, path}, `class_id` ints."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [{"bytes": _encode(p), "path": f"{i}.png"} for i, p in enumerate(pixels)]
    pq.write_table(pa.table({"image": images, "class_id": labels}), path)


def test_parquet_shards_with_class_id(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    px = _pixels(4)
    _rethinkdc_shard(data / "train-00001-of-00002-b.parquet", px[2:], [1, 1])
    _rethinkdc_shard(data / "train-00000-of-00002-a.parquet", px[:2], [0, 0])
    _rethinkdc_shard(data / "test-00000-of-00001.parquet", _pixels(1), [5])  # only train-* is read
    dset = load_parquet(data)
    assert dset.space == "raw01" and dset.labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(dset.images, _expected(px)) and len(dset.files) == 2


def test_parquet_written_by_datasets_round_trips(tmp_path):
    px = _pixels(6)
    dset = DistilledSet(_expected(px), torch.tensor([0, 0, 1, 1, 2, 2]), "raw01")
    write_parquet(dset, tmp_path / "train.parquet")
    back = load_any(tmp_path / "train.parquet")
    assert torch.equal(back.images, dset.images) and torch.equal(back.labels, dset.labels)


def test_parquet_refuses_what_it_cannot_hold(tmp_path):
    normalized = DistilledSet(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), "normalized")
    with pytest.raises(ConfigError, match="safetensors"):
        write_parquet(normalized, tmp_path / "x.parquet")


def test_parquet_errors_name_the_file_and_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "train.parquet"
    pq.write_table(pa.table({"img": [b"x"], "y": [0]}), bad)
    with pytest.raises(DataError, match=r"train\.parquet: expected columns 'image'.*found \['img', 'y'\]"):
        load_parquet(bad)
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="train.parquet: not a readable parquet file"):
        load_parquet(bad)


# -- ImageFolders ---------------------------------------------------------------------------------
@pytest.mark.parametrize("style, folder", [
    ("sre2l", "new{c:03d}"), ("rded", "{c:05d}"), ("class", "class{c:03d}"), ("int", "{c}")])
@pytest.mark.parametrize("zipped", [True, False])
def test_imagefolder_naming_variants(tmp_path, style, folder, zipped):
    px = _pixels(6)
    files = {f"wrap/{folder.format(c=c)}/class{c:03d}_id{i:03d}.png": px[2 * c + i] for c in range(3) for i in range(2)}
    if zipped:
        target = tmp_path / "set.zip"
        with zipfile.ZipFile(target, "w") as archive:
            for name, p in files.items():
                archive.writestr(name, _encode(p))
            archive.writestr("__MACOSX/wrap/._junk.png", b"junk")
    else:
        target = tmp_path / "set"
        for name, p in files.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(_encode(p))
    dset = load_any(target, space="raw01")
    assert dset.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(dset.images, _expected(px))
    assert detect_format(target) == ("imagefolder-zip" if zipped else "imagefolder")


def test_imagefolder_number_is_the_label_not_the_rank(tmp_path):
    for c in (0, 2):  # class 1 missing: class 2 must stay label 2
        (tmp_path / f"new{c:03d}").mkdir()
        (tmp_path / f"new{c:03d}" / "a.png").write_bytes(_encode(_pixels(1)[0]))
    assert load_imagefolder(tmp_path).labels.tolist() == [0, 2]


def test_imagefolder_wnids_need_a_class_list(tmp_path):
    wnids = ["n01440764", "n01443537", "n01484850"]
    for w in wnids[::-1]:
        (tmp_path / w).mkdir()
        (tmp_path / w / "x.jpg").write_bytes(_encode(_pixels(1)[0], "JPEG"))
    with pytest.raises(DataError, match="are names, not numbers; pass the class list"):
        load_imagefolder(tmp_path)
    order = [wnids[2], wnids[0], wnids[1]]  # the list decides, not alphabetical order
    assert load_imagefolder(tmp_path, order).labels.tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="not in the class list"):
        load_imagefolder(tmp_path, wnids[:2])


def test_imagefolder_grayscale_keeps_one_channel(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "a.png").write_bytes(_encode(_pixels(1, channels=1)[0]))
    assert load_imagefolder(tmp_path).images.shape == (1, 1, 8, 8)


@pytest.mark.parametrize("names, message", [
    ({"new000", "class001"}, "mixed class-folder prefixes"),
    ({"7", "007"}, "same label"),
    ({""}, "inside class folders"),
])
def test_class_index_rejects(names, message):
    with pytest.raises(DataError, match=message):
        class_index(Path("x"), names, None)


def test_imagefolder_errors_name_the_file(tmp_path):
    (tmp_path / "new000").mkdir()
    (tmp_path / "new000" / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="new000/bad.jpg: not a decodable image"):
        load_imagefolder(tmp_path)
    (tmp_path / "new000" / "bad.jpg").write_bytes(_encode(_pixels(1, size=4)[0]))
    (tmp_path / "new000" / "ok.png").write_bytes(_encode(_pixels(1)[0]))
    with pytest.raises(DataError, match="images differ in size"):
        load_imagefolder(tmp_path)
    broken = tmp_path / "set.zip"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="set.zip: not a valid zip"):
        load_any(broken)


def test_image_formats_are_raw01_only(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "a.png").write_bytes(_encode(_pixels(1)[0]))
    with pytest.raises(ConfigError, match="space raw01"):
        load_any(tmp_path, space="normalized")


# -- safetensors -----------------------------------------------------------------------------------
def test_safetensors_round_trip_with_soft_labels_and_lr(tmp_path):
    dset = DistilledSet(torch.randn(4, 3, 8, 8), torch.randn(4, 10), "zca", 0.0123)
    write_safetensors(dset, tmp_path / "s.safetensors")
    back = load_any(tmp_path / "s.safetensors")  # the space comes from the file's metadata
    assert back.space == "zca" and back.soft and back.lr == pytest.approx(0.0123)
    assert torch.equal(back.images, dset.images) and torch.equal(back.labels, dset.labels)
    with pytest.raises(ConfigError, match="states space 'zca'"):
        load_safetensors(tmp_path / "s.safetensors", "raw01")


def test_safetensors_from_other_producers(tmp_path):
    from safetensors.torch import save_file

    save_file({"images": torch.rand(2, 3, 4, 4), "labels": torch.tensor([0, 1])}, str(tmp_path / "a.safetensors"))
    with pytest.raises(ConfigError, match="does not state its space"):
        load_any(tmp_path / "a.safetensors")
    assert load_any(tmp_path / "a.safetensors", space="raw01").labels.dtype == torch.int64
    save_file({"x": torch.rand(2, 3, 4, 4)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(DataError, match=r"b\.safetensors: expected tensors 'images' and 'labels'.*found \['x'\]"):
        load_any(tmp_path / "b.safetensors", space="raw01")


# -- dispatch -------------------------------------------------------------------------------------------
def test_load_any_falls_back_to_load_local_for_pt(tmp_path):
    torch.save({"data": [torch.rand(2, 3, 4, 4), torch.tensor([0, 1])]}, tmp_path / "datadam.pt")
    dset = load_any(tmp_path / "datadam.pt", space="normalized")
    assert dset.space == "normalized" and dset.labels.tolist() == [0, 1]
    with pytest.raises(ConfigError, match="does not say its space"):
        load_any(tmp_path / "datadam.pt")


def test_load_any_unknown_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown file type '.txt'"):
        load_any(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="holds no .parquet"):
        load_any(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_any(tmp_path / "absent.pt")
