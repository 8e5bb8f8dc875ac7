"""Several coupled-family training runs in one pass: stacked weights, grouped convolutions, per-run seed streams.

Must not: read or write files, print, touch global RNG state, or draw any run's randomness from anything but
that run's own `rd3kit.train.coupled.streams(seed, device)`: init, batch order and augmentation are those of
the single-seed `train`, draw for draw, so each run ends with the single-seed weights up to float summation
order (see `WEIGHT_ATOL`).

How: S networks of one architecture keep their parameters stacked (leading dim S). A conv layer runs as one
convolution with groups=S over the seeds' batches laid side by side along channels (N, S*C, H, W); DC's
"instancenorm" (GroupNorm(C, C)) becomes GroupNorm(S*C, S*C), which is the same per-channel statistic; ReLU
and pooling are per channel; the linear head is one batched matmul. The loss is the sum of the runs' own
losses, so each run's gradient is exactly its own (d sum / d loss_s = 1), and SGD on stacked tensors is the
same element-wise update as on each run's tensors. Explicit grouped convolutions were picked over
`torch.func.vmap(functional_call)` because vmap lowers conv to the same grouped convolution but adds its
own GroupNorm decomposition and overhead: it measured slower on this CPU (docs/speed.md).

Only models whose train and eval modes compute the same function and that carry no mutable buffers are
stacked (DC's ConvNet with instance/group norm or none, every activation and pooling): `supports` says which.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rd3kit.errors import ConfigError
from rd3kit.models.convnet import ConvNet
from rd3kit.protocols.spec import CoupledProtocol
from rd3kit.train.augment import augment
from rd3kit.train.coupled import build_seeded, end_epoch, sgd, soft_cross_entropy, streams

# Per-run weights agree with the single-seed loop to this absolute tolerance after the tiny test protocol
# (4 epochs; weights are O(0.01..1); measured max 5e-5). Not bitwise, and not expected to be: a grouped
# convolution and a plain one reduce each output element and each weight gradient in a different order
# (oneDNN/cuDNN block by channel count and layout), so the runs differ in the last bit after the first step;
# GroupNorm's 1/sqrt(var + eps) magnifies that in channels that are nearly constant, and training carries it
# on. After the full DC CIFAR-10 IPC1 protocol (301 epochs) the measured gap was at most 7.3e-4 and at most
# one of 10,000 test predictions (benchmarks/equivalence-cpu.json).
WEIGHT_ATOL = 5e-4

# The engine name results of this module carry (rd3kit.api caches and records them under it). Bump the suffix
# when a change here moves float order, so cached stacked runs of the old order are not reused.
ENGINE = "multiseed-v1"

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.AvgPool2d, nn.MaxPool2d)


@dataclass(frozen=True)
class Run:
    """One training run: a set (already preprocessed, on the device) and the seed its streams come from."""

    images: Tensor
    labels: Tensor
    seed: int
    origin: str = ""  # the set's origin, for records of runs trained together on different sets


@dataclass(frozen=True)
class Engine:
    """How the stacked runs execute; changes timings and float order, never the protocol's numbers.

    Attributes:
        channels_last: activations in NHWC; None picks: NHWC on CUDA and for S > 1 stacked runs on CPU (grouped
            convolutions ran ~1.9x faster per step than in NCHW here), NCHW for one run on CPU (GroupNorm's
            backward ran ~4.5x slower on NHWC than NCHW here, so one run trains in the single loop's layout);
            the test pass (no backward) runs NHWC for any S.
        torch_compile: wrap the stacked forward in `torch.compile` ("reduce-overhead", i.e. CUDA graphs, on CUDA).
            Measured on this CPU: steps 0.75x the eager time after ~2 min of compiling; not measured on a GPU.
    """

    channels_last: bool | None = None
    torch_compile: bool = False


def supports(protocol: CoupledProtocol) -> bool:
    """Whether `protocol`'s network can be stacked (else train its seeds one by one with `coupled.train`)."""
    try:
        _check_stackable(build_seeded(protocol, 0, torch.device("cpu")))
    except ConfigError:
        return False
    return True


def _check_stackable(net: nn.Module) -> None:
    if not isinstance(net, ConvNet):
        raise ConfigError(f"multiseed: only DC's ConvNet is stacked, got {type(net).__name__}; use coupled.train")
    if not isinstance(net.features[0], nn.Conv2d):  # the shared test pass feeds the first conv directly
        raise ConfigError(f"multiseed: expected a Conv2d first, got {type(net.features[0]).__name__}")
    for m in net.features:
        if not isinstance(m, (nn.Conv2d, nn.GroupNorm, *_ELEMENTWISE)):
            raise ConfigError(f"multiseed: layer {type(m).__name__} is not stacked (buffers or batch coupling); "
                              "use coupled.train")


class Stacked:
    """S networks of one architecture as stacked leaf parameters (S, ...), run with grouped convolutions."""

    def __init__(self, template: nn.Module, params: dict[str, Tensor], engine: Engine) -> None:
        self.template, self.params, self.size = template, params, next(iter(params.values())).shape[0]
        self.engine, first = engine, next(iter(params.values()))
        auto = engine.channels_last is None
        # (training, test) layouts; the test pass has no GroupNorm backward, so NHWC wins there for any S (~15%).
        self._nhwc = (first.is_cuda or self.size > 1, True) if auto else (engine.channels_last,) * 2
        forward = self._forward
        if engine.torch_compile:
            mode = "reduce-overhead" if first.is_cuda else "default"
            forward = torch.compile(forward, mode=mode, dynamic=False)
        self._compiled = forward

    def _layout(self, h: Tensor, nhwc: bool) -> Tensor:
        # Always a dense layout: a (1, N, ...) -> (N, ...) view can keep odd strides that send conv elsewhere.
        return h.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)

    def _forward(self, params: dict[str, Tensor], h: Tensor, shared: bool) -> Tensor:
        """(N, S*C, H, W) side-by-side batches, or (N, C, H, W) one batch all runs see (`shared`) -> (S, N, K)."""
        s, nhwc = self.size, self._nhwc[1] if shared else self._nhwc[0]
        for i, m in enumerate(self.template.features):
            if isinstance(m, nn.Conv2d):
                w, b = params[f"features.{i}.weight"], params.get(f"features.{i}.bias")
                # A shared input feeds every run's filters: one plain conv with S*O outputs, no copies.
                groups = m.groups if shared else s * m.groups
                h = F.conv2d(self._layout(h, nhwc), w.flatten(0, 1), None if b is None else b.flatten(),
                             m.stride, m.padding, m.dilation, groups)
                shared = False
            elif isinstance(m, nn.GroupNorm):
                w, b = params.get(f"features.{i}.weight"), params.get(f"features.{i}.bias")
                # Each run's channels are contiguous, so S*G groups are exactly each run's G groups.
                h = F.group_norm(h, s * m.num_groups, None if w is None else w.flatten(),
                                 None if b is None else b.flatten(), m.eps)
            else:
                h = m(h)
        feats = h.reshape(h.shape[0], s, -1).transpose(0, 1)  # (S, N, C*H*W), each run's flatten order
        w, b = params["classifier.weight"], params["classifier.bias"]
        return torch.baddbmm(b.unsqueeze(1), feats, w.transpose(1, 2))

    def forward(self, x: Tensor) -> Tensor:
        """Each run's own batch: x (S, N, C, H, W) -> logits (S, N, K)."""
        side_by_side = x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
        return self._compiled(self.params, side_by_side, False)

    def forward_shared(self, x: Tensor) -> Tensor:
        """One batch every run classifies: x (N, C, H, W) -> logits (S, N, K)."""
        return self._compiled(self.params, x, True)

    def state_dict(self, index: int) -> dict[str, Tensor]:
        """Run `index`'s weights under the single network's state_dict keys (detached copies)."""
        return {k: v[index].detach().clone() for k, v in self.params.items()}

    def network(self, index: int) -> nn.Module:
        """Run `index` as a plain network (a copy of the template holding its weights)."""
        import copy

        net = copy.deepcopy(self.template)
        net.load_state_dict(self.state_dict(index))
        return net


