"""The paper's residual UNet family, its canonical names, and its receptive field.

An architecture is an :class:`ArchSpec`: number of encoder blocks N, one pooling size per level, one dilation per
encoder block plus the bottleneck (the decoder mirrors the encoder), base filters, channels, classes and a
pooling/upsampling mode ("max": max-pool + nearest upsample as in the paper; "avg": average-pool + bilinear upsample).

The receptive field is computed by walking the modules of a built model along its deepest path
(:func:`receptive_field`), so it cannot drift from the network that is trained.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from rfseg.errors import UserError, check_choice

POOL_CHOICES = (2, 4, 8)
MODES = ("max", "avg")
_NAME_RE = re.compile(r"^n(?P<n>\d)_p(?P<pools>[248]+)(?:_d(?P<dil>\d+))?(?:_(?P<mode>avg))?$")


@dataclass(frozen=True)
class ArchSpec:
    """One UNet architecture. ``dilations`` has ``blocks + 1`` entries (encoder blocks, then bottleneck)."""

    blocks: int
    pools: tuple[int, ...]
    dilations: tuple[int, ...] = field(default=())
    mode: str = "max"
    base_filters: int = 4
    in_channels: int = 1
    classes: int = 2

    def __post_init__(self):
        object.__setattr__(self, "pools", tuple(int(p) for p in self.pools))
        dil = tuple(int(d) for d in self.dilations) or (1,) * (self.blocks + 1)
        object.__setattr__(self, "dilations", dil)
        if not 2 <= self.blocks <= 5:
            raise UserError(f"blocks must be between 2 and 5, got {self.blocks}")
        if len(self.pools) != self.blocks:
            raise UserError(
                f"pools has {len(self.pools)} entries but blocks is {self.blocks}: give one pool size per block"
            )
        bad = [p for p in self.pools if p not in POOL_CHOICES]
        if bad:
            raise UserError(f"pool size {bad[0]} is not allowed: pools must be chosen from {POOL_CHOICES}")
        if len(self.dilations) != self.blocks + 1:
            raise UserError(
                f"dilations has {len(self.dilations)} entries but needs {self.blocks + 1} "
                f"(one per encoder block plus the bottleneck)"
            )
        if any(not 1 <= d <= 9 for d in self.dilations):
            raise UserError(f"dilations must be integers from 1 to 9, got {list(self.dilations)}")
        check_choice("mode", self.mode, MODES)
        if self.base_filters < 1 or self.in_channels < 1 or self.classes < 2:
            raise UserError("base_filters and in_channels must be >= 1 and classes >= 2")

    @property
    def name(self) -> str:
        """Canonical id, e.g. ``n2_p44``, ``n2_p22_d112``, ``n2_p22_avg``."""
        name = f"n{self.blocks}_p{''.join(map(str, self.pools))}"
        if any(d != 1 for d in self.dilations):
            name += f"_d{''.join(map(str, self.dilations))}"
        if self.mode != "max":
            name += f"_{self.mode}"
        return name

    @property
    def downsampling(self) -> int:
        """Product of the pooling sizes: input height and width must be multiples of it."""
        return math.prod(self.pools)

    @classmethod
    def from_name(cls, name: str, **kwargs) -> "ArchSpec":
        m = _NAME_RE.match(name)
        if not m:
            raise UserError(
                f"architecture name {name!r} is not of the form n<N>_p<pools>[_d<dilations>][_avg], e.g. n2_p44"
            )
        pools = tuple(int(c) for c in m["pools"])
        dil = tuple(int(c) for c in m["dil"]) if m["dil"] else ()
        return cls(blocks=int(m["n"]), pools=pools, dilations=dil, mode=m["mode"] or "max", **kwargs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pools"] = list(self.pools)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ArchSpec":
        keys = {"blocks", "pools", "dilations", "mode", "base_filters", "in_channels", "classes"}
        return cls(**{k: v for k, v in d.items() if k in keys})


class _Relayout(torch.autograd.Function):
    """A copy into memory format ``to`` whose gradient is copied back into ``back``, so that no backward op sees
    mixed layouts."""

    @staticmethod
    def forward(ctx, x, to, back):
        ctx.back = back
        return x.contiguous(memory_format=to)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=ctx.back), None, None


def _channels_last_only(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def one_channel_as_channels_last(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A one-channel input ``x`` (B, 1, H, W) viewed with channels-last strides when ``like`` (a weight) is
    channels-last and the network runs in bfloat16 on a CPU.

    For one channel both layouts hold the same bytes, so ``x.contiguous(memory_format=torch.channels_last)`` returns
    ``x`` with its NCHW strides, and oneDNN then runs the first block's 1x1 projection in its NCHW bfloat16 kernel,
    about 10x slower than the channels-last one (forward and backward, batch 4 of 256² px). The view changes strides
    only, never values; the result measured bit-identical."""
    if (x.ndim != 4 or x.shape[1] != 1 or x.device.type != "cpu" or not _channels_last_only(like)
            or torch.compiler.is_compiling() or not torch.is_autocast_enabled("cpu")
            or torch.get_autocast_dtype("cpu") != torch.bfloat16 or not x.is_contiguous()):
        return x
    return x.as_strided(x.shape, (x.shape[2] * x.shape[3], 1, x.shape[3], 1))


