import numpy as np
import pytest
import torch

from conftest import disks
from rfseg.blocks.bundle import load_bundle
from rfseg.blocks import inference
from rfseg.blocks.inference import (class_probability, context_px, fitted_tiles, gaussian_weight, compiled,
                                    predict_patches, sliding_window_probability, tile_plan, tile_starts)
from rfseg.blocks.models import ArchSpec, ResidualUNet, init_weights
from rfseg.blocks.runtime import inference_precision
from rfseg.errors import UserError


def test_tile_geometry():
    assert tile_starts(100, 64, 32) == [0, 32, 36]
    assert tile_starts(64, 64, 32) == [0]
    w = gaussian_weight(64)
    assert w.max() == 1 and w.min() > 0 and w[32, 32] > w[0, 0]


@pytest.mark.parametrize("length,max_tile,context,k", [(1024, 1024, 64, 16), (1040, 1024, 64, 16),
                                                       (4096, 1024, 128, 32), (3000, 512, 24, 4), (640, 256, 112, 16),
                                                       (2048, 1024, 0, 4)])
def test_fitted_tiles_cover_the_axis_with_every_cut_a_full_context_inside_both_tiles(length, max_tile, context, k):
    tile, starts, cuts = fitted_tiles(length, max_tile, context, k)
    assert tile % k == 0 and starts[0] == 0 and starts[-1] + tile == length and all(s % k == 0 for s in starts)
    assert tile <= max(max_tile, 2 * context + 2 * k) and cuts[0] == 0 and cuts[-1] == length
    for i, cut in enumerate(cuts[1:-1]):
        assert cut - starts[i + 1] >= context and starts[i] + tile - cut >= context
    # as few tiles as the overlap allows: one fewer could not keep the context at every cut
    n = len(starts)
    assert n == 1 or (n - 1) * tile - (n - 2) * 2 * context < length or tile > max_tile - k


@pytest.mark.parametrize("arch", ["n2_p22", "n2_p22_d124", "n2_p44", "n2_p84", "n4_p2222"])
def test_auto_tiles_equal_inference_on_the_whole_image(arch, monkeypatch):
    spec = ArchSpec.from_name(arch)
    model = ResidualUNet(spec).eval()
    init_weights(model, seed=3)
    # small tiles, so that a small image needs several in each direction (and tiles of unequal padding)
    k = spec.downsampling
    max_tile = 2 * context_px(spec) + 4 * k
    monkeypatch.setattr(inference, "AUTO_TILE_PX", max_tile)
    h, w = max_tile * 3 // 2 + 5, max_tile * 2 + 13
    image = np.random.default_rng(0).normal(size=(h, w)).astype(np.float32)
    plan = tile_plan(image.shape, "auto", 0.5, spec)
    assert len(plan.starts) >= 6
    padded = np.pad(image, ((0, -h % k), (0, -w % k)), mode="reflect")
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(padded)[None, None]), 1)[0, 1, :h, :w].numpy()
    tiled = sliding_window_probability(model, image, precision="fp32")
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    # Gaussian-blended tiles of the same size do not: their edges lack context
    blended = sliding_window_probability(model, image, tile=plan.tile[0], overlap=0.5, precision="fp32")
    assert np.abs(blended - whole).max() > 1e-3


def test_single_tile_equals_whole_image_inference(toy_models):
    model, _ = load_bundle(toy_models[0])
    image, _ = disks(96)
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(image)[None, None]), 1)[0, 1].numpy()
    tiled = sliding_window_probability(model, image, tile=96)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_overlapping_tiles_leave_no_seams(toy_models):
    model, _ = load_bundle(toy_models[0])
    image, truth = disks(256)
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(image)[None, None]), 1)[0, 1].numpy()
    tiled = sliding_window_probability(model, image, tile=64, overlap=0.5)
    # agreement with a whole-image pass, also on the tile borders (every 32 px) where seams would show
    borders = np.zeros_like(truth)
    borders[::32, :] = borders[:, ::32] = True
    assert np.abs(tiled - whole).mean() < 0.02
    assert np.abs(tiled - whole)[borders].mean() < 0.03
    pred = tiled > 0.5
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.8


def test_auto_precision_is_bf16_on_cpu_and_fp32_on_gpu():
    assert inference_precision("auto", torch.device("cuda")) == "fp32"
    assert inference_precision("auto", torch.device("cpu")) == "auto"
    assert inference_precision("bf16", torch.device("cuda")) == "bf16"
    assert inference_precision("fp32", torch.device("cpu")) == "fp32"



