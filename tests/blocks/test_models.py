import math

import pytest
import torch
from torch import nn

from rfseg.errors import UserError
from rfseg.blocks.models import (ArchSpec, BatchNorm2d, ResidualUNet, build_model, count_params, describe, receptive_field,
                          set_head_prior, sweep)

# Table 2 and the RF table of the paper (FACTS.md).
PAPER_PARAMS = {2: 8074, 3: 32730, 4: 130682}
PAPER_RF_N2 = {
    (2, 2): 44, (2, 4): 64, (4, 2): 80, (2, 8): 104, (4, 4): 120,
    (8, 2): 152, (4, 8): 200, (8, 4): 232, (8, 8): 392,
}


@pytest.mark.parametrize("blocks,params", PAPER_PARAMS.items())
def test_params_match_paper(blocks, params):
    for pools in [(2,) * blocks, (4,) * blocks]:
        assert count_params(ResidualUNet(ArchSpec(blocks, pools))) == params
    assert count_params(ResidualUNet(ArchSpec(blocks, (2,) * blocks, (2,) * (blocks + 1)))) == params


@pytest.mark.parametrize("pools,rf", PAPER_RF_N2.items())
def test_rf_matches_paper_table(pools, rf):
    assert receptive_field(ResidualUNet(ArchSpec(2, pools))) == rf


def test_rf_dilated_and_deep():
    assert receptive_field(ResidualUNet(ArchSpec(2, (2, 2), (1, 1, 2)))) == 60
    assert receptive_field(ResidualUNet(ArchSpec(4, (2, 2, 2, 2)))) == 200


def _all_ones_net(spec: ArchSpec) -> nn.Module:
    """Float64 net with every conv weight 1 and no bias; max-pools swapped for average pools of the same geometry
    so that the gradient reaches every pixel of a window (a max-pool sends it to one pixel only)."""
    model = ResidualUNet(spec).double().eval()
    for i, p in enumerate(model.pools):
        if isinstance(p, nn.MaxPool2d):
            model.pools[i] = nn.AvgPool2d(p.kernel_size, p.stride)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def empirical_rf(spec: ArchSpec) -> tuple[float, int, int]:
    """Support width of d(output pixel)/d(input) along x, for every x position in one pooling period.

    Returns (mean, min, max) over the period's positions."""
    model = _all_ones_net(spec)
    rf = receptive_field(ResidualUNet(spec))
    period = spec.downsampling
    size = period * math.ceil((2 * rf + 2 * period) / period)
    # A strip one period high: with positive weights every path is kept, so the x-extent is that of a full image.
    x = torch.ones(1, 1, period, size, dtype=torch.float64, requires_grad=True)
    out = model(x)
    widths = []
    c = size // 2
    for t in range(period):
        (g,) = torch.autograd.grad(out[0, 1, period // 2, c + t], x, retain_graph=True)
        cols = torch.nonzero(g[0, 0].abs().sum(0) > 0).flatten()
        assert cols.min() > 0 and cols.max() < size - 1, "support reached the border: image too small"
        widths.append(int(cols.max() - cols.min() + 1))
    return sum(widths) / len(widths), min(widths), max(widths)


@pytest.mark.parametrize(
    "spec",
    [
        ArchSpec(2, (2, 2)),
        ArchSpec(2, (4, 4)),
        ArchSpec(2, (2, 8)),
        ArchSpec(2, (8, 8)),
        ArchSpec(3, (2, 4, 2)),
        ArchSpec(2, (2, 2), (1, 1, 2)),
        ArchSpec(2, (2, 4), (2, 1, 3)),
        ArchSpec(2, (2, 2), mode="avg"),
        ArchSpec(2, (4, 2), mode="avg"),
    ],
    ids=lambda s: s.name,
)
def test_rf_agrees_with_gradient_support(spec):
    mean, lo, hi = empirical_rf(spec)
    rf = receptive_field(ResidualUNet(spec))
    assert mean == pytest.approx(rf)
    if set(spec.pools) == {2} and spec.mode == "max":
        assert lo == hi == rf  # with pools of 2 the support does not depend on the output pixel's position
    else:
        assert lo <= rf <= hi


def test_forward_shapes_and_size_check():
    model = build_model(ArchSpec(2, (4, 2)), seed=1)
    assert model(torch.randn(2, 1, 64, 40)).shape == (2, 2, 64, 40)
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.randn(1, 1, 60, 64))


def test_names_round_trip():
    for spec in [ArchSpec(2, (4, 4)), ArchSpec(2, (2, 2), (1, 1, 2)), ArchSpec(3, (8, 2, 4), mode="avg")]:
        assert ArchSpec.from_name(spec.name) == spec
        assert ArchSpec.from_dict(spec.to_dict()) == spec
    assert ArchSpec(2, (4, 4)).name == "n2_p44"
    assert ArchSpec(2, (2, 2), (1, 1, 2)).name == "n2_p22_d112"


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(blocks=2, pools=(2, 2, 2)), "pools has 3 entries"),
        (dict(blocks=2, pools=(2, 3)), "pool size 3"),
        (dict(blocks=2, pools=(2, 2), dilations=(1, 1)), "dilations has 2 entries"),
        (dict(blocks=6, pools=(2,) * 6), "blocks must be between"),
        (dict(blocks=2, pools=(2, 2), mode="mean"), "mode must be"),
    ],
)
def test_bad_specs(kwargs, msg):
    with pytest.raises(UserError, match=msg):
        ArchSpec(**kwargs)