def gradient_like(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, whose gradient is made channels-last before autograd adds it to the others, when ``t`` is a
    channels-last bfloat16 CPU tensor that needs one.

    A skip connection's gradient comes back from the concatenation as a strided slice of a wider tensor, and adding
    it to the gradient from the pooling path ran about 13x slower in bfloat16 than adding two channels-last tensors
    (a copy and a matching add cost a quarter of that). In float32 the mixed add was about 3x slower, about what
    the copy costs, so float32 is left as it is. Values are unchanged: only the layout differs."""
    if (not torch.is_grad_enabled() or not t.requires_grad or t.device.type != "cpu" or t.dtype != torch.bfloat16
            or not _channels_last_only(t)):
        return t
    return _Relayout.apply(t, torch.channels_last, torch.channels_last)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and state-dict keys) that, in training, normalises channels-last
    CPU tensors of fewer than :attr:`NCHW_BELOW_CHANNELS` channels in NCHW and converts back.

    PyTorch's CPU batch-norm statistics on channels-last tensors vectorise over channels, which this UNet has few of
    (4 and 8 at full and half resolution): there forward and backward ran about 10x slower than on NCHW, a third of
    a training step. The two copies each way cost far less (docs/explanation/performance.md). In eval mode batch norm
    is a per-channel affine map, left as it is here; inference folds it into the convolution before it
    (:func:`fold_batch_norm`)."""

    NCHW_BELOW_CHANNELS = 16

    def forward(self, x):
        if (not self.training or x.device.type != "cpu" or x.shape[1] >= self.NCHW_BELOW_CHANNELS
                or not _channels_last_only(x)):
            return super().forward(x)
        nchw, cl = torch.contiguous_format, torch.channels_last
        return _Relayout.apply(super().forward(_Relayout.apply(x, nchw, cl)), cl, nchw)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) that runs a *dilated* convolution on the CPU in float32
    even under bfloat16 autocast.

    On an AMD EPYC with AVX-512 BF16 (torch 2.13), oneDNN's bfloat16 channels-last kernel for dilated 3x3
    convolutions returned NaN gradients whenever the input channels were not a multiple of 16, such as the 24 of the
    first decoder of a dilated N = 2 model: training then silently produced a model that predicts nothing. Float32
    is correct there, and only the dilated layers pay for it."""

    def forward(self, x):
        if self.dilation == (1, 1) or x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return super().forward(x.float())


class ResidualBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus a 1x1 projection of the input, added, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1):
        super().__init__()
        self.conv1 = Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn1 = BatchNorm2d(out_ch)
        self.conv2 = Conv2d(out_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn2 = BatchNorm2d(out_ch)
        self.project = nn.Conv2d(in_ch, out_ch, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.project(x))


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` in eval mode with the batch norms of its residual blocks folded into the
    convolutions before them (``torch.nn.utils.fusion.fuse_conv_bn_eval``), the original left as it is.

    Eval-mode batch norm is a per-channel affine map, so the folded network computes the same function; its values
    differ by rounding (float32: 5e-7 in probability; bfloat16 autocast: up to 0.015, no mask pixel changed on a
    4096² micrograph). Eager CPU inference skips a fifth of its work: the demo's N = 2 network segmented a 4096²
    micrograph in 1.10 s against 1.42 on an Intel Xeon with AMX."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if isinstance(block, ResidualBlock) and isinstance(block.bn1, nn.BatchNorm2d):
            block.conv1, block.bn1 = fuse_conv_bn_eval(block.conv1, block.bn1), nn.Identity()
            block.conv2, block.bn2 = fuse_conv_bn_eval(block.conv2, block.bn2), nn.Identity()
    return folded


class ResidualUNet(nn.Module):
    """Residual UNet of the paper. Input (B, in_channels, H, W) float, output logits (B, classes, H, W).

    H and W must be multiples of ``spec.downsampling``.
    """

    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        widths = [spec.base_filters * 2**i for i in range(spec.blocks + 1)]
        self.encoders = nn.ModuleList()
        self.pools = nn.ModuleList()
        in_ch = spec.in_channels
        for i in range(spec.blocks):
            self.encoders.append(ResidualBlock(in_ch, widths[i], spec.dilations[i]))
            pool = nn.MaxPool2d if spec.mode == "max" else nn.AvgPool2d
            self.pools.append(pool(spec.pools[i], spec.pools[i]))
            in_ch = widths[i]
        self.bottleneck = ResidualBlock(in_ch, widths[spec.blocks], spec.dilations[spec.blocks])
        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        below = widths[spec.blocks]
        for i in reversed(range(spec.blocks)):
            if spec.mode == "max":
                up = nn.Upsample(scale_factor=spec.pools[i], mode="nearest")
            else:
                up = nn.Upsample(scale_factor=spec.pools[i], mode="bilinear", align_corners=False)
            self.upsamples.append(up)
            self.decoders.append(ResidualBlock(widths[i] + below, widths[i], spec.dilations[i]))
            below = widths[i]
        self.head = nn.Conv2d(widths[0], spec.classes, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        k = self.spec.downsampling
        if h % k or w % k:
            raise ValueError(
                f"input of {h}x{w} px does not fit architecture {self.spec.name}: "
                f"height and width must be multiples of {k} (the product of its pools)"
            )
        x = one_channel_as_channels_last(x, self.encoders[0].conv2.weight)
        skips = []
        for enc, pool in zip(self.encoders, self.pools):
            x = enc(x)
            skips.append(x)
            x = pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.upsamples, self.decoders, reversed(skips)):
            x = dec(torch.cat([gradient_like(skip), up(x)], dim=1))
        return self.head(x)

    def deepest_path(self) -> list[nn.Module]:
        """Modules an input pixel passes through on the longest route to the output, in order."""
        path: list[nn.Module] = []
        for enc, pool in zip(self.encoders, self.pools):
            path += [enc.conv1, enc.conv2, pool]
        path += [self.bottleneck.conv1, self.bottleneck.conv2]
        for up, dec in zip(self.upsamples, self.decoders):
            path += [up, dec.conv1, dec.conv2]
        path.append(self.head)
        return path


def _pair_first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def receptive_field(model: ResidualUNet) -> int:
    """Theoretical receptive field in pixels (eq. 1 of the paper, with dilation), from the model's modules.

    Walks :meth:`ResidualUNet.deepest_path` keeping the receptive field ``r`` and the jump ``j`` (input pixels per
    feature pixel). A k x k layer with dilation d adds ``d*(k-1)*j``; a pool of stride s multiplies ``j`` by s; a
    nearest upsample by s divides it; a bilinear upsample also reads two neighbouring coarse pixels, adding ``j``
    first. For pools larger than 2 the exact support of one output pixel depends on its position in the pooling grid; this
    value is its mean over positions (see tests/test_models.py).
    """
    r, j = 1, 1
    for m in model.deepest_path():
        if isinstance(m, nn.Conv2d):
            k, d, s = _pair_first(m.kernel_size), _pair_first(m.dilation), _pair_first(m.stride)
            r += d * (k - 1) * j
            j *= s
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k, s = _pair_first(m.kernel_size), _pair_first(m.stride)
            r += (k - 1) * j
            j *= s
        elif isinstance(m, nn.Upsample):
            s = int(m.scale_factor)
            if m.mode == "bilinear":
                r += j
            elif m.mode != "nearest":
                raise TypeError(f"no receptive-field rule for upsampling mode {m.mode!r}")
            j //= s
        else:
            raise TypeError(f"no receptive-field rule for layer {type(m).__name__}")
    return r


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _param_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def init_weights(model: nn.Module, seed: int, head_std: float | None = None) -> None:
    """Kaiming (He) init of every conv, each from its own generator seeded by (seed, parameter name).

    The initial weights then do not depend on the order in which layers are built, so architectures that differ
    only in pooling or dilation start from identical weights for the same seed. ``head_std``: draw the 1x1 output
    layer's weights from N(0, head_std²) instead (RetinaNet's classification head uses 0.01), so that every seed
    starts with near-zero logits.
    """
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            g = torch.Generator().manual_seed(_param_seed(seed, name))
            with torch.no_grad():
                w = torch.empty_like(m.weight, device="cpu")
                if name == "head" and head_std is not None:
                    nn.init.normal_(w, 0.0, head_std, generator=g)
                else:
                    nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g)
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def set_head_prior(model: ResidualUNet, class_fractions) -> None:
    """Set the biases of the 1x1 head to the log of the class fractions (each clipped to [1e-4, 1 - 1e-4]).

    A pixel whose head inputs are all zero (every feature of the last ReLU off, as background often is) is then
    predicted with the training set's class frequencies instead of 50/50; with zero biases its probability can only
    move as fast as the optimiser moves the biases. ``class_fractions``: one share per class, summing to 1.
    """
    p = torch.as_tensor(class_fractions, dtype=torch.float64).clamp(1e-4, 1 - 1e-4)
    if p.shape != model.head.bias.shape:
        raise ValueError(f"{len(p)} class fractions for a head of {model.head.bias.numel()} classes")
    with torch.no_grad():
        model.head.bias.copy_((p.log() - p.log().mean()).to(model.head.bias.dtype))


def build_model(spec: ArchSpec, seed: int | None = None, head_std: float | None = None) -> ResidualUNet:
    model = ResidualUNet(spec)
    if seed is not None:
        init_weights(model, seed, head_std)
    return model


def join_ints(values) -> str:
    """Pools or dilations as the tables write them: ``(2, 2)`` -> ``"2,2"``."""
    return ",".join(map(str, values))


def table_columns(arch: dict) -> dict:
    """The architecture columns of a result table from an ``ArchSpec.to_dict()``: blocks, pools, dilations, mode."""
    return {"blocks": arch["blocks"], "pools": join_ints(arch["pools"]), "dilations": join_ints(arch["dilations"]),
            "mode": arch["mode"]}


def describe(spec: ArchSpec, pixel_size_nm: float | None = None) -> dict:
    """JSON-ready summary: name, spec, trainable params, RF in px and nm (None without a pixel size)."""
    model = ResidualUNet(spec)
    rf = receptive_field(model)
    return {
        "name": spec.name,
        **spec.to_dict(),
        "params": count_params(model),
        "rf_px": rf,
        "pixel_size_nm": pixel_size_nm,
        "rf_nm": None if pixel_size_nm is None else rf * pixel_size_nm,
    }


def sweep(blocks: int, max_rf_px: int, mode: str = "max", dilations=()) -> list[ArchSpec]:
    """All pooling combinations from {2, 4, 8} for ``blocks`` levels whose RF is at most ``max_rf_px``, by RF."""
    specs = []
    for pools in itertools.product(POOL_CHOICES, repeat=blocks):
        spec = ArchSpec(blocks=blocks, pools=pools, dilations=dilations, mode=mode)
        rf = receptive_field(ResidualUNet(spec))
        if rf <= max_rf_px:
            specs.append((rf, spec.name, spec))
    return [s for _, _, s in sorted(specs, key=lambda t: (t[0], t[1]))]
