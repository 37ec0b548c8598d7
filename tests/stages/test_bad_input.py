"""Bad input the way a user makes it: one line naming the file or option and the fix, exit 2, no partial output."""

import numpy as np
import pytest
import tifffile

from rfseg.blocks import io
from support import make_patch_dir, one_line_error


@pytest.fixture
def trained(toy_models):
    """A trained bundle (the first of the shared toy models)."""
    return toy_models[0]


def test_train_on_a_missing_or_preprocessed_folder(cli, tmp_path):
    one_line_error(cli("train", "--patches", tmp_path / "nope", "--arch", "n2_p22", "--seed", 1, "--out",
                       tmp_path / "m"), "patch folder not found")
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "manifest.csv").write_text("image,mask\n")
    one_line_error(cli("train", "--patches", pre, "--arch", "n2_p22", "--seed", 1, "--out", tmp_path / "m"),
                   "it is a preprocessed dataset: run 'rfseg patches' on it")


@pytest.mark.parametrize("damage,needle", [
    (lambda d: (d / "train_images.npy").unlink(), "train_images.npy: patch array not found"),
    (lambda d: (d / "train_images.npy").write_bytes((d / "train_images.npy").read_bytes()[:300]),
     "train_images.npy: cannot read the patch array"),
    (lambda d: (d / "summary.json").write_text('{"dataset": '), "summary.json: the patch summary is not valid JSON"),
], ids=["missing-npy", "truncated-npy", "truncated-summary"])
def test_train_on_a_damaged_patch_folder(cli, tmp_path, damage, needle):
    patches = make_patch_dir(tmp_path / "p", n=(4, 2, 2), size=48)
    damage(patches)
    one_line_error(cli("train", "--patches", patches, "--arch", "n2_p22", "--seed", 1, "--epochs", 1, "--out",
                       tmp_path / "m"), needle)
    assert not (tmp_path / "m" / "model.pt").exists()


def test_predict_options_and_outputs(cli, tmp_path, trained):
    image = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    io.write_tiff(tmp_path / "a.tif", image, 0.25)
    (tmp_path / "taken").write_text("a file")
    one_line_error(cli("predict", trained, tmp_path / "a.tif", "--out", tmp_path / "taken"),
                   "the output folder is an existing file")
    one_line_error(cli("predict", trained, tmp_path / "a.tif", "--batch-size", 0, "--out", tmp_path / "o"),
                   "batch size (--batch-size) must be at least 1")
    one_line_error(cli("predict", trained, tmp_path / "a.tif", "--tile", 0, "--out", tmp_path / "o"),
                   "tile size 0 px (--tile)")
    one_line_error(cli("predict", trained, tmp_path / "a.tif", "--tile", "big", "--out", tmp_path / "o"),
                   "expected 'auto' or a tile size in px")
    (tmp_path / "b").mkdir()
    io.write_tiff(tmp_path / "b" / "a.tif", image, 0.25)
    one_line_error(cli("predict", trained, tmp_path / "a.tif", tmp_path / "b/a.tif", "--out", tmp_path / "o"),
                   "another input has the same name 'a'")
    assert not (tmp_path / "o").exists()


def test_predict_with_a_truncated_model_json(cli, tmp_path, trained):
    import shutil

    shutil.copytree(trained, tmp_path / "m")
    text = (tmp_path / "m/model.json").read_text()
    (tmp_path / "m/model.json").write_text(text[: len(text) // 2])
    io.write_tiff(tmp_path / "a.tif", np.zeros((64, 64), np.float32), 0.25)
    one_line_error(cli("predict", tmp_path / "m", tmp_path / "a.tif", "--out", tmp_path / "o"),
                   "model.json: the model description is not valid JSON")


def test_a_failing_micrograph_leaves_nothing_in_out(cli, tmp_path, trained):
    io.write_tiff(tmp_path / "a.tif", np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), 0.25)
    io.write_tiff(tmp_path / "b.tif", np.ones((64, 64), np.float32), 0.25)  # constant: cannot be standardised
    proc = cli("predict", trained, tmp_path / "a.tif", tmp_path / "b.tif", "--out", tmp_path / "o")
    one_line_error(proc, "the image is constant")
    assert not (tmp_path / "o").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]
    cli("predict", trained, tmp_path / "a.tif", tmp_path / "b.tif", "--skip-bad", "--out", tmp_path / "o",
        check_rc=0)
    assert (tmp_path / "o/a_mask.tif").exists()
    cli("predict", trained, tmp_path / "a.tif", "--out", tmp_path / "o", check_rc=0)  # a rerun replaces its own
    assert not (tmp_path / "o/b_mask.tif").exists() and (tmp_path / "o/a_mask.tif").exists()


