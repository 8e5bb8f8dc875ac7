"""FKD stored per-epoch soft labels: record an online-teacher run, replay it bitwise; strict reading of the files."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch

from rd3kit.errors import ConfigError, DataError
from rd3kit.sources.fkd import FkdWriter, open_fkd, parse_batch
from rd3kit.train import decoupled as D
from test_decoupled import tiny_protocol, tiny_set

KL = {"loss": "kl", "temperature": 20.0, "t2_factor": False, "ce_weight": None}


def _protocols(mix: dict | None, clean_forward: bool = False):
    aug = {"shuffle_patches": 1, "resized_crop": {"scale": [0.3, 1.0], "ratio": [0.75, 1.3333333333333333],
                                                  "antialias": True},
           "pad_crop": None, "flip_p": 0.5, "mix": mix}
    common = {"augmentation": aug, "student_clean_forward": clean_forward}
    return (tiny_protocol(soft_labels={"source": "online_teacher", **KL}, **common),
            tiny_protocol(soft_labels={"source": "fkd_replay", **KL}, **common))


def _equal_models(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("mix, clean_forward", [({"name": "cutmix", "beta": 1.0, "prob": 1.0}, False),
                                                ({"name": "mixup", "beta": 0.8, "prob": 0.5}, True),
                                                (None, False)])
def test_recorded_run_replays_bitwise(tmp_path: Path, mix, clean_forward):
    online, replay = _protocols(mix, clean_forward)
    x, y = tiny_set()
    teacher = D.build_seeded(online.teacher.model, online.data, 11, torch.device("cpu"))
    writer = FkdWriter(tmp_path / "fkd")
    recorded = D.train_decoupled(online, x, y, teacher, 3, D.Hooks(record=writer))
    writer.finish()
    plain = D.train_decoupled(online, x, y, teacher, 3)
    assert _equal_models(recorded.model, plain.model)  # recording draws exactly what augment_batch draws
    source = open_fkd(tmp_path / "fkd", 20, 10, 10)
    replayed = D.train_decoupled(replay, x, y, source, 3)
    assert _equal_models(recorded.model, replayed.model)  # bitwise: same crops, flips, mixes and logits
    assert [e.loss for e in replayed.log] == [e.loss for e in recorded.log]
    info = source.describe()
    assert info["files_read"] == 4 and info["order"].startswith("kit_order.safetensors")
    other_seed = D.train_decoupled(replay, x, y, open_fkd(tmp_path / "fkd", 20, 10, 10), 4)
    assert not _equal_models(other_seed.model, replayed.model)  # the seed still sets the student's init


def test_sre2l_order_is_randomsampler_seed_42(tmp_path: Path):
    _, replay = _protocols(None)
    writer = FkdWriter(tmp_path / "fkd")
    x, y = tiny_set()
    online, _ = _protocols(None)
    D.train_decoupled(online, x, y, D.build_seeded(online.teacher.model, online.data, 1, torch.device("cpu")), 0,
                      D.Hooks(record=writer))  # no finish(): no explicit order file, so SRe2L's rule applies
    source = open_fkd(tmp_path / "fkd", 20, 10, 10)
    gen = torch.Generator().manual_seed(42)
    sampler = torch.utils.data.RandomSampler(range(20), generator=gen)
    expected = [list(sampler) for _ in range(3)]
    assert [source.order(e).tolist() for e in (0, 1, 2)] == expected
    assert source.order(1).tolist() == expected[1]  # asking again (out of sequence) gives the same order
    assert "seed 42" in source.describe()["order"]


def _batch(b: int = 4, k: int = 10) -> list:
    return [torch.rand(b, 4), torch.tensor([True, False] * (b // 2)), torch.randperm(b), np.float64(0.25),
            [np.int64(1), np.int64(2), np.int64(5), np.int64(7)], torch.randn(b, k).half()]


def test_sre2l_batch_with_numpy_scalars_loads_weights_only(tmp_path: Path):
    root = tmp_path / "fkd"
    (root / "epoch_0").mkdir(parents=True)
    torch.save(_batch(), root / "epoch_0" / "batch_0.tar")
    rec = open_fkd(root, 4, 4, 10).batch(0, 0)
    assert rec.mix_lam == 0.25 and rec.mix_box == (1, 2, 5, 7) and rec.soft.dtype == torch.float16


@pytest.mark.parametrize("index, value, message", [
    (None, None, "expected a list of 6"), (5, torch.randn(4, 9), "soft_label: expected a tensor"),
    (0, torch.full((4, 4), 1.5), "coords: expected relative values"), (2, torch.tensor([0, 0, 1, 2]), "permutation"),
    (3, True, "mix_lam: expected a float"), (4, [1, 2, 3], "mix_bbox: expected 4 ints"),
    (1, torch.ones(4), "flip: expected a tensor"),
])
def test_bad_batches_name_file_field_expected_and_got(index, value, message):
    obj = _batch()
    if index is None:
        obj = obj[:5]
    else:
        obj[index] = value
    with pytest.raises(DataError, match=message) as err:
        parse_batch(obj, Path("x/epoch_0/batch_0.tar"), 4, 10)
    assert "x/epoch_0/batch_0.tar" in str(err.value)


def test_layout_and_unsafe_files_are_refused(tmp_path: Path):
    root = tmp_path / "fkd"
    (root / "epoch_0").mkdir(parents=True)
    torch.save(_batch(), root / "epoch_0" / "batch_1.tar")
    with pytest.raises(DataError, match="batch_0.tar"):
        open_fkd(root, 4, 4, 10)
    (root / "epoch_0" / "batch_1.tar").rename(root / "epoch_0" / "batch_0.tar")
    with pytest.raises(DataError, match="expected 2"):
        open_fkd(root, 8, 4, 10)  # 8 images at batch 4 need 2 files per epoch
    torch.save({"payload": PurePosixPath("not/a/tensor")}, root / "epoch_0" / "batch_0.tar")
    with pytest.raises(DataError, match="weights-only"):
        open_fkd(root, 4, 4, 10).batch(0, 0)


def test_protocol_and_source_must_agree(tmp_path: Path):
    online, replay = _protocols(None)
    x, y = tiny_set()
    teacher = D.build_seeded(online.teacher.model, online.data, 1, torch.device("cpu"))
    with pytest.raises(ConfigError, match="stored FKD labels"):
        D.train_decoupled(replay, x, y, teacher, 0)
    writer = FkdWriter(tmp_path / "fkd")
    D.train_decoupled(online.model_copy(update={"epochs": 1}), x, y, teacher, 0, D.Hooks(record=writer))
    writer.finish()
    with pytest.raises(ConfigError, match="labels hold 1"):
        D.train_decoupled(replay, x, y, open_fkd(tmp_path / "fkd", 20, 10, 10), 0)
    padded = tiny_protocol(soft_labels={"source": "fkd_replay", **KL})  # rd3's augmentation: fine, but pad_crop:
    with pytest.raises(ConfigError, match="pad_crop"):
        bad = padded.augmentation.model_copy(update={"pad_crop": 4})
        D.train_decoupled(padded.model_copy(update={"augmentation": bad, "epochs": 1}), x, y,
                          open_fkd(tmp_path / "fkd", 20, 10, 10), 0)
    with pytest.raises(ConfigError, match="never overwritten"):
        D.train_decoupled(online, x, y, teacher, 0, D.Hooks(record=FkdWriter(tmp_path / "fkd")))
