"""The plan (rfseg.plan): config interpretation, checks and flags, without Snakemake."""

import copy

import pytest
import yaml

from rfseg.errors import UserError
from rfseg.plan import Plan, flags
from support import ROOT


@pytest.fixture
def tiny():
    return yaml.safe_load((ROOT / "configs/test-tiny.yaml").read_text())


def _with(cfg, edit):
    cfg = copy.deepcopy(cfg)
    edit(cfg)
    return cfg


def _rename(cfg, new):
    cfg["datasets"][new] = cfg["datasets"].pop("tiny")
    cfg["predict"]["dataset"] = new


@pytest.mark.parametrize("name,edit,needle", [
    ("space in name", lambda c: _rename(c, "my data"), "name 'my data' is used in file names"),
    ("plus in name", lambda c: _rename(c, "a+b"), "name 'a+b' is used in file names"),
    ("fractions", lambda c: c["datasets"]["tiny"].update(split={"fractions": [0.7, 0.2, 0.2]}),
     "split.fractions [0.7, 0.2, 0.2] must sum to 1"),
    ("folds leave no training", lambda c: c["datasets"]["tiny"].update(split={"folds": 2}) or c["datasets"]["tiny"][
        "simulate"].update(n_images=3), "3 micrograph(s) in 2 folds (split.folds) leave fewer than two"),
    ("material", lambda c: c["datasets"]["tiny"]["fourier"].update(material="Unobtainium"),
     "datasets.tiny.fourier.material (--material) 'Unobtainium' is not in the table"),
    ("masks without stem", lambda c: c["datasets"].update(real={
        "images": str(ROOT / "resources/real-tem-seg/images/*.tif"), "masks": "masks/all.tif",
        "uncalibrated": True, "patches": {"size": 128, "min_particle_px": 10}, "architectures": ["n2_p22"]}),
     "datasets.real.masks: the pattern 'masks/all.tif' must contain {stem}"),
    ("simulated too small", lambda c: c["datasets"]["tiny"]["simulate"].update(size=100),
     "simulate.size (100 px) is smaller than datasets.tiny.patches.size (128 px)"),
    ("rf", lambda c: c["datasets"]["tiny"]["architectures"].append("n2_p88"),
     "n2_p88 has a receptive field of 392 px"),
    ("bad arch", lambda c: c["datasets"]["tiny"]["architectures"].append({"blocks": 2, "pools": [2, 3]}),
     "architectures[3]: pool size 3"),
    ("predict dataset", lambda c: c["predict"].update(dataset="nope"), "predict.dataset: 'nope' is not one"),
    ("predict arch", lambda c: c["predict"].update(arch="n2_p44"), "predict.arch: n2_p44 is not trained"),
    ("masks match nothing", lambda c: c["datasets"].update(real={
        "images": str(ROOT / "resources/real-tem-seg/images/*.tif"), "masks": "nowhere/{stem}_mask.tif",
        "uncalibrated": True, "patches": {"size": 128, "min_particle_px": 10}, "architectures": ["n2_p22"]}),
     "datasets.real.masks: nowhere/frame_000_mask.tif does not exist: fix the pattern"),
    ("missing images", lambda c: c["datasets"].update(real={
        "images": "nowhere/*.tif", "masks": "nowhere/{stem}.tif", "pixel_size_nm": 1.0,
        "patches": {"size": 128, "min_particle_px": 10}, "architectures": ["n2_p22"]}), "datasets.real.images"),
])
def test_config_mistakes_are_found_by_the_plan(tiny, name, edit, needle):
    with pytest.raises(UserError, match="^config ") as e:
        Plan(_with(tiny, edit))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_plan_of_the_tiny_config(tiny):
    plan = Plan(tiny)
    assert plan.architectures("tiny") == ["n2_p22", "n2_p24", "n2_p22_d112"]
    assert plan.model_dirs("tiny")[0] == "results/tiny/models/n2_p22/seed1"
    assert plan.example_archs("tiny") == ["n2_p22", "n2_p24"] and plan.edge_pair("tiny") == ["n2_p24", "n2_p22_d112"]
    assert "results/figures/tiny/pooling_vs_dilation.png" in plan.targets()
    assert plan.metrics_files()[-1] == "results/tiny/fourier/metrics.csv"
    assert plan.metrics_inputs()[-1] == "results/tiny/fourier"
    assert plan.train_flags("tiny") == ("--epochs 2 --batch-size 4 --lr 0.003 --augment random8 --precision fp32 "
                                        "--device cpu --select last")


