"""FKD soft-label directories (SRe2L/CDA/G-VBSM style): strict, lazy reader and a writer for recorded runs.

Layout, as SRe2L `relabel/utils_fkd.py` and `validate/train_FKD.py` (VILA-Lab/SRe2L @dc559aa) write and read it:
`ROOT/epoch_{e}/batch_{b}.tar` for e = 0..E-1 and b = 0..K-1 (K = ceil(N / batch) in every epoch), each a
`torch.save`d list `[coords, flip, mix_index, mix_lam, mix_bbox, soft_label]` (see rd3kit.train.replay.FkdBatch).
Which images make batch b of epoch e: the b-th chunk of epoch e's order. SRe2L's order is
`RandomSampler(generator=torch.Generator().manual_seed(42))` over the ImageFolder's sorted samples: one
generator seeded 42 for the whole run, and each epoch's pass draws `randperm(N)` (the order) and then one more
`randperm(N)` that RandomSampler slices to `[:num_samples % N]` (empty) when the pass ends. A directory the kit recorded also holds
`kit_order.safetensors` (key `order`, int64 (E, N)), which then gives the order explicitly.

Must not: load a whole artifact into memory (batches are read one at a time, when the loop asks), unpickle
anything but tensors and numpy scalars (`torch.load(weights_only=True)`), or write over an existing directory.
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from rd3kit.errors import ConfigError, DataError
from rd3kit.train.replay import FkdBatch

SRE2L_SAMPLER_SEED = 42  # SRe2L train_FKD.py `--fkd_seed` default and utils_fkd.get_img2batch_idx_list(seed=42)
ORDER_FILE = "kit_order.safetensors"
FIELDS = ("coords", "flip", "mix_index", "mix_lam", "mix_bbox", "soft_label")
_NP_CORE = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
# SRe2L stores lambda and the CutMix box as numpy scalars; these are the only non-tensor globals allowed.
_SAFE = [_NP_CORE.multiarray.scalar, np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.int64)),
         type(np.dtype(np.int32)), type(np.dtype(np.float32))]


def _numbered(entries: list[str], pattern: str, where: Path) -> int:
    """Check `entries` are exactly pattern % 0..k-1; return k."""
    found = sorted(entries)
    expected = sorted(pattern % i for i in range(len(entries)))
    if found != expected:
        extra = sorted(set(found) - set(expected))[:3]
        raise DataError(f"{where}: expected entries {pattern % 0} .. {pattern % (len(entries) - 1)} only, got "
                        f"unexpected {extra}")
    return len(entries)


def _chunk(n: int, batch: int, step: int) -> int:
    return min(batch, n - step * batch)


class FkdReplay:
    """Stored FKD labels of one directory, read batch by batch; records the sha256 of every file it reads."""

    def __init__(self, root: Path, layout: tuple[int, int], n_images: int, batch_size: int, num_classes: int):
        self.root, (self.epochs, self.batches) = root, layout
        self.n, self.batch_size, self.num_classes = n_images, batch_size, num_classes
        self.read: list[tuple[str, str]] = []  # (relative path, sha256) in the order the loop consumed them
        self._explicit: Tensor | None = None
        self._order_sha = ""
        self._sampler: tuple[int, torch.Generator] | None = None

    def order(self, epoch: int) -> Tensor:
        """The sample order of `epoch`: the kit's stored order, or SRe2L's RandomSampler(seed 42) sequence."""
        if self._explicit is not None:
            return self._explicit[epoch]
        if self._sampler is None or self._sampler[0] >= epoch:
            self._sampler = (-1, torch.Generator().manual_seed(SRE2L_SAMPLER_SEED))
        done, gen = self._sampler
        for _ in range(epoch - done):
            perm = torch.randperm(self.n, generator=gen)
            torch.randperm(self.n, generator=gen)  # RandomSampler's trailing `randperm(n)[:num_samples % n]` draw
        self._sampler = (epoch, gen)
        return perm

    def batch(self, epoch: int, step: int) -> FkdBatch:
        rel = f"epoch_{epoch}/batch_{step}.tar"
        data = (self.root / rel).read_bytes()
        self.read.append((rel, hashlib.sha256(data).hexdigest()))
        with torch.serialization.safe_globals(_SAFE):
            try:
                obj = torch.load(io.BytesIO(data), weights_only=True)
            except Exception as exc:  # the unpickler raises several types; all mean "not a weights-only list"
                raise DataError(f"{self.root / rel}: not a weights-only torch file ({str(exc).splitlines()[0]})") from None
        return parse_batch(obj, self.root / rel, _chunk(self.n, self.batch_size, step), self.num_classes)

    def describe(self) -> dict:
        digest = hashlib.sha256("".join(f"{p} {h}\n" for p, h in self.read).encode()).hexdigest()
        order = (f"{ORDER_FILE} (sha256 {self._order_sha})" if self._explicit is not None
                 else f"SRe2L RandomSampler, torch.Generator seed {SRE2L_SAMPLER_SEED}")
        return {"root": str(self.root), "epochs": self.epochs, "batches_per_epoch": self.batches,
                "batch_size": self.batch_size, "order": order, "files_read": len(self.read),
                "files_read_sha256": digest, "files_read_sha256_is": "sha256 of '<path> <sha256>\\n' lines in read order"}


def _tensor(value: object, where: Path, key: str, shape: tuple[int, ...], dtypes: tuple[torch.dtype, ...]) -> Tensor:
    if not isinstance(value, Tensor) or tuple(value.shape) != shape or value.dtype not in dtypes:
        got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
        raise DataError(f"{where}: {key}: expected a tensor {[str(d) for d in dtypes]} of shape {shape}, got {got}")
    return value


def _scalar(value: object, where: Path, key: str, kind: type) -> float | int:
    """A python/numpy/0-d tensor number: ints for `int`, ints or floats for `float`; bools are rejected."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not (is_int or (kind is float and isinstance(value, (float, np.floating)))):
        raise DataError(f"{where}: {key}: expected a {kind.__name__}, got {type(value).__name__} {value!r}")
    return kind(value)