def test_auto_precision_really_runs_in_bf16_where_the_cpu_supports_it(toy_models):
    from rfseg.blocks.runtime import autocast_dtype, autocast_factory, cpu_supports_bf16

    cpu = torch.device("cpu")
    dtype = autocast_dtype("auto", cpu)
    assert dtype == (torch.bfloat16 if cpu_supports_bf16() else None)
    assert autocast_dtype("fp32", cpu) is None
    model, _ = load_bundle(toy_models[0])
    x = torch.from_numpy(disks(64)[0])[None, None]
    with torch.no_grad(), autocast_factory(cpu, dtype)():
        out = model(x)
    with torch.no_grad():
        ref = model(x)
    assert ref.dtype == torch.float32
    if dtype is None:
        assert torch.equal(out, ref)
    else:  # the convolutions ran in bfloat16: same answer to bf16's precision, not bit for bit
        assert out.dtype == torch.bfloat16 and not torch.equal(out.float(), ref)
        assert torch.allclose(out.float(), ref, atol=0.1 * ref.abs().max().item())


@pytest.mark.slow
def test_compiled_model_predicts_like_the_plain_one(toy_models):
    model, _ = load_bundle(toy_models[0])
    image, _ = disks(256)
    plain = sliding_window_probability(model, image, tile=128, overlap=0.25)
    torch._dynamo.reset()
    # 9 tiles in batches of 8: the short last batch is filled up, so the network compiles for one shape only
    fast = sliding_window_probability(compiled(model), image, tile=128, overlap=0.25, batch_size=8)
    np.testing.assert_allclose(fast, plain, atol=1e-4)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("classes", [2, 3])
def test_class_probability_is_the_softmax(classes):
    logits = torch.randn(2, classes, 8, 8) * 5
    for k in range(classes):
        torch.testing.assert_close(class_probability(logits, k), torch.softmax(logits, 1)[:, k])


@pytest.mark.parametrize("options,needle", [(dict(tile=0), "tile size 0 px"), (dict(tile=62), "multiple of 4"),
                                            (dict(tile="big"), "nor 'auto'"),
                                            (dict(tile=64, overlap=0.95), "overlap"),
                                            (dict(tile=64, batch_size=0), "batch size")])
def test_bad_tiling_options_are_clear_errors(toy_models, options, needle):
    model, _ = load_bundle(toy_models[0])
    with pytest.raises(UserError, match=needle):
        sliding_window_probability(model, disks(64)[0], **options)


def test_test_time_augmentation_is_the_mean_over_the_eight_transforms(toy_models):
    model, _ = load_bundle(toy_models[0])
    patches = disks(64)[0][None].repeat(2, 0)
    plain, tta = predict_patches(model, patches), predict_patches(model, patches, tta=True)
    flipped = predict_patches(model, patches[:, :, ::-1].copy())[:, :, ::-1]
    rotated = np.rot90(predict_patches(model, np.rot90(patches, 1, (1, 2)).copy()), -1, (1, 2))
    assert not np.allclose(plain, flipped)  # the network is not invariant, so averaging changes something
    assert np.abs(tta - plain).max() > 1e-4 and np.abs(tta - (plain + flipped + rotated) / 3).mean() < \
        np.abs(tta - plain).mean()


class _Marked(torch.nn.Module):
    """Stands in for a compiled model in tests of when the predictor compiles: same answers, no compilation."""

    def __init__(self, model):
        super().__init__()
        self.model, self.spec = model, model.spec

    def forward(self, x):
        return self.model(x)


def test_predictor_compiles_automatically_once_the_job_is_large_enough(toy_models, monkeypatch):
    from rfseg.blocks import predictor as predictor_module

    monkeypatch.setattr(predictor_module, "compiled", _Marked)
    # a 256 px micrograph is 25 tiles of 64 px at overlap 0.25: 0.1024 Mpx of tiles per model
    monkeypatch.setattr(predictor_module, "COMPILE_AFTER_MPX", 0.15)
    image = disks(256)[0]
    auto = predictor_module.Predictor(toy_models, device="cpu", tile=64, overlap=0.25)
    first = auto.micrograph(image, (0.25, 0.25))[0]
    assert not auto.compiled and auto.tile_mpx == pytest.approx(0.1024)
    second = auto.micrograph(image, (0.25, 0.25))[0]
    assert auto.compiled and all(isinstance(m, _Marked) for m in auto.models)
    np.testing.assert_array_equal(first, second)
    off = predictor_module.Predictor(toy_models, device="cpu", compile=False)
    for _ in range(3):
        off.micrograph(image, (0.25, 0.25))
    assert not off.compiled
    assert predictor_module.Predictor(toy_models, device="cpu", compile="on").compiled
    # a job known to be 2 micrographs (0.2048 Mpx) compiles at its first; one known to be 1 micrograph never does
    known = predictor_module.Predictor(toy_models, device="cpu", tile=64, overlap=0.25, job_micrographs=2)
    np.testing.assert_array_equal(known.micrograph(image, (0.25, 0.25))[0], first)
    assert known.compiled
    single = predictor_module.Predictor(toy_models, device="cpu", tile=64, overlap=0.25, job_micrographs=1)
    single.micrograph(image, (0.25, 0.25))
    assert not single.compiled
    with pytest.raises(UserError, match="--compile"):
        predictor_module.Predictor(toy_models, device="cpu", compile="sometimes")