def test_same_seed_same_init_across_pools_and_different_across_seeds():
    a = build_model(ArchSpec(2, (2, 2)), seed=752).state_dict()
    b = build_model(ArchSpec(2, (8, 8)), seed=752).state_dict()
    c = build_model(ArchSpec(2, (2, 2)), seed=140).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoders.0.conv1.weight"], c["encoders.0.conv1.weight"])


def test_head_prior_predicts_the_class_shares_where_the_features_are_zero():
    model = build_model(ArchSpec(2, (2, 2)), seed=752)
    set_head_prior(model, [0.8, 0.2])
    zero_features = torch.zeros(1, model.head.in_channels, 4, 4)
    p = model.head(zero_features).softmax(1)[0, :, 0, 0]
    assert torch.allclose(p, torch.tensor([0.8, 0.2]), atol=1e-6)
    set_head_prior(model, [1.0, 0.0])  # clipped, so the logits stay finite
    assert torch.isfinite(model.head.bias).all() and model.head(zero_features).softmax(1)[0, 1, 0, 0] < 1e-3
    with pytest.raises(ValueError, match="3 class fractions"):
        set_head_prior(model, [0.5, 0.3, 0.2])


def test_small_head_init_starts_every_seed_near_the_prior():
    """With the paper's Kaiming head the initial logits depend strongly on the seed (a particle-vs-background logit
    offset of tens on some seeds); with head_std 0.01 only the head changes and every seed starts near its bias."""
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    offsets = {}
    for seed in (752, 2245, 140):
        kaiming = build_model(ArchSpec(2, (2, 2)), seed=seed)
        small = build_model(ArchSpec(2, (2, 2)), seed=seed, head_std=0.01)
        assert all(torch.equal(kaiming.state_dict()[k], v) for k, v in small.state_dict().items() if k != "head.weight")
        assert 0.005 < small.head.weight.std() < 0.02
        with torch.no_grad():
            offsets[seed] = [(m.train()(x).diff(dim=1)).abs().mean().item() for m in (kaiming, small)]
    assert max(o[0] for o in offsets.values()) > 20 and max(o[1] for o in offsets.values()) < 1, offsets
    assert not torch.equal(build_model(ArchSpec(2, (2, 2)), seed=1, head_std=0.01).head.weight,
                           build_model(ArchSpec(2, (2, 2)), seed=2, head_std=0.01).head.weight)


def test_sweep_sorted_and_bounded():
    specs = sweep(2, 200)
    rfs = [describe(s)["rf_px"] for s in specs]
    assert rfs == sorted(rfs) and max(rfs) <= 200
    assert [s.name for s in specs] == ["n2_p22", "n2_p24", "n2_p42", "n2_p28", "n2_p44", "n2_p82", "n2_p48"]


@pytest.mark.parametrize("channels", [4, 32])
def test_batch_norm_via_nchw_matches_plain_batch_norm(channels):
    """The channels-last shortcut of rfseg's BatchNorm2d computes what nn.BatchNorm2d computes: same output, input
    and parameter gradients and running statistics, output still channels-last, same state-dict keys."""
    torch.manual_seed(0)
    x = torch.randn(4, channels, 16, 16).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(4, channels, 16, 16).contiguous(memory_format=torch.channels_last)
    ours, plain = BatchNorm2d(channels), nn.BatchNorm2d(channels)
    with torch.no_grad():
        for bn in (ours, plain):
            bn.weight.copy_(torch.linspace(0.5, 2, channels))
            bn.bias.copy_(torch.linspace(-1, 1, channels))
    results = []
    for bn in (ours, plain):
        xi = x.clone().requires_grad_()
        y = bn(xi)
        y.backward(grad)
        results.append((y, xi.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert results[0][0].is_contiguous(memory_format=torch.channels_last)
    assert results[0][1].is_contiguous(memory_format=torch.channels_last)
    assert ours.state_dict().keys() == plain.state_dict().keys()


def test_dilated_convolutions_run_in_float32_under_cpu_autocast():
    """oneDNN's bf16 channels-last dilated convolution returned NaN gradients for 24 input channels on one CPU;
    rfseg's Conv2d runs dilated layers in float32 there, and plain ones in bfloat16."""
    from rfseg.blocks.models import Conv2d

    dilated, plain = Conv2d(24, 8, 3, padding=2, dilation=2), Conv2d(24, 8, 3, padding=1)
    x = torch.randn(2, 24, 32, 32).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, z = dilated(x), plain(x)
    assert y.dtype == torch.float32 and z.dtype == torch.bfloat16
    (y.square().mean() + z.float().square().mean()).backward()
    assert torch.isfinite(dilated.weight.grad).all() and torch.isfinite(x.grad).all()


def _bf16_training_step(arch: str):
    """Output, loss and parameter gradients of one bfloat16 autocast step of a channels-last model on the CPU."""
    model = build_model(ArchSpec.from_name(arch), seed=3).to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 64, 64, generator=gen).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(2, 64, 64, generator=gen) > 0.7).long()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.float(), y)
    loss.backward()
    return [logits.detach(), loss.detach()] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("arch", ["n2_p44", "n2_p22_d124"])