def test_predict_without_a_pixel_size_on_an_uncalibrated_model(cli, tmp_path):
    from rfseg.stages.train import TrainConfig, train

    patches = make_patch_dir(tmp_path / "p", n=(6, 2, 2), size=48, pixel_size_nm=None)
    train(patches, tmp_path / "m", "n2_p22", 1, TrainConfig(epochs=1, batch_size=4, precision="fp32"))
    tifffile.imwrite(tmp_path / "bare.tif", np.random.default_rng(1).normal(size=(96, 96)).astype(np.float32))
    cli("predict", tmp_path / "m", tmp_path / "bare.tif", "--out", tmp_path / "o", check_rc=0)
    import pandas as pd

    summary = pd.read_csv(tmp_path / "o/summary.csv")
    assert summary["pixel_size_nm"].isna().all() and summary["median_diameter_nm"].isna().all()
    one_line_error(cli("predict", tmp_path / "m", tmp_path / "bare.tif", "--min-area-nm2", 2, "--out",
                       tmp_path / "o2"), "use --min-area-px")


def test_a_text_file_named_dm3_is_refused(tmp_path):
    from rfseg.errors import UserError

    (tmp_path / "x.dm3").write_text("this is not a micrograph")
    with pytest.raises(UserError, match="x.dm3: cannot read the file") as e:
        io.read_image(tmp_path / "x.dm3")
    assert "\n" not in str(e.value)


def test_a_tiff_truncated_mid_strip_is_refused(tmp_path):
    from rfseg.errors import UserError

    tifffile.imwrite(tmp_path / "whole.tif", np.random.default_rng(0).integers(0, 60000, (256, 256)).astype(np.uint16))
    data = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])  # header intact, pixel data cut in half
    with pytest.raises(UserError, match="cut.tif: cannot read the file") as e:
        io.read_image(tmp_path / "cut.tif")
    assert "\n" not in str(e.value)


def test_a_partly_nan_image_is_refused(tmp_path):
    from rfseg.errors import UserError

    a = np.ones((16, 16), np.float32)
    a[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "n.tif", a)
    with pytest.raises(UserError, match="NaN or infinite"):
        io.read_image(tmp_path / "n.tif")


def test_preprocess_inputs(cli, tmp_path):
    one_line_error(cli("preprocess", "--images", f"{tmp_path}/none/*.tif", "--masks", "m/{stem}.tif", "--out",
                       tmp_path / "o"), "matches no file")
    io.write_tiff(tmp_path / "a.tif", np.random.default_rng(0).normal(10, 1, (32, 32)).astype(np.float32), 0.1)
    io.write_tiff(tmp_path / "a_mask.tif", np.zeros((32, 32), np.uint8), 0.1)
    one_line_error(cli("preprocess", "--images", f"{tmp_path}/a.tif", "--masks", f"{tmp_path}/{{stem}}_mask.tif",
                       "--out", tmp_path / "o"), "every mask of the 1 micrographs is empty")
    one_line_error(cli("preprocess", "--images", f"{tmp_path}/a.tif", "--masks", f"{tmp_path}/none/{{stem}}.tif",
                       "--out", tmp_path / "o"), "none/a.tif")
    one_line_error(cli("preprocess", "--images", f"{tmp_path}/a.tif", "--masks", f"{tmp_path}/all_mask.tif",
                       "--out", tmp_path / "o"), "must contain {stem}")
    one_line_error(cli("preprocess", "--images", f"{tmp_path}/a.tif", "--masks", f"{tmp_path}/{{stem}}_mask.tif",
                       "--pixel-size", 0.001, "--target-pixel-size", 0.1, "--out", tmp_path / "o"),
                   "beyond the 4x up / 32x down")
    assert not (tmp_path / "o").exists()



