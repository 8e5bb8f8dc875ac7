"""The compiled engine: the per-seed coupled loop with the network under `torch.compile` (docs/speed.md).

Same loop as `coupled.train` (same init, batch order and augmentation streams per seed, same SGD and schedule);
the network's forward and backward run as Inductor kernels, which fuse the element-wise layers (norm, ReLU,
pooling) that the eager path runs one pass over memory each, and on CPU a large batch runs in cache-sized
pieces whose gradients add up to the batch's (`train_chunk`). That changes float order, so its seeds are
cached under their own key and equal the per-seed reference within float order, not bitwise (DC CIFAR-10 IPC1,
10 seeds: 8 top-1 values identical, 2 off by 1 and 4 test images of 10,000; docs/speed.md).

One network object is compiled once per process and reused for every seed: each seed copies its own init into
it, so the graph is traced once (Dynamo guards on the parameter objects, which stay the same) and Inductor's
on-disk cache serves later processes.

Must not: read or write files beyond Inductor's own cache, print, or touch global RNG state.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

import torch
import torch._dynamo

from rd3kit.errors import ConfigError
from rd3kit.protocols.spec import CoupledProtocol
from rd3kit.train import coupled

ENGINE = "compiled-v1"
# Graphs per compiled network: train/eval x the batch shapes a protocol meets (a last partial batch, the test
# chunk and its remainder); Dynamo's default of 8 per code object is shared by every ConvNet in the process.
# Past the limit Dynamo would silently run eager (another float order), so hitting it raises instead.
RECOMPILE_LIMIT = 64


def compiler() -> str | None:
    """The C/C++ compiler Inductor will build kernels with ($CXX, else the first of g++, c++, clang++), or None.

    Inductor writes C++ for CPU kernels, and Triton builds a C launcher for CUDA ones: either way a compiler must
    be on PATH. CUDA "runtime" container images ship none.
    """
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((found for found in map(shutil.which, names) if found), None)


# Images per forward/backward piece of a CPU training batch, per 32x32 of input (coupled.fit's `chunk`): a batch
# of 100 CIFAR images puts 52 MB of first-block activations through the fused norm/ReLU/pool kernels, which are
# then bound by memory bandwidth; pieces of 20 keep them in cache. Measured on the 2-core EPYC (docs/speed.md):
# a compiled DC ConvNet step on 100 images took 184 ms median in pieces of 20 against 205 ms whole.
CPU_TRAIN_PIXELS = 20 * 32 * 32
CPU_TRAIN_MIN_CHUNK = 4


def train_chunk(net: torch.nn.Module, images: torch.Tensor) -> int | None:
    """`coupled.fit`'s chunk for `net` on `images`: None on GPUs and for nets with BatchNorm (not per-sample)."""
    if images.device.type != "cpu" or any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return None
    return max(CPU_TRAIN_MIN_CHUNK, CPU_TRAIN_PIXELS // (images.shape[-1] * images.shape[-2]))


class Compiled:
    """A protocol's network under `torch.compile`, trained seed after seed in place."""

    def __init__(self, protocol: CoupledProtocol, device: torch.device) -> None:
        if compiler() is None:
            raise ConfigError("--engine compiled: torch.compile needs a C/C++ compiler on PATH (g++, c++ or clang++, "
                              "or $CXX) to build its kernels, and none was found; install one (e.g. apt-get install "
                              "g++) or use --engine per-seed")
        self.protocol, self.device = protocol, device
        self.net = coupled.build_seeded(protocol, 0, device)
        self.forward = torch.compile(self.net, dynamic=False)

    def _limits(self):
        return torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True)

    def _load_init(self, seed_init: int) -> None:
        # load_state_dict copies into the existing tensors, so the compiled graph's guards still hold
        self.net.load_state_dict(coupled.build_seeded(self.protocol, seed_init, self.device).state_dict())
        for p in self.net.parameters():
            p.grad = None

    def train(self, images: torch.Tensor, labels: torch.Tensor, seed: int, lr: float,
              on_epoch: Callable[[int], None] | None = None) -> torch.nn.Module:
        """`coupled.train` for `seed` on the held network; returns it (valid until the next `train`)."""
        rng = coupled.streams(seed, images.device)
        self._load_init(rng.init)
        with self._limits():
            coupled.fit(self.protocol, self.net, self.forward, images, labels, rng, lr, on_epoch,
                        chunk=train_chunk(self.net, images))
        return self.net

    @torch.no_grad()
    def top1(self, images: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
        """`coupled.top1` of the held network through the compiled forward, every chunk one shape.

        A last partial chunk is filled up with the split's first images and only its own rows are counted, so
        a test split of any size meets one compiled graph (a new shape would cost a compile, ~3-6 s on 2 cores).
        The networks are per-sample in eval mode, so the filler does not touch the counted rows' logits.
        (no_grad rather than inference_mode: the latter's torch.cat output is an inference tensor, whose other
        dispatch keys fail Dynamo's guards and compile a second graph.)
        """
        self.net.eval()
        correct, batch = 0, coupled.eval_batch(images, batch)
        with self._limits():
            for start in range(0, images.shape[0], batch):
                x = images[start:start + batch]
                rows = x.shape[0]
                if rows < batch and images.shape[0] >= batch:
                    x = torch.cat([x, images[:batch - rows]])
                pred = self.forward(x)[:rows].argmax(dim=1)
                correct += int((pred == labels[start:start + rows]).sum())
        return correct / images.shape[0]
