"""Stage: paired differences between receptive fields on one dataset (``rfseg paired``).

Every evaluation of the dataset (trained networks and published ones) is scored per test micrograph: the mean
per-patch hard dice over that micrograph's test patches. Each architecture's score minus the smallest RF's, for the
same seed and the same micrographs, is then averaged, with a bootstrap interval over micrographs and seeds
(:func:`rfseg.blocks.stats.paired_differences`). Seed-to-seed and micrograph-to-micrograph variation that all
architectures share cancels in the difference, which is what lets a few seeds resolve an RF effect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rfseg.blocks import artifacts, io, metrics
from rfseg.blocks.stats import KEYS, paired_differences, reference_arch
from rfseg.errors import UserError


def _fold(value) -> int | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else int(value)


def micrograph_scores(patch_dirs, eval_dirs) -> pd.DataFrame:
    """One row per evaluation and test micrograph: the keys of the evaluation's metrics row, ``seed`` (a published
    network's member name stands for its seed), ``fold`` (empty without cross-validation), ``micrograph`` (the
    source image), ``n_patches``, ``score`` (mean per-patch hard dice, the paper's smoothing) and ``status``.

    ``patch_dirs``: the dataset's patch folder, or under cross-validation one per fold; each evaluation is scored on
    the folder of its own fold."""
    patch_dirs = [patch_dirs] if isinstance(patch_dirs, (str, Path)) else list(patch_dirs)
    folds = {}
    for patch_dir in patch_dirs:
        index = artifacts.read_patch_index(patch_dir)
        test = index[index["split"] == "test"].sort_values("index_in_split")
        _, masks = artifacts.load_split(patch_dir, "test")
        if len(test) != len(masks):
            raise UserError(f"{patch_dir}: the patch index lists {len(test)} test patches but the split holds "
                            f"{len(masks)}: rerun 'rfseg patches'")
        fold = _fold(artifacts.read_patch_summary(patch_dir).get("fold"))
        if fold in folds:
            raise UserError(f"{patch_dir}: a second patch folder of fold {fold} (also {folds[fold][0]}): give each "
                            f"fold's patch folder once")
        folds[fold] = (patch_dir, test["source_image"].to_numpy(), masks)
    rows = []
    for folder in eval_dirs:
        row, prob = artifacts.read_eval(folder)
        fold = _fold(row.get("fold"))
        if fold not in folds:
            raise UserError(f"{folder}: evaluated on fold {fold}, but no patch folder of that fold was given "
                            f"(--patches): pass every fold's patch folder")
        patch_dir, sources, masks = folds[fold]
        if prob.shape != masks.shape:
            raise UserError(f"{folder}: its probabilities {prob.shape} do not match the test patches {masks.shape} "
                            f"of {patch_dir}: rerun 'rfseg evaluate' on these patches")
        dice = metrics.dice_per_patch(prob > 0.5, masks.astype(bool))
        seed = row.get("member") if row["method"] == "published" else row["seed"]
        keys = {k: row[k] for k in KEYS if k in row.index}
        status = row.get("status", "ok")
        for source in dict.fromkeys(sources):
            here = sources == source
            rows.append({**keys, "seed": str(seed), "fold": fold, "micrograph": str(source),
                         "n_patches": int(here.sum()), "score": float(np.mean(dice[here])),
                         "status": "ok" if pd.isna(status) else status})
    return pd.DataFrame(rows)


def paired(patch_dir, eval_dirs, dataset: str, out, per_micrograph_out=None, reference: str | None = None,
           resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Write ``out``: per architecture (and published network), the mean hard dice per test micrograph minus the
    reference's (default: the smallest RF among the architectures with no flagged run) with a 95 % bootstrap
    interval over micrographs and seeds, and ``n_flagged``, its flagged runs; and, with ``per_micrograph_out``, the
    scores it was computed from. Under cross-validation ``patch_dir`` is every fold's patch folder and the
    micrographs of all folds are pooled (each tested once per seed, by the networks of its own fold). Returns the
    table."""
    if not eval_dirs:
        raise UserError(f"dataset {dataset}: no evaluation folders given")
    if resamples < 100:
        raise UserError(f"--resamples {resamples}: a 95 % interval needs at least 100 bootstrap resamples")
    scores = micrograph_scores(patch_dir, eval_dirs)
    if scores.empty:
        raise UserError(f"{patch_dir}: no test micrographs to compare on")
    twice = scores[scores.duplicated(["method", "arch", "seed", "micrograph"], keep=False)]
    if len(twice):
        r = twice.iloc[0]
        raise UserError(f"{r['arch']} seed {r['seed']} was tested on {r['micrograph']} more than once (folds "
                        f"{sorted(set(twice['fold'].dropna().astype(int)))}): every micrograph must be tested once per "
                        f"seed; give each fold's evaluation once")
    wrong = set(scores["dataset"]) - {dataset}
    if wrong:
        raise UserError(f"the evaluations given belong to {', '.join(sorted(wrong))}, not {dataset}: pass the "
                        f"evaluation folders of {dataset}")
    nets = scores[scores["method"] == "unet"]
    flagged = scores[scores["status"] != "ok"].groupby("arch")["seed"].nunique()  # runs: seeds, folds pooled
    if reference is None:
        if nets.empty:
            raise UserError(f"dataset {dataset}: no trained network among the evaluations to compare against")
        sound = nets[~nets["arch"].isin(flagged.index)]  # a flagged reference would make every difference moot
        reference = reference_arch(sound if not sound.empty else nets)
    elif reference not in set(nets["arch"]):
        raise UserError(f"--reference {reference}: not among the trained networks evaluated on {dataset} "
                        f"({', '.join(sorted(set(nets['arch'])))})")
    try:
        table = paired_differences(scores, reference, resamples=resamples, seed=seed)
    except ValueError as e:
        raise UserError(f"dataset {dataset}: {e}: evaluate every model on the same test patches") from None
    table["n_flagged"] = table["arch"].map(flagged).fillna(0).astype(int)
    if per_micrograph_out:
        io.write_csv(scores, per_micrograph_out)
    io.write_csv(table, out)
    return table