def stack_seeded(protocol: CoupledProtocol, seeds: Sequence[int], device: torch.device,
                 engine: Engine = Engine()) -> Stacked:
    """Build each seed's network with its own init stream (as `coupled.train` does) and stack them."""
    nets = [build_seeded(protocol, streams(seed, device).init, device) for seed in seeds]
    _check_stackable(nets[0])
    params = {name: torch.stack([dict(n.named_parameters())[name].detach() for n in nets]).requires_grad_()
              for name, _ in nets[0].named_parameters()}
    return Stacked(nets[0], params, engine)


def train_runs(
    protocol: CoupledProtocol,
    runs: Sequence[Run],
    lr: float,
    on_epoch: Callable[[int], None] | None = None,
    engine: Engine = Engine(),
) -> Stacked:
    """Train every run together under `protocol`; run i ends as `coupled.train(protocol, *runs[i], lr)`.

    The runs' sets must share one shape (an audit's distilled and random subsets of one IPC do).
    """
    shapes = {(tuple(r.images.shape), tuple(r.labels.shape)) for r in runs}
    if len(shapes) != 1:
        raise ConfigError(f"multiseed: runs trained together need sets of one shape, got {sorted(shapes)}")
    device = runs[0].images.device
    rngs = [streams(r.seed, device) for r in runs]
    stacked = stack_seeded(protocol, [r.seed for r in runs], device, engine)
    loss_fn = soft_cross_entropy if protocol.labels.kind == "soft_logits" else F.cross_entropy
    optimizer = sgd(stacked.params.values(), protocol, lr)  # element-wise: each run's own update
    n, batch = runs[0].images.shape[0], protocol.batch_size
    for ep in range(protocol.run_epochs):
        # Each run's own permutation, drawn once per epoch from its shuffle stream as the single loop does.
        # With n <= batch (IPC <= 25 on CIFAR-10) every epoch is one full batch: the order then changes the
        # gradient only through float summation order, but it is kept so the draws match the single loop.
        orders = [torch.randperm(n, generator=g.shuffle).to(device) for g in rngs]
        for start in range(0, n, batch):
            xs, ys = [], []
            for run, order, rng in zip(runs, orders, rngs):
                idx = order[start:start + batch]
                xs.append(augment(run.images[idx], protocol.augmentation, rng.aug))
                ys.append(run.labels[idx])
            out = stacked.forward(torch.stack(xs))
            loss = sum(loss_fn(out[s], y) for s, y in enumerate(ys))  # d sum / d loss_s = 1: own gradients
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        lr, optimizer = end_epoch(protocol, ep, lr, optimizer, stacked.params.values())
        if on_epoch is not None:
            on_epoch(ep)
    return stacked