def _mix(obj: list, where: Path, b: int) -> tuple[Tensor | None, float | None, tuple | None]:
    index, lam, box = obj[2], obj[3], obj[4]
    if index is None:
        if lam is not None or box is not None:
            raise DataError(f"{where}: mix_index is None, so mix_lam and mix_bbox must be None too")
        return None, None, None
    index = _tensor(index, where, "mix_index", (b,), (torch.int64,))
    if not torch.equal(index.sort().values, torch.arange(b)):
        raise DataError(f"{where}: mix_index: expected a permutation of 0..{b - 1}")
    lam_f = float(_scalar(lam, where, "mix_lam", float))
    if not 0.0 <= lam_f <= 1.0:
        raise DataError(f"{where}: mix_lam: expected a value in [0, 1], got {lam_f}")
    if box is None:
        return index, lam_f, None
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise DataError(f"{where}: mix_bbox: expected 4 ints [r1, c1, r2, c2] or None, got {box!r}")
    return index, lam_f, tuple(int(_scalar(v, where, f"mix_bbox[{i}]", int)) for i, v in enumerate(box))


def parse_batch(obj: object, where: Path, b: int, num_classes: int) -> FkdBatch:
    """Validate one stored batch of `b` images strictly; errors name the file, the field, expected and got."""
    if not isinstance(obj, (list, tuple)) or len(obj) != len(FIELDS):
        got = f"{type(obj).__name__} of {len(obj)}" if isinstance(obj, (list, tuple)) else type(obj).__name__
        raise DataError(f"{where}: expected a list of {len(FIELDS)} {list(FIELDS)}, got {got}")
    coords = _tensor(obj[0], where, "coords", (b, 4), (torch.float32, torch.float64))
    if bool(((coords < 0) | (coords > 1)).any()):
        raise DataError(f"{where}: coords: expected relative values in [0, 1], got min {float(coords.min())} "
                        f"max {float(coords.max())}")
    flip = _tensor(obj[1], where, "flip", (b,), (torch.bool,))
    index, lam, box = _mix(list(obj), where, b)
    soft = _tensor(obj[5], where, "soft_label", (b, num_classes), (torch.float16, torch.float32))
    return FkdBatch(coords, flip, index, lam, box, soft)


def open_fkd(root: Path, n_images: int, batch_size: int, num_classes: int) -> FkdReplay:
    """Check the directory layout (names only; batches are validated as they are read) and return a reader."""
    if not root.is_dir():
        raise DataError(f"{root}: FKD directory not found (expected epoch_0/batch_0.tar ...)")
    entries = [p.name for p in root.iterdir() if p.name != ORDER_FILE]
    epochs = _numbered(entries, "epoch_%d", root)
    expected = math.ceil(n_images / batch_size)
    for e in range(epochs):
        count = _numbered([p.name for p in (root / f"epoch_{e}").iterdir()], "batch_%d.tar", root / f"epoch_{e}")
        if count != expected:
            raise DataError(f"{root / f'epoch_{e}'}: {count} batch files, expected {expected} (= ceil({n_images} "
                            f"images / batch {batch_size}); the protocol's batch must equal the relabel batch)")
    replay = FkdReplay(root, (epochs, expected), n_images, batch_size, num_classes)
    if (root / ORDER_FILE).exists():
        order = load_file(str(root / ORDER_FILE)).get("order")
        if order is None or order.dtype != torch.int64 or tuple(order.shape) != (epochs, n_images):
            got = "no key 'order'" if order is None else f"{order.dtype} {tuple(order.shape)}"
            raise DataError(f"{root / ORDER_FILE}: order: expected int64 ({epochs}, {n_images}), got {got}")
        replay._explicit = order
        replay._order_sha = hashlib.sha256((root / ORDER_FILE).read_bytes()).hexdigest()
    return replay


class FkdWriter:
    """A `Hooks.record` callback writing each recorded batch in the layout above, plus the explicit order.

    `half=True` stores logits as fp16 (as SRe2L does); the default fp32 keeps a replay bitwise equal to the run.
    """

    def __init__(self, root: Path, half: bool = False):
        self.root, self.half = root, half
        self._orders: dict[int, list[Tensor]] = {}

    def __call__(self, epoch: int, step: int, idx: Tensor, rec: FkdBatch) -> None:
        if not self._orders and self.root.exists() and any(self.root.iterdir()):
            raise ConfigError(f"{self.root}: not empty; FKD directories are never overwritten")
        folder = self.root / f"epoch_{epoch}"
        folder.mkdir(parents=True, exist_ok=True)
        soft = rec.soft.half() if self.half else rec.soft
        box = None if rec.mix_box is None else list(rec.mix_box)
        torch.save([rec.coords, rec.flip, rec.mix_index, rec.mix_lam, box, soft], folder / f"batch_{step}.tar")
        self._orders.setdefault(epoch, []).append(idx.to(torch.int64))

    def finish(self) -> Path:
        """Write `kit_order.safetensors` (the per-epoch order of the recorded run)."""
        order = torch.stack([torch.cat(self._orders[e]) for e in sorted(self._orders)])
        save_file({"order": order.contiguous()}, str(self.root / ORDER_FILE))
        return self.root / ORDER_FILE
