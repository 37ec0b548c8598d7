"""Published networks: safe import (the pickle never runs), both of the lab's layouts, shipped bundles, and their use
by predict and evaluate."""

import json
import sys
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from rfseg.blocks.bundle import load_bundle
from rfseg.blocks.models import ArchSpec, build_model
from rfseg.blocks.published import convert
from rfseg.errors import UserError
from rfseg.stages.importer import PRETRAINED, SHIPPED, import_network, import_shipped, shipped_models
from support import SHARED, THREADS, Foreign, ReceptiveFieldUNet, one_line_error, save_as_main

LAB = SHARED / "models" / "hrtem-generalization"


@pytest.fixture(scope="module")
def lab():
    if not LAB.is_dir():
        pytest.skip(f"the lab's published networks are not present: {LAB}")
    return LAB


def test_all_published_networks_reproduce_the_reference_outputs(lab):
    ref = np.load(lab / "reference_outputs.npz")
    x = torch.from_numpy(ref["input"])
    files = sorted(lab.glob("*.h5"))
    assert len(files) == 14
    for f in files:
        spec, state, layout = convert(f)
        model = build_model(spec)
        model.load_state_dict(state)
        with torch.no_grad():
            out = model.eval()(x).numpy()
        assert spec.name == "n4_p2222" and layout == "hrtem-generalization"
        assert np.abs(out - ref[f.name]).max() <= 1e-5 * np.abs(ref[f.name]).max(), f.name


def test_import_writes_a_bundle_with_recipe_and_provenance(lab, tmp_path, cli):
    f = lab / SHIPPED["au-10nm-425e"][0]
    cli("import", f, "--details", lab / "model_details.csv", "--name", "au-10nm-425e", "--out", tmp_path / "b",
        check_rc=0)
    meta = json.loads((tmp_path / "b/model.json").read_text())
    assert (meta["name"], meta["pixel_size_nm"], meta["rf_px"], meta["source"]) == ("n4_p2222", 0.02, 200,
                                                                                    "published")
    assert meta["preprocess"] == {"xray_threshold": 1500, "xray_passes": 2, "flat_field": "bezier",
                                  "flat_field_sigma_nm": None, "target_pixel_size_nm": None}
    p = meta["provenance"]
    assert (p["license"], p["material"], p["diameter_nm"], p["dose_e_per_A2"], p["fold"]) == ("MIT", "Au", 10.0,
                                                                                              425.0, 0)
    assert p["repository"] == "ScottLabUCB/HRTEM-Generalization" and len(p["sha256"]) == 64
    model, _ = load_bundle(tmp_path / "b")
    ref = np.load(lab / "reference_outputs.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(ref["input"])).numpy()
    np.testing.assert_allclose(out, ref[f.name], atol=1e-5 * np.abs(ref[f.name]).max())


def test_shipped_bundles_are_what_the_import_makes(lab, tmp_path):
    import_shipped(lab, tmp_path)
    for name, files in SHIPPED.items():
        for k in range(len(files)):
            a, b = PRETRAINED / name / f"fold{k}", tmp_path / name / f"fold{k}"
            wa, wb = (torch.load(d / "model.pt", weights_only=True) for d in (a, b))
            assert wa.keys() == wb.keys() and all(torch.equal(wa[t], wb[t]) for t in wa), (name, k)
            ma, mb = (json.loads((d / "model.json").read_text()) for d in (a, b))
            for key in ("arch", "pixel_size_nm", "preprocess", "provenance", "weights_sha256"):
                assert ma[key] == mb[key], (name, key)
    assert (PRETRAINED / "LICENSE").read_text() == (lab / "LICENSE").read_text()


def test_shipped_bundles_load_without_the_lab_files():
    table = shipped_models()
    assert set(table["name"]) == set(SHIPPED)
    assert table.set_index("name").loc["au-5nm-423e", "members"] == 5
    for name in SHIPPED:
        for member in sorted((PRETRAINED / name).glob("fold*")):
            model, meta = load_bundle(member)
            assert meta["provenance"]["license"] == "MIT" and meta["pixel_size_nm"] == 0.02


def test_models_command_lists_the_shipped_bundles(cli):
    out = cli("models", check_rc=0).stdout
    assert "au-5nm-423e" in out and "ScottLabUCB/HRTEM-Generalization (MIT)" in out


@pytest.mark.parametrize("pools,dilations", [((4, 4), (1, 1, 1)), ((2, 2), (1, 2, 4))])
def test_receptive_field_layout_imports_and_computes_the_same(tmp_path, pools, dilations):
    torch.manual_seed(0)
    net = ReceptiveFieldUNet(pools, dilations).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    save_as_main(net, tmp_path / "net.pt")
    meta = import_network(tmp_path / "net.pt", tmp_path / "b", pixel_size_nm=0.02152, repository="test",
                          license="none (written by this test)")
    expected = ArchSpec(2, pools, dilations).name
    assert meta["name"] == expected and meta["provenance"]["layout"] == "receptive-field"
    model, _ = load_bundle(tmp_path / "b")
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=1e-5, atol=1e-5)