def test_an_unknown_choice_names_the_setting_and_the_choices():
    from rfseg.blocks.augment import epoch_plan
    from rfseg.blocks.preprocess import Recipe
    from rfseg.blocks.runtime import pick_device
    from rfseg.errors import UserError
    from rfseg.stages.train import TrainConfig

    for make, message in ((lambda: TrainConfig(select="first"),
                           "select (--select) must be one of last, best, got 'first'"),
                          (lambda: Recipe(flat_field="median"), "flat_field must be one of"),
                          (lambda: epoch_plan(0, 0, 4, "all4"),
                           "training.augment (--augment) must be one of all8, random8, got 'all4'"),
                          (lambda: pick_device("tpu"), "device (--device) must be one of")):
        with pytest.raises(UserError) as err:
            make()
        assert message in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------ model.json and weights, checked
def _edited_bundle(src, dst, edit=None, weights=None):
    """A copy of the bundle ``src`` with its model.json edited (and its weights replaced, the hash updated)."""
    import json
    import shutil

    import torch

    from rfseg.blocks.bundle import sha256

    shutil.copytree(src, dst)
    meta = json.loads((dst / "model.json").read_text())
    if weights is not None:
        state = torch.load(dst / "model.pt", weights_only=True)
        torch.save({k: weights(v) for k, v in state.items()}, dst / "model.pt")
        meta["weights_sha256"] = sha256(dst / "model.pt")
    if edit:
        edit(meta)
    (dst / "model.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m.update(arch="n4_p2222"), "model.json: arch must be an object"),
    (lambda m: m.pop("pixel_size_nm"), "model.json: pixel_size_nm must be the training data's pixel size"),
    (lambda m: m.update(pixel_size_nm="0.25"), "model.json: pixel_size_nm must be a pixel size"),
    (lambda m: m.update(pixel_size_nm=-1), "model.json: pixel_size_nm must be a pixel size"),
    (lambda m: m["arch"].update(blocks=50), "model.json: arch: blocks must be between 2 and 5"),
    (lambda m: m["arch"].update(mode="weird"), "model.json: arch: mode must be one of"),
    (lambda m: m.update(preprocess={"flat_field": "magic"}), "model.json: preprocess: flat_field must be one of"),
    (lambda m: m.update(patch_size_px="64"), "model.json: patch_size_px must be a positive integer"),
], ids=["arch-name", "no-pixel-size", "pixel-size-text", "pixel-size-negative", "blocks", "mode", "flat-field",
        "patch-size"])
def test_a_damaged_model_json_is_one_line_naming_it(cli, tmp_path, trained, edit, needle):
    model = _edited_bundle(trained, tmp_path / "m", edit)
    io.write_tiff(tmp_path / "a.tif", np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), 0.25)
    one_line_error(cli("predict", model, tmp_path / "a.tif", "--out", tmp_path / "o"), needle)
    assert not (tmp_path / "o").exists()


def test_weights_that_are_not_finite_are_refused(cli, tmp_path, trained):
    import torch

    model = _edited_bundle(trained, tmp_path / "m", weights=lambda v: torch.full_like(v, float("nan"))
                           if v.is_floating_point() else v)
    io.write_tiff(tmp_path / "a.tif", np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), 0.25)
    one_line_error(cli("predict", model, tmp_path / "a.tif", "--out", tmp_path / "o"),
                   "the weights hold NaN or infinite values")
    assert not (tmp_path / "o").exists()


def test_the_same_model_twice_is_no_ensemble(cli, tmp_path, trained):
    import shutil

    io.write_tiff(tmp_path / "a.tif", np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), 0.25)
    for models in ([trained, trained], [trained, f"{trained}/"]):
        one_line_error(cli("predict", *models, tmp_path / "a.tif", "--out", tmp_path / "o"), "given twice")
    shutil.copytree(trained, tmp_path / "copy")
    one_line_error(cli("predict", trained, tmp_path / "copy", tmp_path / "a.tif", "--out", tmp_path / "o"),
                   "holds the same weights as")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------- options and pixel sizes
def test_fixes_name_options_of_the_command_that_printed_them(cli, tmp_path, trained):
    """An error met in a model's preprocessing names what a predict user can do, not preprocess's options."""
    from rfseg.stages.importer import PRETRAINED

    negative = np.random.default_rng(0).normal(-5, 1, (256, 256)).astype(np.float32)  # not raw intensities
    io.write_tiff(tmp_path / "neg.tif", negative, 0.02)
    one_line_error(cli("predict", PRETRAINED / "au-2.2nm-423e/fold0", tmp_path / "neg.tif", "--out", tmp_path / "o"),
                   "flat field needs positive intensities")
    io.write_tiff(tmp_path / "far.tif", negative, 0.0005)  # 500x finer than the model's 0.25 nm/px
    one_line_error(cli("predict", trained, tmp_path / "far.tif", "--out", tmp_path / "o"), "--pixel-size")
    one_line_error(cli("predict", trained, tmp_path / "far.tif", "--threads", 0, "--out", tmp_path / "o"),
                   "expected a whole number of at least 1")
    one_line_error(cli("predict", trained, tmp_path / "far.tif", "--min-area-px", -5, "--out", tmp_path / "o"),
                   "expected a number of at least 0")