def test_bfloat16_layout_fixes_change_layouts_not_values(arch, monkeypatch):
    """rfseg views the one-channel input channels-last and turns the skip connections' gradients channels-last in
    bfloat16 CPU training (both to avoid slow mixed-layout kernels); the step must compute the same numbers as
    without them, and no bfloat16 add may mix layouts any more (float32 ones, such as the dilated layers', may)."""
    import rfseg.blocks.models as models
    from torch.utils._python_dispatch import TorchDispatchMode

    class MixedAdds(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.found = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.add, torch.ops.aten.add_):
                tensors = [a for a in args
                           if isinstance(a, torch.Tensor) and a.ndim == 4 and a.dtype == torch.bfloat16]
                if len(tensors) == 2 and tensors[0].stride() != tensors[1].stride():
                    self.found.append((func, [(t.shape, t.dtype, t.stride()) for t in tensors]))
            return func(*args, **(kwargs or {}))

    with MixedAdds() as mixed:
        fixed = _bf16_training_step(arch)
    assert mixed.found == []
    monkeypatch.setattr(models, "one_channel_as_channels_last", lambda x, like: x)
    monkeypatch.setattr(models, "gradient_like", lambda t: t)
    with MixedAdds() as mixed:
        plain = _bf16_training_step(arch)
    assert mixed.found, "without the fixes the step mixes layouts (else this test checks nothing)"
    for a, b in zip(fixed, plain):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_layout_fixes_apply_to_bfloat16_on_a_cpu_only():
    """The input view applies under bfloat16 CPU autocast (training and inference) to a one-channel input of a
    channels-last model; the gradient relayout only to a channels-last bfloat16 tensor that needs a gradient."""
    from rfseg.blocks.models import gradient_like, one_channel_as_channels_last

    weight = torch.randn(4, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 8, 8)
    assert one_channel_as_channels_last(x, weight) is x  # no autocast: float32
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():  # as in inference
        viewed = one_channel_as_channels_last(x, weight)
        assert viewed.stride() == (64, 1, 8, 1) and torch.equal(viewed, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert one_channel_as_channels_last(x, weight).stride() == (64, 1, 8, 1)
        assert one_channel_as_channels_last(x, weight.contiguous()) is x  # an NCHW model
        assert one_channel_as_channels_last(torch.randn(2, 3, 8, 8), weight).stride() == (192, 64, 8, 1)
    skip = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert gradient_like(skip) is skip  # float32
    skip16 = skip.detach().bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.no_grad():
        assert gradient_like(skip16) is skip16
    out = gradient_like(skip16)
    assert out is not skip16 and out.grad_fn is not None and torch.equal(out, skip16)


@pytest.mark.parametrize("arch", ["n2_p44", "n2_p22_d124"])
def test_folded_batch_norm_computes_the_same_network_without_batch_norm(arch):
    from rfseg.blocks.models import Conv2d, fold_batch_norm

    model = build_model(ArchSpec.from_name(arch), seed=3)
    gen = torch.Generator().manual_seed(1)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # statistics as after training
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
        bn.weight.data.copy_(torch.randn(bn.num_features, generator=gen))
    model.train()
    folded = fold_batch_norm(model)
    assert model.training and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is kept
    assert not folded.training and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(type(b.conv1) is Conv2d for b in folded.encoders)  # dilated layers keep their float32 path
    x = torch.randn(2, 1, 64, 64, generator=gen)
    with torch.no_grad():
        reference, out = model.eval()(x), folded(x)
    assert torch.allclose(out, reference, atol=1e-4, rtol=1e-4)
    assert not torch.equal(out, fold_batch_norm(build_model(ArchSpec.from_name(arch), seed=4))(x))
