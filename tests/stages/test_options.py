"""Training and evaluation options as a user sets them (config keys through the plan's flags, or CLI options):
k-fold over micrographs, all8 augmentation on a CPU, device auto, test-time augmentation."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from rfseg.blocks import training as train_mod
from rfseg.blocks.models import ArchSpec
from rfseg.blocks.patches import kfold_groups
from rfseg.blocks.runtime import pick_device
from rfseg.errors import UserError
from rfseg.plan import Plan
from rfseg.stages.train import TrainConfig, train
from support import ROOT, make_patch_dir


def _tiny(edit):
    cfg = yaml.safe_load((ROOT / "configs/test-tiny.yaml").read_text())
    edit(cfg)
    return Plan(copy.deepcopy(cfg))


def test_kfold_from_the_config_splits_whole_micrographs(cli, tmp_path):
    """split: {folds: 3} in the config makes one patch folder per fold; fold 1's micrographs are exactly its test
    split, every micrograph in one split only."""
    plan = _tiny(lambda c: c["datasets"]["tiny"].update(split={"folds": 3}))
    assert plan.parts("tiny") == ["tiny/fold0", "tiny/fold1", "tiny/fold2"]
    flags = plan.split_flags("tiny/fold1")
    assert flags == "--folds 3 --fold 1"
    cli("simulate", "lowres", "--n-images", 6, "--seed", 3, "--size", 256, "--out", tmp_path / "sim", check_rc=0)
    cli("preprocess", "--manifest", tmp_path / "sim/manifest.csv", "--out", tmp_path / "pre", check_rc=0)
    cli("patches", "--preprocessed", tmp_path / "pre", "--size", 128, "--min-particle-px", 1, *flags.split(), "--out",
        tmp_path / "p", check_rc=0)
    index = pd.read_csv(tmp_path / "p/index.csv")
    groups = list(dict.fromkeys(index["group"].astype(str)))
    assert len(groups) == 6
    expected = kfold_groups(groups, 3, 1)
    assert [g for g in groups if expected[g] == "test"] == [groups[1], groups[4]]
    assert [g for g in groups if expected[g] == "val"] == [groups[2]]  # one of the other four, from the next fold
    for group, split in index.groupby(index["group"].astype(str))["split"]:
        assert set(split) == {expected[group]}, group
    with pytest.raises(UserError, match="7 folds need at least 7"):
        _tiny(lambda c: c["datasets"]["tiny"].update(split={"folds": 7}) or c["datasets"]["tiny"]["simulate"].update(
            n_images=6))


def test_all8_shows_every_patch_in_all_eight_forms_each_epoch_on_a_cpu(tmp_path, monkeypatch):
    patches = make_patch_dir(tmp_path / "p", n=(6, 2, 2), size=48)
    seen = []
    real = train_mod.dihedral_batch

    def spy(x, ks):
        if x.is_floating_point():  # the images (the masks pass through with the same forms)
            seen.extend(zip(x.flatten(1)[:, :8].sum(1).tolist(), ks.tolist()))
        return real(x, ks)

    monkeypatch.setattr(train_mod, "dihedral_batch", spy)
    train(patches, tmp_path / "m", ArchSpec(2, (2, 2)), 1, TrainConfig(epochs=2, batch_size=4, lr=1e-3,
                                                                          augment="all8", device="cpu"))
    per_epoch = 6 * 8
    assert len(seen) == 2 * per_epoch
    for epoch in (seen[:per_epoch], seen[per_epoch:]):
        forms = {}
        for patch, k in epoch:
            forms.setdefault(round(patch, 3), set()).add(k)
        assert len(forms) == 6 and all(f == set(range(8)) for f in forms.values())


def test_device_auto_is_the_gpu_when_one_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="no GPU is visible"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")
    assert _tiny(lambda c: c["compute"].update(device="auto")).train_flags("tiny").endswith(
        "--device auto --select last")


def test_tta_through_evaluate_and_predict(cli, tmp_path, toy_models):
    """evaluation: {tta: true} reaches `rfseg evaluate` as --tta; TTA averages eight transforms, so its probability
    differs from the plain one but segments the same particles."""
    assert _tiny(lambda c: c["evaluation"].update(tta=True)).evaluate_flags() == "--tta --device cpu"
    # the published networks' flat field reaches their evaluation only, and only when not the bundle's own
    windows = _tiny(lambda c: c["evaluation"].update(published_flat_field="none"))
    assert windows.evaluate_flags() == "--device cpu"
    assert windows.evaluate_published_flags() == "--device cpu --published-flat-field none"
    assert _tiny(lambda c: None).evaluate_published_flags() == "--device cpu"
    patches = make_patch_dir(tmp_path / "p", n=(2, 2, 4), size=64, pixel_size_nm=0.25)
    for flag, out in [((), "plain"), (("--tta",), "tta")]:
        cli("evaluate", "--model", toy_models[0], "--patches", patches, "--dataset", "toy", *flag, "--out",
            tmp_path / out, check_rc=0)
    plain, tta = (pd.read_csv(tmp_path / f"{o}/metrics.csv").iloc[0] for o in ("plain", "tta"))
    assert plain["soft_dice"] != tta["soft_dice"]
    assert plain["hard_dice"] > 0.8 and tta["hard_dice"] > 0.8
    from rfseg.blocks import io

    disc = np.hypot(*np.mgrid[-32:32, -32:32]) < 8
    image = np.random.default_rng(0).normal(0, 0.5, (64, 64)) + 1.5 * disc
    io.write_tiff(tmp_path / "a.tif", image.astype(np.float32), 0.25)
    for flag, out in [((), "seg"), (("--tta",), "segtta")]:
        cli("predict", toy_models[0], tmp_path / "a.tif", *flag, "--out", tmp_path / out, check_rc=0)
    p0, p1 = (io.read_image(tmp_path / f"{o}/a_prob.tif").data for o in ("seg", "segtta"))
    assert not np.array_equal(p0, p1)
    assert (p0[disc] > 0.5).mean() > 0.9 and (p1[disc] > 0.5).mean() > 0.9


def test_hrtem_realism_knobs_from_the_config_reach_the_simulator(cli, tmp_path):
    """Knobs in a dataset's simulate block become the simulate command's flags (false as --no-<knob>, so a knob
    whose default is on can be switched off), and the micrographs follow them."""
    from support import one_line_error

    sim = {"kind": "hrtem", "n_images": 1, "seed": 2, "size": 256, "pixel_size_nm": 0.02, "diameter_nm": [1.0, 1.2],
           "cross_border": False, "touching_fraction": 0.0, "shapes": ["icosahedron"], "n_particles": [2, 2],
           "detector_psf_px": 0.5, "defocus_spread_nm": 2}
    flags = Plan.simulate_flags(sim)
    for part in ("--no-cross-border", "--touching-fraction 0.0", "--shapes icosahedron", "--n-particles 2,2",
                 "--detector-psf-px 0.5", "--defocus-spread-nm 2"):
        assert part in flags, flags
    import tifffile

    cli("simulate", "hrtem", *flags.split(), "--out", tmp_path / "sim", check_rc=0)
    row = pd.read_csv(tmp_path / "sim/manifest.csv").iloc[0]
    kinds = row["particle_kinds"].split()
    assert row["n_particles"] == 2 and len(kinds) == 2 and all(k.startswith("icosahedron_") for k in kinds)
    labels = tifffile.imread(tmp_path / "sim/masks/hrtem_000.tif")
    assert not np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).any()
    proc = cli("simulate", "lowres", "--n-images", 1, "--seed", 1, "--detector-psf-px", 1, "--out", tmp_path / "x")
    one_line_error(proc, "hrtem only")
    assert not (tmp_path / "x").exists()