def test_pixel_size_override_is_warned_and_recorded(cli, tmp_path, trained):
    import pandas as pd
    import tifffile

    image = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    tifffile.imwrite(tmp_path / "rect.tif", image, imagej=True, resolution=(1 / 0.25, 1 / 0.3),
                     metadata={"unit": "nm"})  # x 0.25, y 0.3 nm/px
    proc = cli("predict", trained, tmp_path / "rect.tif", "--pixel-size", 0.25, "--out", tmp_path / "o", check_rc=0)
    assert "the file says 0.3 x 0.25 nm/px, --pixel-size gives 0.25: using 0.25" in proc.stderr
    row = pd.read_csv(tmp_path / "o/summary.csv").iloc[0]
    assert (row["file_pixel_size_y_nm"], row["file_pixel_size_x_nm"], row["pixel_size_nm"]) == (0.3, 0.25, 0.25)


def test_a_one_pixel_high_image_names_its_shape(tmp_path):
    from rfseg.errors import UserError

    tifffile.imwrite(tmp_path / "line.tif", np.ones((1, 500), np.float32))
    with pytest.raises(UserError, match=r"line.tif: the image is 1 x 500 px, too small"):
        io.read_image(tmp_path / "line.tif")


# ------------------------------------------------------------------------------------------------------ batches
def test_every_bad_micrograph_is_named_before_any_is_segmented(cli, tmp_path, trained):
    import pandas as pd

    io.write_tiff(tmp_path / "good.tif", np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), 0.25)
    io.write_tiff(tmp_path / "flat.tif", np.ones((64, 64), np.float32), 0.25)
    (tmp_path / "text.dm3").write_text("not a micrograph")
    images = [tmp_path / "good.tif", tmp_path / "flat.tif", tmp_path / "text.dm3"]
    proc = cli("predict", trained, *images, "--out", tmp_path / "o")
    one_line_error(proc, "1 of 3 micrographs cannot be segmented")  # from the headers, before any is segmented
    assert "text.dm3: cannot read" in proc.stderr and "--skip-bad" in proc.stderr
    assert "done" not in proc.stdout and not (tmp_path / "o").exists()
    proc = cli("predict", trained, tmp_path / "good.tif", tmp_path / "flat.tif", "--out", tmp_path / "o")
    one_line_error(proc, "flat.tif: the image is constant")  # what only the pixels show, found when segmented
    assert not (tmp_path / "o").exists()
    proc = cli("predict", trained, *images, "--skip-bad", "--out", tmp_path / "o", check_rc=0)
    summary = pd.read_csv(tmp_path / "o/summary.csv").set_index("image")
    assert summary.loc[str(tmp_path / "good.tif"), "status"] == "ok"
    assert summary.loc[str(tmp_path / "flat.tif"), "status"].startswith("skipped:")
    assert (tmp_path / "o/good_mask.tif").exists() and not (tmp_path / "o/flat_mask.tif").exists()
    assert "skipped 2 micrograph(s)" in proc.stderr


def test_aggregate_counts_each_run_once(cli, tmp_path):
    import pandas as pd

    row = {"dataset": "d", "method": "unet", "arch": "n2_p22", "blocks": 2, "pools": "2,2", "dilations": "1,1,1",
           "mode": "max", "params": 8074, "rf_px": 44, "rf_nm": 1.0, "seed": 1, "hard_dice": 0.5}
    pd.DataFrame([row]).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame([row]).to_csv(tmp_path / "b.csv", index=False)
    one_line_error(cli("aggregate", tmp_path / "a.csv", tmp_path / "a.csv", "--out-rows", tmp_path / "r.csv",
                       "--out", tmp_path / "s.csv"), "given twice")
    one_line_error(cli("aggregate", tmp_path / "a.csv", tmp_path / "b.csv", "--out-rows", tmp_path / "r.csv",
                       "--out", tmp_path / "s.csv"), "seed 1 appears in 2 metrics files")
    assert not (tmp_path / "s.csv").exists()
