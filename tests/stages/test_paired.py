"""rfseg paired on hand-made evaluations: per-micrograph scores, the pairing, and bad input."""

import numpy as np
import pandas as pd

from rfseg.blocks import artifacts
from support import make_patch_dir, one_line_error


def _evaluation(folder, patches, arch, rf_px, seed, miss, method="unet", dataset="toy", member=None):
    """An evaluation folder whose prediction is the truth with the first ``miss`` rows of every particle lost."""
    _, masks = artifacts.load_split(patches, "test")
    truth = masks.astype(bool)
    pred = truth.copy()
    for p in pred:
        rows = np.flatnonzero(p.any(1))
        p[rows[:miss]] = False
    row = {"dataset": dataset, "method": method, "arch": arch, "blocks": 2, "pools": "2,2", "dilations": "1,1,1",
           "mode": "max", "params": 8074, "rf_px": rf_px, "rf_nm": rf_px * 0.1, "seed": seed,
           **({"member": member} if member else {})}
    artifacts.write_eval(folder, row, pd.DataFrame(), pred.astype(np.float32), truth, 0.1)
    return folder


def test_paired_scores_micrographs_and_pairs_seeds(cli, tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(4, 2, 6), per_micrograph=2)
    evals = [_evaluation(tmp_path / f"{a}_{s}", patches, a, rf, s, miss)
             for a, rf, miss in (("n2_p22", 44, 3), ("n2_p44", 120, 1)) for s in (1, 2)]
    evals.append(_evaluation(tmp_path / "pub", patches, "pub", 200, np.nan, 0, method="published", member="fold0"))
    out = tmp_path / "paired.csv"
    cli("paired", "--dataset", "toy", "--patches", patches, "--evals", *evals, "--out", out, "--per-micrograph",
        tmp_path / "per.csv", check_rc=0)
    per = pd.read_csv(tmp_path / "per.csv")
    assert per.groupby("arch")["micrograph"].nunique().eq(3).all() and per["n_patches"].eq(2).all()
    t = pd.read_csv(out).set_index("arch")
    assert list(t.index) == ["n2_p22", "n2_p44", "pub"] and (t["reference"] == "n2_p22").all()
    assert t.loc["n2_p44", "paired_by_seed"] and not t.loc["pub", "paired_by_seed"]
    assert t.loc["n2_p44", "diff_ci_low"] > 0 and t.loc["pub", "diff_mean"] > t.loc["n2_p44", "diff_mean"] > 0
    assert t.loc["pub", "score_mean"] == 1.0 and t.loc["n2_p22", "n_seeds"] == 2


def test_paired_bad_input(cli, tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(4, 2, 4), per_micrograph=2)
    good = _evaluation(tmp_path / "a", patches, "n2_p22", 44, 1, 1)
    other = _evaluation(tmp_path / "b", patches, "n2_p44", 120, 1, 1, dataset="elsewhere")
    one_line_error(cli("paired", "--dataset", "toy", "--patches", patches, "--evals", good, other, "--out",
                       tmp_path / "o.csv"), "belong to elsewhere, not toy")
    one_line_error(cli("paired", "--dataset", "toy", "--patches", patches, "--evals", good, "--reference", "n2_p88",
                       "--out", tmp_path / "o.csv"), "--reference n2_p88: not among the trained networks")
    one_line_error(cli("paired", "--dataset", "toy", "--patches", patches, "--evals", good, "--resamples", 5,
                       "--out", tmp_path / "o.csv"), "--resamples 5: a 95 % interval needs at least 100")
    one_line_error(cli("paired", "--dataset", "toy", "--patches", patches, "--evals", tmp_path / "none", "--out",
                       tmp_path / "o.csv"), "metrics.csv: input missing")
    small = make_patch_dir(tmp_path / "q", n=(4, 2, 2), per_micrograph=2)
    one_line_error(cli("paired", "--dataset", "toy", "--patches", small, "--evals", good, "--out",
                       tmp_path / "o.csv"), "do not match the test patches")
    unindexed = make_patch_dir(tmp_path / "r", n=(4, 2, 4))
    one_line_error(cli("paired", "--dataset", "toy", "--patches", unindexed, "--evals", good, "--out",
                       tmp_path / "o.csv"), "patch index not found")
    assert not (tmp_path / "o.csv").exists()
