"""Streamed sets: lazily decoded items equal the in-memory loaders, batches from workers equal in-memory slices."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rd3kit.errors import DataError
from rd3kit.sources.images import load_any
from rd3kit.sources.stream import open_stream, streamed
from rd3kit.train import decoupled as D
from test_decoupled import tiny_protocol


def _png(rng: np.random.Generator, size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """10 class folders (class000..class009) of 2 PNGs each, written in a scrambled order."""
    rng = np.random.default_rng(0)
    root = tmp_path / "set"
    for c in (3, 0, 9, 1, 2, 8, 4, 7, 5, 6):
        (root / f"class{c:03d}").mkdir(parents=True)
        for i in (1, 0):
            (root / f"class{c:03d}" / f"img{i}.png").write_bytes(_png(rng))
    return root


def _zip(folder: Path) -> Path:
    path = folder.parent / "set.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for p in sorted(folder.rglob("*.png")):
            archive.write(p, f"wrap/{p.relative_to(folder).as_posix()}")
    return path


def _parquet(folder: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.rglob("*.png"))
    table = pa.table({"image": [{"bytes": p.read_bytes(), "path": None} for p in files],
                      "label": [int(p.parent.name[5:]) for p in files]})
    path = folder.parent / "train-00000.parquet"
    pq.write_table(table, path, row_group_size=7)  # 3 row groups: items cross row-group boundaries
    return path


@pytest.mark.parametrize("kind", ["folder", "zip", "parquet"])
def test_streamed_items_equal_the_in_memory_loader(folder, kind):
    path = {"folder": lambda: folder, "zip": lambda: _zip(folder), "parquet": lambda: _parquet(folder)}[kind]()
    memory = load_any(path)
    stream = open_stream(path)
    assert torch.equal(stream.labels, memory.labels) and stream.files == memory.files
    decoded = torch.stack([stream[i] for i in range(len(stream))]).to(torch.float32).div_(255.0)
    assert torch.equal(decoded, memory.images)


def test_worker_batches_equal_in_memory_slices_and_training_is_bitwise_equal(folder):
    memory = load_any(folder)
    source = streamed(open_stream(folder), workers=2, device=torch.device("cpu"))
    order = torch.randperm(20, generator=torch.Generator().manual_seed(5))
    got = list(source.batches(order, 6))
    assert [b.shape[0] for b in got] == [6, 6, 6, 2]
    assert all(torch.equal(b, memory.images[order[6 * i:6 * (i + 1)]]) for i, b in enumerate(got))
    p = tiny_protocol(epochs=1)
    teacher = D.build_seeded(p.teacher.model, p.data, 3, torch.device("cpu"))
    a = D.train_decoupled(p, memory.images, memory.labels, teacher, 0).model.state_dict()
    b = D.train_decoupled(p, source, source.dataset.labels, teacher, 0).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_mis_sized_image_is_a_data_error_naming_the_set(folder):
    (folder / "class004" / "img0.png").write_bytes(_png(np.random.default_rng(1), size=16))
    source = streamed(open_stream(folder), workers=0, device=torch.device("cpu"))
    with pytest.raises(DataError, match="differ in size"):
        list(source.batches(torch.arange(20), 20))


def test_cli_streams_a_large_folder_with_the_same_result(folder, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    import rd3kit.sources.stream as stream
    from rd3kit.cli import app
    from test_decoupled_cli import HUB

    p = tiny_protocol(epochs=1)
    (tmp_path / "p.json").write_text(p.model_dump_json())
    from safetensors.torch import save_file

    teacher = D.build_seeded(p.teacher.model, p.data, 7, torch.device("cpu"))
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(tmp_path / "t.safetensors"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "test.npz", x=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             y=np.arange(20, dtype=np.int64) % 10)
    args = ["eval", str(folder), "-p", str(tmp_path / "p.json"), "--teacher", str(tmp_path / "t.safetensors"),
            "--teacher-source", HUB, "--test", str(tmp_path / "test.npz"), "--seeds", "0", "--json"]
    in_memory = json.loads(CliRunner().invoke(app, args).stdout)
    monkeypatch.setattr(stream, "STREAM_MIN_IMAGES", 5)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    streamed_run = json.loads(res.stdout)
    assert in_memory["inputs"]["set"]["streamed"] is False and streamed_run["inputs"]["set"]["streamed"] is True
    assert streamed_run["top1"] == in_memory["top1"]
    assert streamed_run["per_seed"][0]["final_train_loss"] == in_memory["per_seed"][0]["final_train_loss"]