def test_flags_are_quoted_and_ordered():
    assert flags([("--a", 1), ("--b", None), ("--c", True), ("--d", False), ("--e", [1, 2]),
                  ("--f", "my file")]) == "--a 1 --c --e 1,2 --f 'my file'"


def test_overlap_bound_of_the_schema_is_the_inference_bound():
    from rfseg.blocks.inference import MAX_OVERLAP

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["predict"]["properties"]["overlap"]["maximum"] == MAX_OVERLAP


@pytest.mark.parametrize("value,flag", [(None, ""), ("auto", "--compile auto"), (True, "--compile on"),
                                        (False, "--compile off")])
def test_predict_compile_setting_becomes_its_flag(tiny, value, flag):
    from rfseg.blocks.predictor import COMPILE

    cfg = _with(tiny, lambda c: c["predict"].update(compile=value) if value is not None else None)
    flags_ = Plan(cfg).predict_flags()
    assert (flag in flags_) if flag else "--compile" not in flags_
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    assert {"on" if v is True else "off" if v is False else v
            for v in schema["properties"]["predict"]["properties"]["compile"]["enum"]} == set(COMPILE)


@pytest.mark.parametrize("argv,expected", [([], None), (["--compile"], "on"), (["--compile", "off"], "off"),
                                           (["--compile", "auto"], "auto")])
def test_predict_compile_option_on_the_command_line(argv, expected):
    from rfseg.cli import build_parser

    full = ["predict", "model", "image.tif", "--out", "seg", *argv]
    args = build_parser(full).parse_args(full)
    assert getattr(args, "compile", None) == expected  # left out: the stage's default, auto


# ------------------------------------------------------------------- names, paths and duplicates (before any job)
REAL = str(ROOT / "resources/real-tem-seg/images/*.tif")
REAL_MASKS = str(ROOT / "resources/real-tem-seg/masks/{stem}.tif")


def _real(**extra):
    return {"images": REAL, "masks": REAL_MASKS, "uncalibrated": True, "patches": {"size": 128, "min_particle_px": 10},
            "architectures": ["n2_p22"], **extra}


@pytest.mark.parametrize("name,edit,needle", [
    ("dots", lambda c: _rename(c, ".."), "name '..' is used in file names"),
    ("dot", lambda c: _rename(c, "."), "name '.' is used in file names"),
    ("hidden", lambda c: _rename(c, ".tiny"), "name '.tiny' is used in file names"),
    ("slash", lambda c: _rename(c, "a/b"), "name 'a/b' is used in file names"),
    ("results empty", lambda c: c.update(results=""), "results folder is empty"),
    ("results root", lambda c: c.update(results="/"), "is the filesystem root"),
    ("predict name", lambda c: c["predict"].update(name=".."), "predict.name: the name '..'"),
    ("seeds twice", lambda c: c["training"].update(seeds=[1, 1]), "seed 1 is listed twice"),
    ("arch twice", lambda c: c["datasets"]["tiny"]["architectures"].append("n2_p22"), "n2_p22 is listed twice"),
    ("one micrograph", lambda c: c["datasets"]["tiny"]["simulate"].update(n_images=1),
     "simulate.n_images: 1 micrograph(s), but a split by micrograph into train, val and test needs at least 3"),
    ("folds beyond micrographs", lambda c: c["datasets"].update(real=_real(split={"folds": 9})),
     "9 folds need at least 9"),
    ("no pixel size", lambda c: c["datasets"].update(real={**_real(), "uncalibrated": False}), "has no pixel size"),
    ("implausible pixel size", lambda c: c["datasets"].update(real={**_real(uncalibrated=False), "pixel_size_nm": 1e-9}),
     "1e-09 nm/px is not a microscope's"),
    ("patches beyond images", lambda c: c["datasets"].update(real=_real(patches={"size": 1024, "min_particle_px": 1})),
     "smaller than the 1024 px patches"),
])
def test_config_mistakes_found_before_any_job(tiny, name, edit, needle):
    with pytest.raises(UserError, match="^config ") as e:
        Plan(_with(tiny, edit))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_mask_of_another_shape_is_found_from_the_headers(tiny, tmp_path):
    import numpy as np

    from rfseg.blocks import io

    for i, shape in enumerate([(64, 64), (64, 64), (64, 64), (64, 60)]):
        io.write_tiff(tmp_path / f"im{i}.tif", np.zeros((64, 64), np.float32), 0.1)
        io.write_tiff(tmp_path / f"im{i}_mask.tif", np.zeros(shape, np.uint8), 0.1)
    cfg = _with(tiny, lambda c: c["datasets"].update(mine={
        "images": str(tmp_path / "im?.tif"), "masks": str(tmp_path / "{stem}_mask.tif"),
        "patches": {"size": 48, "min_particle_px": 1}, "architectures": ["n2_p22"]}))
    with pytest.raises(UserError, match="im3_mask.tif is 64 x 60 px but its image .* is 64 x 64 px"):
        Plan(cfg)