def test_a_legacy_format_network_imports_and_computes_the_same(tmp_path, cli):
    """The receptive-field paper's final networks are PyTorch's pre-1.6 (non-zip) serialisation of whole modules."""
    torch.manual_seed(1)
    net = ReceptiveFieldUNet((4, 2)).eval()
    save_as_main(net, tmp_path / "net.h5", legacy=True)
    assert not zipfile.is_zipfile(tmp_path / "net.h5")
    cli("import", tmp_path / "net.h5", "--pixel-size", 0.02152, "--out", tmp_path / "b", check_rc=0)
    model, meta = load_bundle(tmp_path / "b")
    assert meta["name"] == "n2_p42" and meta["provenance"]["layout"] == "receptive-field"
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=1e-5, atol=1e-5)


def test_a_crafted_legacy_pickle_is_refused_and_runs_nothing(tmp_path, cli):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    torch.save({"model": Payload()}, tmp_path / "evil.h5", _use_new_zipfile_serialization=False)
    one_line_error(cli("import", tmp_path / "evil.h5", "--pixel-size", 0.02, "--out", tmp_path / "b"),
                   "evil.h5: refused without running it")
    assert not marker.exists() and not (tmp_path / "b").exists()


def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path, cli):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    proc = cli("import", tmp_path / "evil.pt", "--pixel-size", 0.02, "--out", tmp_path / "b")
    one_line_error(proc, "evil.pt: refused without running it")
    assert not marker.exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_text("not a checkpoint"), "not a PyTorch checkpoint"),
    (lambda p: p.write_bytes((LAB / SHIPPED["au-10nm-425e"][0]).read_bytes()[:100_000]), "is the file complete"),
    (lambda p: torch.save({"w": torch.zeros(2)}, p), "not a pickled UNet"),
    (lambda p: save_as_main(Foreign(), p, "UNet"), "refused without running it"),
], ids=["text", "truncated", "state-dict", "foreign-layer"])
def test_bad_checkpoints_are_one_line_errors(tmp_path, cli, make, needle):
    if "complete" in needle and not LAB.is_dir():
        pytest.skip("needs one of the lab's files to truncate")
    make(tmp_path / "x.pt")
    proc = cli("import", tmp_path / "x.pt", "--pixel-size", 0.02, "--out", tmp_path / "b")
    one_line_error(proc, needle)
    assert not (tmp_path / "b").exists()


def test_a_network_outside_the_family_is_refused_with_what_did_not_fit(tmp_path):
    net = ReceptiveFieldUNet()
    net.final_conv = nn.Conv2d(4, 3, 1)
    save_as_main(net, tmp_path / "net.pt")
    with pytest.raises(UserError, match="the head maps 4 to 3 channels"):
        import_network(tmp_path / "net.pt", tmp_path / "b", pixel_size_nm=0.02)
    net = ReceptiveFieldUNet()
    net.pool2 = nn.MaxPool2d(3, 3)
    save_as_main(net, tmp_path / "net.pt")
    with pytest.raises(UserError, match="pool 2 has kernel 3"):
        import_network(tmp_path / "net.pt", tmp_path / "b", pixel_size_nm=0.02)
    assert not (tmp_path / "b").exists()
    assert zipfile.is_zipfile(tmp_path / "net.pt")