def train_seeds(
    protocol: CoupledProtocol,
    images: Tensor,
    labels: Tensor,
    seeds: Sequence[int],
    lr: float,
    on_epoch: Callable[[int], None] | None = None,
    engine: Engine = Engine(),
) -> Stacked:
    """Train one network per seed on one set, all together; seed i ends as `coupled.train(..., seeds[i], lr)`."""
    return train_runs(protocol, [Run(images, labels, s) for s in seeds], lr, on_epoch, engine)


@torch.no_grad()
def predict_all(stacked: Stacked, images: Tensor, batch: int) -> Tensor:
    """Every run's predicted class for every image, (S, N), in one pass over `images`, `batch` images at a time.

    Per-sample norms make each prediction independent of the batch it rides in (up to float order).
    """
    preds = [stacked.forward_shared(images[start:start + batch]).argmax(dim=2)
             for start in range(0, images.shape[0], batch)]
    return torch.cat(preds, dim=1)


def test_batch(protocol: CoupledProtocol, stacked: Stacked, device: torch.device) -> int:
    """Test images per stacked pass: CUDA up to the protocol's test batch within the memory budget; CPU small.

    On CPU a pass whose first activation stays near 2**22 elements (16 MiB: ~32 CIFAR images for one ConvNet-128)
    keeps GroupNorm/ReLU/pool in cache: measured here at load ~1, 0.85 ms per image at 32 vs 1.29 at 256.
    """
    per_image = _activation(protocol, 1) * stacked.size
    if device.type == "cuda":
        return max(1, min(protocol.test_batch_size, _budget(device) // 4 // per_image))
    return max(1, min(protocol.test_batch_size, (1 << 22) // per_image))


def top1_all(stacked: Stacked, images: Tensor, labels: Tensor, batch: int) -> list[float]:
    """Each run's top-1 accuracy as a fraction (no augmentation; train and eval modes agree for these nets)."""
    correct = (predict_all(stacked, images, batch) == labels.unsqueeze(0)).sum(dim=1)
    return [int(c) / images.shape[0] for c in correct]


def precision(device: torch.device) -> str:
    """What the runs compute in: fp32 (no autocast: no coupled protocol allows another precision).

    On CUDA, PyTorch lets cuDNN use TF32 for convolutions by default (`torch.backends.cudnn.allow_tf32`); that
    is recorded rather than changed, since changing a global backend flag here would touch other code.
    """
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "fp32 (tf32 convolutions)"
    return "fp32"


def _budget(device: torch.device) -> int:
    """Elements allowed in one stacked first-layer activation: 1 GiB of fp32 on CPU, 4 GiB on CUDA.

    The first conv's output is the largest tensor of a ConvNet step, and backward keeps a few of its size.
    """
    return 1 << (30 if device.type == "cuda" else 28)


def _activation(protocol: CoupledProtocol, batch: int) -> int:
    h, w = protocol.data.image_size
    return max(1, batch * int(protocol.model.width or 1) * h * w)


def seeds_per_pass(protocol: CoupledProtocol, n_images: int, device: torch.device) -> int:
    """How many seeds to stack in one training pass (a chunk is also the unit a crash can lose).

    CUDA: all the protocol's seeds within the memory budget (one small model leaves the GPU mostly idle).
    CPU: one. Stacking does not cut FLOPs, and on this 2-core CPU grouped convolutions ran slower than separate
    ones: at load ~2, 10 seeds stacked took 2.2x (IPC1) and 2.0x (IPC10) the time per step of 10 separate
    modules (benchmarks/steps-cpu.json). Only under heavy contention (load 13-15 on 2 cores) did stacking win,
    by making 10x fewer, larger calls that stall less; a number's float order must not depend on the load.
    """
    if device.type != "cuda":
        return 1
    fit = _budget(device) // _activation(protocol, min(n_images, protocol.batch_size))
    return max(1, min(len(protocol.seeds), fit))
