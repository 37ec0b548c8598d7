import numpy as np
import pytest
import yaml

from support import job_counts, scratch_copy, snakemake


def _variant(wd, name, edit):
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    edit(cfg)
    path = wd / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _dry(wd, configfile=None):
    args = ["-n"] + (["--configfile", configfile] if configfile else [])
    proc = snakemake(wd, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job_counts(proc.stdout + proc.stderr), proc.stdout + proc.stderr


# Jobs that read the aggregated metrics.csv, so they follow any change in any evaluation or the Fourier baseline.
AFTER_METRICS = {"aggregate": 1, "figure_dice_vs_rf": 1, "figure_sizes": 1, "figure_dilation": 1, "predict": 1,
                 "all": 1}
AFTER_FOURIER = {"fourier": 1, "fn_overlap": 1, "figure_false_negatives": 1}
NEW_MODELS = {"fn_overlap": 1, "figure_false_negatives": 1, "figure_curves": 1, "paired": 1}


def test_too_few_test_micrographs_are_warned_in_the_dry_run(tmp_path):
    wd = scratch_copy(tmp_path)
    _, out = _dry(wd)
    assert "warning: dataset tiny tests on 1 micrograph(s), fewer than the 8" in out


@pytest.mark.slow
def test_cross_validation_runs_every_fold_and_pools_them(tmp_path):
    """split: {folds: 2} on the tiny set: each micrograph tested once per seed by its own fold's networks, the
    summary pooled over folds, and a change to one fold's patches reruns that fold's jobs only."""
    import os

    import pandas as pd

    wd = scratch_copy(tmp_path)
    (wd / "config.yaml").write_text(_variant(wd, "cv", lambda c: c["datasets"]["tiny"].update(
        split={"folds": 2}, architectures=["n2_p22", "n2_p24"])).read_text())
    proc = snakemake(wd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    per = pd.read_csv(wd / "results/tiny/per_micrograph.csv")
    nets = per[per["method"] == "unet"]
    assert nets.groupby(["arch", "seed"])["micrograph"].apply(lambda m: m.is_unique and len(m) == 4).all()
    for fold in (0, 1):
        index = pd.read_csv(wd / f"results/tiny/fold{fold}/patches/index.csv")
        trained = set(index.loc[index["split"] != "test", "source_image"])
        assert not trained & set(nets.loc[nets["fold"] == fold, "micrograph"])  # never trained on where tested
    metrics = pd.read_csv(wd / "results/metrics.csv")
    assert sorted(metrics.loc[metrics["method"] == "unet", "fold"].unique()) == [0, 1]
    summary = pd.read_csv(wd / "results/summary.csv").set_index("arch")
    assert summary.loc["n2_p22", "n_folds"] == 2 and summary.loc["n2_p22", "n_seeds"] == 1
    assert "status" in summary and "n_flagged" in summary
    stamp = wd / "results/tiny/fold1/patches"
    later = stamp.stat().st_mtime + 60
    for p in [stamp, *stamp.rglob("*")]:
        os.utime(p, (later, later))
    counts, _ = _dry(wd)
    assert counts["train"] == 2 and counts["evaluate"] == 2 and counts["evaluate_published"] == 1
    assert counts["fourier"] == 1 and counts["fn_overlap"] == 1 and "patches" not in counts


@pytest.mark.slow
def test_outputs_and_nothing_left_to_do(done_workflow):
    wd = done_workflow
    for f in ["results/summary.csv", "results/metrics.csv", "results/tiny/fn_overlap.csv",
              "results/tiny/models/n2_p22/seed1/model.json", "results/architectures.csv",
              "results/tables/datasets.csv", "results/predict/new/segmented/summary.csv"]:
        assert (wd / f).is_file(), f
    counts, out = _dry(wd)
    assert counts == {} and "Nothing to be done" in out
    import pandas as pd

    summary = pd.read_csv(wd / "results/summary.csv")
    published = summary[summary["method"] == "published"]
    assert list(published["arch"]) == ["au-2.2nm-423e"] and published["n_seeds"].item() == 1
    assert 0 <= published["hard_dice_mean"].item() <= 1
    paired = pd.read_csv(wd / "results/tiny/paired.csv").set_index("arch")
    assert sorted(paired.index) == ["au-2.2nm-423e", "n2_p22", "n2_p22_d112", "n2_p24"]
    assert (paired["reference"] == "n2_p22").all() and paired.loc["n2_p22", "diff_mean"] == 0
    for arch in ("n2_p24", "n2_p22_d112"):
        assert paired.loc[arch, "diff_ci_low"] <= paired.loc[arch, "diff_mean"] <= paired.loc[arch, "diff_ci_high"]
    per = pd.read_csv(wd / "results/tiny/per_micrograph.csv")
    assert set(per["arch"]) == set(paired.index) and per["score"].between(0, 1).all()
    assert per.groupby("arch")["micrograph"].nunique().eq(paired["n_micrographs"].iloc[0]).all()


@pytest.mark.slow
def test_every_figure_is_drawn_and_in_the_report(done_workflow):
    from PIL import Image

    wd = done_workflow
    names = ["dice_vs_rf", "dice_by_size", "examples", "training_curves", "effective_rf", "false_negatives",
             "fn_overlap", "pooling_vs_dilation", "edges"]
    for name in names:
        png = wd / f"results/figures/tiny/{name}.png"
        with Image.open(png) as im:
            assert im.size[0] >= 400 and im.size[1] >= 250, (name, im.size)
            assert len(np.unique(np.asarray(im.convert("L")))) > 20, f"{name} looks empty"
        assert (wd / f"results/figures/tiny/{name}.svg").stat().st_size > 1000
    proc = snakemake(wd, "--report", "results/report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (wd / "results/report.html").read_text(errors="replace")
    for name in names:
        assert f"{name}.png" in html
    assert "Dice vs receptive field" in html
    for table in ("datasets.csv", "fingerprint.csv", "paired.csv"):  # the tables, with their captions
        assert table in html, table
    for caption in ("datasets", "fingerprint", "paired", "dice_vs_rf", "training_curves"):
        first_words = " ".join((wd / f"workflow/report/{caption}.rst").read_text().split()[:4])
        assert first_words in html, (caption, first_words)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,edit,expected",
    [
        ("sigma", lambda c: c["datasets"]["tiny"]["fourier"].update(sigma_nm=0.3),
         {**AFTER_FOURIER, **AFTER_METRICS}),
        ("seed", lambda c: c["training"].update(seeds=[1, 2]),
         {"train": 3, "evaluate": 3, **NEW_MODELS, **AFTER_METRICS}),
        ("arch", lambda c: c["datasets"]["tiny"]["architectures"].append("n2_p42"),
         {"train": 1, "evaluate": 1, "erf": 1, "figure_erf": 1, "figure_examples": 1, **NEW_MODELS,
          **AFTER_METRICS}),
        ("lr", lambda c: c["training"].update(lr=0.001),
         {"train": 3, "evaluate": 3, "erf": 3, "figure_erf": 1, "figure_examples": 1, "figure_edges": 1,
          **NEW_MODELS, **AFTER_METRICS}),
        ("patch", lambda c: c["datasets"]["tiny"]["patches"].update(min_particle_px=60),
         {"patches": 1, "dataset_table": 1, "fingerprint": 1, "train": 3, "evaluate": 3, "evaluate_published": 1,
          "erf": 3, "figure_erf": 1,
          "figure_examples": 1, "figure_edges": 1, **AFTER_FOURIER, **NEW_MODELS, **AFTER_METRICS}),
    ],
)
def test_config_change_reruns_only_affected_jobs(done_workflow, name, edit, expected):
    counts, _ = _dry(done_workflow, _variant(done_workflow, name, edit))
    assert counts == expected


@pytest.mark.parametrize(
    "name,edit,needle",
    [
        ("typo", lambda c: c["training"].update(epoch=3), "epoch"),
        ("path", lambda c: c["datasets"].update(
            real={"images": "nowhere/*.tif", "masks": "nowhere/{stem}.tif", "pixel_size_nm": 1.0,
                  "patches": {"size": 128, "min_particle_px": 10}, "architectures": ["n2_p22"]}),
         "datasets.real.images"),
        ("rf", lambda c: c["datasets"]["tiny"]["architectures"].append("n2_p88"),
         "n2_p88 has a receptive field of 392 px"),
        ("space", lambda c: c["datasets"].update({"my data": c["datasets"].pop("tiny")}) or c["predict"].update(
            dataset="my data"), "name 'my data' is used in file names"),
        ("fractions", lambda c: c["datasets"]["tiny"].update(split={"fractions": [0.5, 0.1, 0.1]}),
         "must sum to 1"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, name, edit, needle):
    """Through Snakemake itself: a config mistake stops the dry run and the run, before any job (the full list of
    checks is tested on rfseg.plan directly)."""
    wd = scratch_copy(tmp_path)
    dry = snakemake(wd, "-n", "--configfile", _variant(wd, name, edit))
    assert dry.returncode != 0 and needle in dry.stdout + dry.stderr
    proc = snakemake(wd, "--configfile", _variant(wd, name, edit))
    assert proc.returncode != 0
    assert needle in proc.stdout + proc.stderr
    assert not (wd / "results").exists()


@pytest.mark.slow
def test_real_dataset_config_preprocesses_and_splits_without_leakage(tmp_path):
    import pandas as pd

    wd = scratch_copy(tmp_path, config="configs/real-tem-seg.yaml")
    folds = [f"results/real-tem-seg/real/fold{k}/patches" for k in range(4)]
    proc = snakemake(wd, *folds)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tested = []
    for folder in folds:
        idx = pd.read_csv(wd / folder / "index.csv")
        assert idx.source_image.nunique() == 8
        assert idx.groupby("source_image")["split"].nunique().max() == 1  # no micrograph in two splits
        assert set(idx.split) == {"train", "val", "test"}
        tested += list(idx.loc[idx.split == "test", "source_image"].unique())
    assert len(tested) == len(set(tested)) == 8  # each tested in exactly one fold
    counts, _ = _dry(wd)
    assert counts["train"] == 4 * 3 * 3 and "fourier" not in counts


def test_lint_and_format_clean():
    import subprocess
    import sys
    from pathlib import Path

    from support import ROOT, SNAKEMAKE, env_for

    lint = subprocess.run([str(SNAKEMAKE), "--lint"], cwd=ROOT, env=env_for(ROOT), capture_output=True, text=True)
    assert lint.returncode == 0 and "Lints for" not in lint.stdout + lint.stderr, lint.stdout[-2000:]
    snakefmt = Path(sys.executable).with_name("snakefmt")
    fmt = subprocess.run([str(snakefmt), "--check", "Snakefile", "workflow/"], cwd=ROOT, capture_output=True,
                         text=True)
    assert fmt.returncode == 0, fmt.stderr[-2000:]


def test_local_runs_hide_scontrol_from_snakemake():
    """make run and the local workflow tests put a failing scontrol first on Snakemake's PATH (its SLURM plugin asks
    the controller at every start: a 9-s wait where SLURM's tools are installed but none answers); the SLURM tests
    keep the real one."""
    import os
    import re
    import shutil
    import subprocess

    from support import NO_SLURM_BIN, ROOT, env_for

    shim = str(NO_SLURM_BIN / "scontrol")
    recipe = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    run_line = next(line for line in recipe.splitlines() if "--profile workflow/profiles/default" in line)
    make_path = re.search(r'PATH="([^"]+)"', run_line)[1].replace("$PATH", os.environ["PATH"])
    assert shutil.which("scontrol", path=make_path) == shim
    assert shutil.which("scontrol", path=env_for(ROOT)["PATH"]) == shim
    assert str(NO_SLURM_BIN) not in env_for(ROOT, slurm=True)["PATH"]
    hidden = subprocess.run([shim, "show", "config"], capture_output=True, text=True)
    assert hidden.returncode != 0 and "hidden from this local run" in hidden.stderr


def test_demo_starts_the_simulations_then_the_trainings(tmp_path):
    """Job priorities of the demo: the simulations (every core of a laptop, everything waits on them) first, then
    preprocessing and patches, then the trainings; evaluations and figures fill the gaps. Measured on 2 cores, this
    order ends the run sooner than Snakemake's choice among equals (performance docs)."""
    import re

    wd = scratch_copy(tmp_path, config="config.yaml")
    proc = snakemake(wd, "-n", "--forceall")
    assert proc.returncode == 0, proc.stderr[-3000:]
    priorities = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout + proc.stderr):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if rule:
            level = re.search(r"^\s+priority: (\d+)$", block, re.M)
            priorities.setdefault(rule[1], set()).add(int(level[1]) if level else 0)
    assert priorities.pop("simulate") == priorities.pop("simulate_for_predict") == {3}
    assert priorities.pop("preprocess") == priorities.pop("patches") == {2}
    assert priorities.pop("train") == {1}
    assert {"evaluate", "erf", "predict", "figure_examples"} <= priorities.keys()
    assert set().union(*priorities.values()) == {0}


def test_paper_config_plans_the_full_study(tmp_path):
    """With the documented data layout in place, the paper protocol plans every architecture x 5 seeds."""
    import numpy as np

    from rfseg.blocks import io

    wd = scratch_copy(tmp_path, config="configs/paper.yaml")
    for ds in ("hrtem_5nm", "lowres_20nm"):
        for i in range(3):
            img = wd / f"data/paper/{ds}/images/im{i}.tif"
            io.write_tiff(img, np.zeros((512, 512), np.float32))
            io.write_tiff(wd / f"data/paper/{ds}/masks/im{i}.tif", np.zeros((512, 512), np.uint8))
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    for ds in cfg["datasets"].values():  # the test masks are TIFF, the documented example PNG
        ds["masks"] = ds["masks"].replace(".png", ".tif")
    counts, _ = _dry(wd, _variant(wd, "paper", lambda c: c.update(cfg)))
    # N=2: 9 pooling combinations fit 512 px, N=3: 14, N=4: 7; plus 7 dilated N=2 variants on HRTEM
    assert counts["train"] == 5 * ((9 + 14 + 7 + 7) + (9 + 14 + 7))
    assert counts["fourier"] == 1 and counts["preprocess"] == 2


def test_series_config_plans_one_sweep_per_point(tmp_path):
    wd = scratch_copy(tmp_path, config="configs/series.yaml")
    counts, _ = _dry(wd)
    assert counts["simulate"] == 5 and counts["fingerprint"] == 5 and counts["figure_series"] == 1
    cfg = yaml.safe_load((wd / "configs/series.yaml").read_text())
    seeds = [len(d.get("training", {}).get("seeds", cfg["training"]["seeds"])) for d in cfg["datasets"].values()]
    assert min(seeds) >= 3 and counts["train"] == 3 * sum(seeds) and "predict" not in counts
    assert counts["paired"] == 5 and counts["evaluate_published"] == 1 + 1 + 5 + 1 + 1


@pytest.mark.slow
def test_reduced_series_runs_end_to_end(tmp_path):
    """configs/series.yaml shrunk to seconds (small images and particles, one seed, one epoch) runs to the figure."""
    wd = scratch_copy(tmp_path, config="configs/series.yaml")

    def shrink(c):
        c["training"].update(seeds=[1], epochs=1)
        for name in list(c["datasets"])[2:]:
            del c["datasets"][name]
        for d in c["datasets"].values():
            d.pop("training", None)
            d["simulate"].update(n_images=3, size=256, diameter_nm=[1.5, 2.5])
            d["patches"].update(size=128, min_particle_px=50)
            d["architectures"] = ["n2_p22", "n2_p24"]

    cfg = _variant(wd, "reduced", shrink)
    (wd / "config.yaml").write_text(cfg.read_text())
    proc = snakemake(wd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd
    from PIL import Image

    with Image.open(wd / "results/series/figures/series.png") as im:
        assert len(np.unique(np.asarray(im.convert("L")))) > 20, "the series figure looks empty"
    summary = pd.read_csv(wd / "results/series/summary.csv")
    trained = summary[summary["method"] == "unet"] if "method" in summary else summary
    sets = list(yaml.safe_load(cfg.read_text())["datasets"])
    assert sorted(trained.groupby(["dataset", "arch"]).size().index) == [(d, a) for d in sorted(sets)
                                                                         for a in ("n2_p22", "n2_p24")]
    assert trained["hard_dice_mean"].between(0, 1).all()
    for ds in sets:  # simulated 1.5-2.5 nm particles at 0.02 nm/px, measured back from the masks
        fp = pd.read_csv(wd / f"results/series/{ds}/fingerprint.csv").iloc[0]
        assert fp["pixel_size_nm"] == pytest.approx(0.02) and fp["particles"] > 0
        assert 1.2 < fp["diameter_median_nm"] < 3.0 and np.isfinite(fp["abs_amplitude_contrast"])
        paired = pd.read_csv(wd / f"results/series/{ds}/paired.csv")
        assert set(paired["method"]) == {"unet", "published"}
        sound = paired[(paired["method"] == "unet") & (paired["n_flagged"] == 0)].sort_values("rf_px")
        expected = sound["arch"].iloc[0] if len(sound) else "n2_p22"  # one epoch: a run may have learned nothing
        assert (paired["reference"] == expected).all()
        assert paired["diff_ci_low"].le(paired["diff_mean"]).all() and paired["diff_mean"].le(
            paired["diff_ci_high"]).all()


def _kill_everything_in(wd):
    """kill -9 every process working in ``wd`` (Snakemake and its jobs), as a crash or a closed terminal would."""
    import os
    import signal
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if Path(os.readlink(proc / "cwd")) == wd:
                    os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.slow
def test_a_workflow_killed_mid_training_resumes_after_unlock(tmp_path):
    """kill -9 of the whole run while a model trains; the next run stops on Snakemake's lock (README: run
    `snakemake --unlock`), then reruns the incomplete training job, which resumes from its checkpoint and ends with
    the weights of an uninterrupted run (in bf16 on a CPU that has it)."""
    import subprocess

    from rfseg.stages.train import PAUSE_ENV
    from support import SNAKEMAKE, env_for, same_weights, wait_for_pause

    def tiny(c):  # precision auto: bfloat16 autocast where the CPU has it, so the workflow also runs bf16
        c["datasets"]["tiny"]["architectures"] = ["n2_p22"]
        c["training"].update(epochs=3, precision="auto")

    model = "results/tiny/models/n2_p22/seed1/model.pt"
    ref = scratch_copy(tmp_path / "ref")
    (ref / "config.yaml").write_text(_variant(ref, "k", tiny).read_text())
    assert snakemake(ref, model).returncode == 0
    wd = scratch_copy(tmp_path / "cut")
    (wd / "config.yaml").write_text(_variant(wd, "k", tiny).read_text())
    run = subprocess.Popen([str(SNAKEMAKE), "--cores", "2", model], cwd=wd, env={**env_for(wd), PAUSE_ENV: "1"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_pause(run, wd / "results/tiny/checkpoints/n2_p22/seed1.pt", timeout=600)
    _kill_everything_in(wd.resolve())
    run.wait(timeout=60)
    assert not (wd / model).exists()
    locked = snakemake(wd, model)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    assert snakemake(wd, "--unlock").returncode == 0
    done = snakemake(wd, model, "--rerun-incomplete")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in (wd / "results/logs/train/tiny/n2_p22_seed1.log").read_text()
    assert same_weights(ref / model, wd / model)