def test_results_dot_writes_into_the_working_folder(tiny):
    plan = Plan(_with(tiny, lambda c: c.update(results=".")))
    assert plan.model_dirs("tiny")[0] == "tiny/models/n2_p22/seed1" and "summary.csv" in plan.targets()
    assert Plan(_with(tiny, lambda c: c.update(results="out/"))).targets()[0] == "out/architectures.csv"


@pytest.mark.parametrize("edit,needle", [
    (lambda c: c["training"].update(epoch=3), "config training: unknown key 'epoch' (allowed: augment,"),
    (lambda c: c["datasets"]["tiny"]["patches"].update(size="abc"),
     "config datasets.tiny.patches.size: the value 'abc' is not allowed ('abc' is not of type 'integer')"),
    (lambda c: c["datasets"]["tiny"].update(pixel_size_nm=1e-9), "config datasets.tiny.pixel_size_nm: the value 1e-09"),
    (lambda c: c["predict"].update(name=".."), "config predict.name: the value '..' is not allowed"),
])
def test_schema_errors_are_one_line_naming_the_key(tiny, edit, needle):
    from rfseg.plan import check_schema

    check_schema(tiny, ROOT / "workflow/schemas/config.schema.yaml")
    with pytest.raises(UserError) as e:
        check_schema(_with(tiny, edit), ROOT / "workflow/schemas/config.schema.yaml")
    assert str(e.value).startswith(needle) and "\n" not in str(e.value)


def test_input_checksums_follow_content_not_modification_time(tiny, tmp_path):
    import os

    import numpy as np

    from rfseg.blocks import io

    for i in range(3):
        io.write_tiff(tmp_path / f"im{i}.tif", np.full((64, 64), i, np.float32), 0.1)
        io.write_tiff(tmp_path / f"im{i}_mask.tif", np.ones((64, 64), np.uint8), 0.1)
    mine = {"images": str(tmp_path / "im?.tif"), "masks": str(tmp_path / "{stem}_mask.tif"),
            "patches": {"size": 48, "min_particle_px": 1}, "architectures": ["n2_p22"]}
    off = Plan(_with(tiny, lambda c: c["datasets"].update(mine=mine)))
    on = lambda: Plan(_with(tiny, lambda c: c["datasets"].update(mine={**mine, "input_checksums": True})))  # noqa
    assert off.input_checksum("mine") == "" and off.input_checksum("tiny") == ""
    before = on().input_checksum("mine")
    stat = (tmp_path / "im1.tif").stat()
    io.write_tiff(tmp_path / "im1.tif", np.full((64, 64), 7, np.float32), 0.1)  # new content, the old mtime
    os.utime(tmp_path / "im1.tif", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert on().input_checksum("mine") != before
