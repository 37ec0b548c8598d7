"""Cross-validation over micrographs and honest verdicts: every micrograph tested once per seed and never trained on in
its fold, folds pooled in the summary and the paired differences, flagged runs, "cannot tell" with an estimate."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from rfseg.blocks.patches import kfold_groups
from rfseg.errors import UserError
from rfseg.plan import MIN_TEST_MICROGRAPHS, Plan
from support import ROOT, make_patch_dir


@pytest.mark.parametrize("n", range(3, 13))
def test_each_micrograph_is_tested_once_over_the_folds_and_never_in_two_roles(n):
    groups = [f"m{i}" for i in range(n)]
    for folds in range(2, n + 1):
        try:
            splits = [kfold_groups(groups, folds, k) for k in range(folds)]
        except UserError as e:
            assert "no micrograph to train on" in str(e) and n - -(-n // folds) < 2
            continue
        for g in groups:
            assert [s[g] for s in splits].count("test") == 1, (n, folds, g)
        for s in splits:  # one role per micrograph in a fold, and every role filled
            assert set(s.values()) == {"train", "val", "test"} and set(s) == set(groups)


def _cfg(edit=None):
    cfg = yaml.safe_load((ROOT / "configs/real-tem-seg.yaml").read_text())
    cfg["datasets"]["real"]["images"] = str(ROOT / cfg["datasets"]["real"]["images"])
    cfg["datasets"]["real"]["masks"] = str(ROOT / cfg["datasets"]["real"]["masks"])
    if edit:
        edit(cfg)
    return copy.deepcopy(cfg)


def test_the_plan_trains_every_run_once_per_fold():
    plan = Plan(_cfg())
    assert plan.parts("real") == [f"real/fold{k}" for k in range(4)]
    assert len(plan.runs("real")) == 4 * 3 * 3
    assert plan.model_dirs("real")[0] == "results/real-tem-seg/real/fold0/models/n2_p22/seed752"
    assert plan.split_flags("real/fold2") == "--folds 4 --fold 2"
    assert plan.held_out_micrographs("real") == 8 and plan.warnings() == []


def test_a_test_split_of_one_micrograph_is_warned_before_any_job():
    plan = Plan(_cfg(lambda c: c["datasets"]["real"].pop("split")))
    assert plan.held_out_micrographs("real") == 1 < MIN_TEST_MICROGRAPHS
    (line,) = plan.warnings()
    assert "dataset real tests on 1 micrograph(s)" in line and "split: {folds: 5}" in line and "\n" not in line


def test_shipped_real_folds_hold_each_micrograph_in_one_role(cli, tmp_path):
    from rfseg.stages.preprocess import preprocess

    preprocess(tmp_path / "pre", images=f"{ROOT}/resources/real-tem-seg/images/*.tif",
               masks=f"{ROOT}/resources/real-tem-seg/masks/{{stem}}.tif", uncalibrated=True)
    tested = []
    for fold in range(4):
        cli("patches", "--preprocessed", tmp_path / "pre", "--size", 256, "--min-particle-px", 400, "--folds", 4,
            "--fold", fold, "--out", tmp_path / f"p{fold}", check_rc=0)
        index = pd.read_csv(tmp_path / f"p{fold}/index.csv")
        assert index.groupby("source_image")["split"].nunique().max() == 1
        tested += sorted(index.loc[index["split"] == "test", "source_image"].unique())
        summary = json.loads((tmp_path / f"p{fold}/summary.json").read_text())
        assert (summary["folds"], summary["fold"]) == (4, fold)
    assert len(tested) == len(set(tested)) == 8


# --------------------------------------------------------------------------------------------------- flagged runs
def _silenced(src, dst):
    """A copy of a trained bundle whose output layer says 'background' everywhere: it predicts no particle."""
    import shutil

    from rfseg.blocks.bundle import sha256

    shutil.copytree(src, dst)
    state = torch.load(dst / "model.pt", weights_only=True)
    state["head.weight"].zero_()
    state["head.bias"].copy_(torch.tensor([10.0, -10.0]))
    torch.save(state, dst / "model.pt")
    meta = json.loads((dst / "model.json").read_text())
    meta["weights_sha256"] = sha256(dst / "model.pt")
    (dst / "model.json").write_text(json.dumps(meta))
    return dst


def test_a_network_that_predicts_nothing_is_flagged_and_not_recommended(cli, tmp_path, toy_models):
    from rfseg.stages.aggregate import aggregate
    from rfseg.stages.evaluate import evaluate
    from rfseg.stages.paired import paired

    patches = make_patch_dir(tmp_path / "p", n=(4, 4, 8), size=64, pixel_size_nm=0.25, per_micrograph=2)
    mute = _silenced(toy_models[0], tmp_path / "mute")
    row = evaluate(mute, patches, tmp_path / "e_mute", "toy")
    assert row["status"].startswith("flagged: no particle predicted")
    ok = evaluate(toy_models[1], patches, tmp_path / "e_ok", "toy")
    assert ok["status"] == "ok"
    summary = aggregate([tmp_path / "e_mute/metrics.csv"], tmp_path / "m.csv", tmp_path / "s.csv")
    assert summary["status"].iloc[0].startswith("flagged: 1 of 1 runs") and summary["n_flagged"].iloc[0] == 1
    table = paired(patches, [tmp_path / "e_mute"], "toy", tmp_path / "paired.csv")
    assert table["n_flagged"].tolist() == [1]
    proc = cli("recommend", "toy", "--paired", tmp_path / "paired.csv")
    assert proc.returncode == 2 and "cannot recommend: runs of n2_p22 are flagged" in proc.stderr
    assert "use " not in proc.stdout


def test_recommend_says_when_the_data_cannot_tell_and_how_many_micrographs_would(cli, tmp_path):
    rows = [{"dataset": "d", "method": "unet", "arch": a, "blocks": 2, "params": 8074, "rf_px": rf, "rf_nm": None,
             "reference": "n2_p22", "n_seeds": 2, "n_micrographs": 8, "diff_mean": d, "diff_ci_low": lo,
             "diff_ci_high": hi, "ci_half_width": (hi - lo) / 2, "n_flagged": 0}
            for a, rf, d, lo, hi in [("n2_p22", 44, 0.0, 0.0, 0.0), ("n2_p44", 120, 0.02, -0.04, 0.08),
                                     ("n2_p84", 232, 0.01, -0.05, 0.07)]]
    pd.DataFrame(rows).to_csv(tmp_path / "paired.csv", index=False)
    out = cli("recommend", "d", "--paired", tmp_path / "paired.csv", check_rc=0).stdout
    assert out.startswith("d: cannot tell with 8 test micrographs x 2 seeds; the cheapest RF is n2_p22")
    assert "+0.020 [-0.040, +0.080]" in out and "about 32 test micrographs would bring its half-width (0.060)" in out
    rec = json.loads(cli("recommend", "d", "--paired", tmp_path / "paired.csv", "--json", check_rc=0).stdout)
    assert rec["resolved"] is False and rec["micrographs_needed"] == 32  # 8 * (0.06 / 0.03)^2
    # an interval that includes 0 but is already narrower than +/-0.03: the data can tell, the RFs score alike
    narrow = pd.DataFrame(rows)
    narrow.loc[1:, ["diff_mean", "diff_ci_low", "diff_ci_high", "ci_half_width"]] = [[-0.003, -0.007, 0.003, 0.005],
                                                                                      [-0.02, -0.03, -0.01, 0.01]]
    narrow.to_csv(tmp_path / "narrow.csv", index=False)
    out = cli("recommend", "d", "--paired", tmp_path / "narrow.csv", check_rc=0).stdout
    assert out.startswith("d: use n2_p22 (RF 44 px) [measured (paired differences): no larger RF does better]")
    assert "no larger RF scores measurably higher" in out and "alike here within 0.005" in out
    rec = json.loads(cli("recommend", "d", "--paired", tmp_path / "narrow.csv", "--json", check_rc=0).stdout)
    assert rec["alike"] is True and rec["micrographs_needed"] is None


def test_folds_pool_into_one_row_per_run():
    from rfseg.blocks.stats import aggregate

    base = {"dataset": "d", "method": "unet", "arch": "n2_p22", "blocks": 2, "pools": "2,2", "dilations": "1,1,1",
            "mode": "max", "params": 8074, "rf_px": 44, "rf_nm": np.nan, "soft_dice": 0.5, "calibration_error": 0.1}
    rows = pd.DataFrame([{**base, "seed": s, "fold": f, "n_test_patches": n, "hard_dice": h, "tp_px": tp,
                          "fp_px": 10, "fn_px": 10, "status": "ok"}
                         for s in (1, 2) for f, n, h, tp in [(0, 2, 0.6, 40), (1, 6, 0.8, 80)]])
    out = aggregate(rows).iloc[0]
    assert (out["n_seeds"], out["n_folds"], out["n_flagged"], out["status"]) == (2, 2, 0, "ok")
    assert out["hard_dice_mean"] == pytest.approx((0.6 * 2 + 0.8 * 6) / 8)  # every test patch counted once
    assert out["global_dice_mean"] == pytest.approx(240 / (240 + 40))  # from the summed pixel counts


def test_recommend_says_when_every_larger_rf_is_measurably_worse(cli, tmp_path):
    rows = [{"dataset": "d", "method": "unet", "arch": a, "blocks": 2, "params": 8074, "rf_px": rf, "rf_nm": None,
             "reference": "n2_p22", "n_seeds": 3, "n_micrographs": 8, "diff_mean": d, "diff_ci_low": lo,
             "diff_ci_high": hi, "ci_half_width": (hi - lo) / 2, "n_flagged": 0}
            for a, rf, d, lo, hi in [("n2_p22", 44, 0.0, 0.0, 0.0), ("n2_p44", 120, -0.006, -0.009, -0.003),
                                     ("n2_p84", 232, -0.02, -0.03, -0.011)]]
    pd.DataFrame(rows).to_csv(tmp_path / "paired.csv", index=False)
    out = cli("recommend", "d", "--paired", tmp_path / "paired.csv", check_rc=0).stdout
    assert out.startswith("d: use n2_p22 (RF 44 px) [measured (paired differences)]")
    assert "every larger RF scores measurably lower" in out and "n2_p84 -0.020 [-0.030, -0.011]" in out