@pytest.fixture(scope="module")
def simulated_hrtem(tmp_path_factory):
    """Three simulated HRTEM micrographs at the published networks' own 0.02 nm/px, preprocessed and cut into
    patches (every micrograph in some split)."""
    from rfseg.stages.patches import make_patches
    from rfseg.stages.preprocess import preprocess
    from rfseg.stages.simulate import simulate

    root = tmp_path_factory.mktemp("hrtem")
    simulate("hrtem", root / "raw", n_images=3, seed=5, size=512, pixel_size_nm=0.02, diameter_nm=(3.5, 5.0),
             dose_e_per_A2=(2000, 3000), threads=THREADS)
    preprocess(root / "pre", manifest=root / "raw/manifest.csv")
    make_patches(root / "pre", root / "patches", patch_size_px=256, min_particle_px=200, dataset="sim")
    return root


@pytest.mark.slow
def test_predict_with_the_shipped_ensemble_needs_no_training(simulated_hrtem, tmp_path, cli):
    import pandas as pd
    import tifffile

    from rfseg.blocks import io

    raw = simulated_hrtem / "raw"
    cli("predict", *sorted((PRETRAINED / "au-5nm-423e").glob("fold*")), raw / "images/*.tif", "--out",
        tmp_path / "seg", check_rc=0)
    summary = pd.read_csv(tmp_path / "seg/summary.csv")
    assert (summary["models"] == 5).all() and summary["median_diameter_nm"].notna().all()
    for name in ("hrtem_000", "hrtem_001", "hrtem_002"):
        mask = tifffile.imread(tmp_path / f"seg/{name}_mask.tif") > 0
        truth = io.read_mask(raw / f"masks/{name}.tif")
        assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.7, name
        assert tifffile.imread(tmp_path / f"seg/{name}_uncertainty.tif").max() > 0
    # a micrograph without a pixel size: the networks need one, and the message says which option gives it
    img = io.read_image(raw / "images/hrtem_000.tif")
    tifffile.imwrite(tmp_path / "bare.tif", img.data)
    proc = cli("predict", PRETRAINED / "au-5nm-423e/fold0", tmp_path / "bare.tif", "--out", tmp_path / "x")
    one_line_error(proc, "--pixel-size")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_published_networks_are_scored_on_the_same_test_patches(simulated_hrtem, tmp_path):
    import tifffile

    from rfseg.blocks import artifacts, io
    from rfseg.blocks.predictor import Predictor
    from rfseg.stages.evaluate import evaluate

    root = simulated_hrtem
    member = PRETRAINED / "au-5nm-423e/fold1"
    with pytest.raises(UserError, match="--preprocessed"):
        evaluate(member, root / "patches", tmp_path / "e", "sim")
    row = evaluate(member, root / "patches", tmp_path / "e", "sim", preprocessed=root / "pre")
    assert (row["method"], row["arch"], row["seed"], row["member"]) == ("published", "au-5nm-423e", 1662, "fold1")
    assert row["rf_nm"] == pytest.approx(4.0) and row["hard_dice"] > 0.6
    # the patch probabilities are the whole-micrograph prediction, cut where the test patches were cut
    index = artifacts.read_patch_index(root / "patches")
    first = index[index["split"] == "test"].iloc[0]
    img = io.read_image(first["source_image"])
    prob, _, _ = Predictor([member], device="cpu").micrograph(img.data, img.pixel_size_yx_nm)
    patches = tifffile.imread(tmp_path / "e/probabilities.tif")
    patches = patches[None] if patches.ndim == 2 else patches
    r, c = first["row_px"], first["col_px"]
    np.testing.assert_array_equal(patches[first["index_in_split"]], prob[r:r + 256, c:c + 256])
    # as windows of larger micrographs (published_flat_field "none"): the same prediction without the bundle's flat
    # field, on the same patches; anything else is refused by name
    row = evaluate(member, root / "patches", tmp_path / "w", "sim", preprocessed=root / "pre",
                   published_flat_field="none")
    assert Predictor([member], device="cpu").recipe.flat_field == "bezier"
    window = Predictor([member], device="cpu", flat_field="none")
    assert window.recipe.flat_field == "none"
    prob, _, _ = window.micrograph(img.data, img.pixel_size_yx_nm)
    windows = tifffile.imread(tmp_path / "w/probabilities.tif")
    windows = windows[None] if windows.ndim == 2 else windows
    np.testing.assert_array_equal(windows[first["index_in_split"]], prob[r:r + 256, c:c + 256])
    assert not np.array_equal(windows, patches)
    with pytest.raises(UserError, match="published_flat_field"):
        evaluate(member, root / "patches", tmp_path / "x", "sim", preprocessed=root / "pre",
                 published_flat_field="gaussian")
    assert not (tmp_path / "x").exists()
