import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support import ROOT


def test_throughput_benchmark_quick_mode_prints_json():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--quick", "--threads", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert len(out["training"]) == 2
    for row in out["training"]:
        ref, fast = row["reference"], row["rfseg"]
        assert ref["patches_per_s"] > 0 and fast["patches_per_s"] > 0 and fast["peak_rss_mb"] > 0
        # both sides train the same network (Table 2's parameter count) on real batches with a finite loss
        assert ref["params"] == fast["params"] == {"n2_p44": 8074, "n4_p2222": 130682}[row["arch"]]
        assert all(0 < side[k] < float("inf") for side in (ref, fast) for k in ("loss_first", "loss_last"))
    assert {(r["overlap"], r["precision"]) for r in out["inference"]} == {(0.5, "fp32"), (0.5, "auto"),
                                                                          (0.25, "fp32"), (0.25, "auto")}
    assert all(r["megapixels_per_s"] > 0 for r in out["inference"])
    assert 0 <= out["accuracy"]["fp32"] <= 1 and 0 <= out["accuracy"]["fast"] <= 1


def test_throughput_benchmark_sections_and_archs():
    run = lambda *a: subprocess.run([sys.executable, "-m", "benchmarks.throughput", *a], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, timeout=600)
    proc = run("--sections", "trainig")
    assert proc.returncode == 2 and "unknown section(s) ['trainig']" in proc.stderr
    proc = run("--quick", "--threads", "1", "--sections", "", "--no-paper-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["training"] == []
    proc = run("--quick", "--threads", "1", "--sections", "training", "--archs", "n2_p22")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["arch"] for r in json.loads(proc.stdout)["training"]] == ["n2_p22"]


def test_epoch_benchmark_quick_mode_prints_json():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.epoch", "--quick", "--threads", "1", "--precision",
                           "fp32"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["machine"]["cores"] >= 1 and out["machine"]["threads"] == 1 and out["precision"] == "fp32"
    (row,) = out["sets"]
    fast, ref = row["rfseg"], row["reference"]
    assert fast["autocast"] == "fp32"  # the option reached rfseg train
    assert fast["train_patches"] > 0 and fast["epoch_s"] > 0 and ref["epoch_s"] > 0
    # the parts of an rfseg epoch add up to it, and the process did more than its epochs (start-up, loading)
    assert abs(sum(fast["parts_s"].values()) - fast["epoch_s"]) < 0.05 * fast["epoch_s"] + 0.01
    assert fast["process_wall_s"] > fast["epoch_s"] * row["epochs"] * 0.5 and fast["outside_epochs_s"] > 0
    assert row["speedup_whole_epoch"] == fast["patches_per_s"] / ref["patches_per_s"]
    assert 0 < fast["final_train_loss"] < 10 and 0 < ref["final_train_loss"] < 10


def test_predict_job_benchmark_quick_mode_prints_json():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.predict_job", "--quick", "--threads", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert [r["compile"] for r in out["runs"]] == ["off", "auto"]
    for run in out["runs"]:
        assert len(run["micrograph_seconds"]) == 2 and run["job_mpx_per_s"] > 0
        # 512 px micrographs are one 512 px tile each: far below the work from which auto compiles
        assert run["tile_mpx_per_micrograph"] == 512**2 / 1e6 and run["compiled_at_micrograph"] is None


def test_step_profile_quick_mode_times_both_memory_settings_and_lists_ops_and_onednn_kernels():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.step_profile", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["step"] == {"arch": "n2_p44", "batch": 4, "patch_px": 64, "threads": 1, "precision": "auto",
                           "autocast": out["step"]["autocast"], "steps": 3}
    for allocator in ("reuse", "glibc_default"):
        assert len(out["speed"][allocator]["runs_patches_per_s"]) == 2 and out["speed"][allocator]["patches_per_s"] > 0
    assert out["speed"]["reuse_over_default"] > 0
    ops = out["ops"]["top"]
    assert len(ops) == 5 and ops[0]["self_ms_per_step"] >= ops[-1]["self_ms_per_step"] > 0
    assert sum(r["share"] for r in ops) <= 1.0001
    if out["step"]["autocast"] == "bfloat16":  # the CPU path whose kernels the docs discuss
        convs = [r for r in out["onednn"]["primitives"] if r["primitive"] == "convolution"]
        # every convolution of the step runs in oneDNN, both backward directions too: 10 3x3 and 6 1x1 layers
        assert {r["direction"] for r in convs} >= {"forward_training", "backward_data", "backward_weights"}
        assert sum(r["calls_per_step"] for r in convs if r["direction"] == "forward_training") == 16
        assert 0 < out["onednn"]["ms_per_step"] < out["ops"]["profiled_ms_per_step"]
        assert "avx512_core_bf16" in out["onednn"]["convolution_isa"] or "amx" in out["onednn"]["convolution_isa"]


def test_every_benchmark_names_its_cpu_kind_flags_commit_and_date():
    from benchmarks import cpu_kind, machine

    info = machine(1)
    assert info["kind"] == cpu_kind(info["cpu"], set(info["flags"])) and info["threads"] == 1
    assert set(info["flags"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}
    assert info["commit"] and len(info["date"]) == 10
    if Path("/proc/cpuinfo").is_file():  # Linux: the generation and clock, which "AMD EPYC" alone does not say
        assert info["cpu_family_model_stepping"].count("/") == 2 and info["cpu_mhz"] > 0
    # the kinds the project's machines are: the file names and the docs' table use these
    assert cpu_kind("Intel(R) Xeon(R) Processor", {"amx_bf16", "amx_tile", "avx512_bf16"}) == "intel-xeon-amx"
    assert cpu_kind("AMD EPYC 9B14", {"avx512_bf16", "avx512f"}) == "amd-epyc-bf16"
    assert cpu_kind("AMD EPYC 7B13", {"avx2"}) == "amd-epyc-fp32"


def test_pipeline_stages_sums_jobs_per_stage_and_the_wall_time(tmp_path):
    import os

    bench = tmp_path / "results/benchmarks"
    (bench / "train").mkdir(parents=True)
    for i, (name, seconds, end) in enumerate([("train/a.tsv", 30.0, 1000.0), ("train/b.tsv", 50.0, 1040.0),
                                              ("simulate.tsv", 20.0, 990.0)]):
        (bench / name).write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:{int(seconds)}\t{100 + i}\n")
        os.utime(bench / name, (end, end))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.pipeline_stages", str(tmp_path / "results")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    stages = {s["stage"]: s for s in out["stages"]}
    assert stages["train"]["jobs"] == 2 and stages["train"]["seconds_total"] == 80 and stages["simulate"]["jobs"] == 1
    assert out["job_seconds_total"] == 100 and out["wall_seconds"] == 1040 - 970 and out["machine"]["kind"]


def test_pipeline_stages_reads_from_the_snakemake_log_how_the_jobs_filled_the_cores(tmp_path):
    from benchmarks.pipeline_stages import core_use

    log = tmp_path / "run.snakemake.log"
    log.write_text("""Provided cores: 2
Rules claiming more threads will be scaled down.
[Mon Dec  7 09:00:00 2026]
localrule simulate:
    output: results/raw
    jobid: 3
    threads: 2
[Mon Dec  7 09:00:10 2026]
Finished jobid: 3 (Rule: simulate)
[Mon Dec  7 09:00:10 2026]
localrule train:
    jobid: 1
[Mon Dec  7 09:00:10 2026]
rule train:
    jobid: 2
[Mon Dec  7 09:00:40 2026]
Finished jobid: 2 (Rule: train)
[Mon Dec  7 09:00:50 2026]
Finished jobid: 1 (Rule: train)
""")
    use = core_use(log)
    assert (use["cores"], use["jobs"], use["span_seconds"]) == (2, 3, 50)
    assert use["held_core_seconds"] == 10 * 2 + 40 + 30 and use["idle_core_seconds"] == 2 * 50 - 90


def test_the_lab_patches_of_a_larger_simulated_micrograph():
    from benchmarks.realism import MIN_PARTICLE_PX, lab_patches, source_of

    mask = np.zeros((1024, 1024), bool)
    mask[100:200, 100:200] = True            # 10,000 particle px in the first patch
    mask[600:610, 600:640] = True            # 400 in the last: mostly background, dropped as the lab did
    image = np.arange(1024 * 1024, dtype=np.float32).reshape(1024, 1024)
    kept = lab_patches([("hrtem_000", image, (0.02, 0.02), mask)])
    assert [name for name, *_ in kept] == ["hrtem_000@0_0"] and kept[0][3].sum() == 10_000 > MIN_PARTICLE_PX
    assert kept[0][1].shape == (512, 512) and kept[0][1][0, 0] == 0 and source_of(kept[0][0]) == "hrtem_000"
    small = lab_patches([("hrtem_001", image[:512, :512], (0.02, 0.02), mask[600:, 600:])])
    assert [name for name, *_ in small] == ["hrtem_001"]   # a 512 px micrograph is its own patch, kept as before


def test_realism_set_takes_knobs_and_sample_settings_in_their_config_units():
    import argparse

    from benchmarks.realism import _knob, _scoped_knob, simulate_keywords

    given = dict(_knob(t) for t in ("carbon_thickness_nm=1.5,2.5", "defocus_offset_nm=-2", "image_spread_nm=0.035",
                                    "frozen_phonons=4"))
    assert given == {"carbon_thickness_nm": [1.5, 2.5], "defocus_offset_nm": -2.0, "image_spread_nm": 0.035,
                     "frozen_phonons": 4}
    keywords = simulate_keywords(given)
    assert keywords.pop("image_spread_a") == pytest.approx(0.35)
    assert keywords == {"carbon_thickness_a": (15.0, 25.0), "defocus_offset_a": -20.0, "frozen_phonons": 4}
    with pytest.raises(argparse.ArgumentTypeError, match="unknown knob 'carbon'"):
        _knob("carbon=1")
    # a set's name in front sets the knob for that set only
    assert _scoped_knob("au_5nm_80e:detector_dqe=0.15") == ("au_5nm_80e", "detector_dqe", 0.15)
    assert _scoped_knob("detector_dqe=0.15") == (None, "detector_dqe", 0.15)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown set 'au_80e'"):
        _scoped_knob("au_80e:detector_dqe=0.15")


def test_realism_refuses_a_set_knob_for_a_set_it_does_not_run(capsys):
    from benchmarks.realism import main

    with pytest.raises(SystemExit) as exit_:
        main(["--sets", "au_5nm_423e", "--set", "au_5nm_80e:detector_dqe=0.15"])
    assert exit_.value.code == 2
    assert "--set names au_5nm_80e, which --sets leaves out" in capsys.readouterr().err


def test_published_score_can_judge_a_field_as_a_window_without_its_own_flat_field(monkeypatch):
    from benchmarks.published import members, score
    from rfseg.blocks import predictor
    from rfseg.stages.importer import PRETRAINED

    seen = []

    def micrograph(self, image, px, where=None):
        seen.append(self.recipe.flat_field)
        return np.zeros(image.shape), [np.zeros(image.shape)], None

    monkeypatch.setattr(predictor.Predictor, "micrograph", micrograph)
    frame = ("f", np.ones((64, 64), np.float32), (0.02, 0.02), np.ones((64, 64), bool))
    score(members(PRETRAINED / "au-5nm-423e"), [frame])
    score(members(PRETRAINED / "au-5nm-423e"), [frame], flat_field="none")
    assert seen == ["bezier", "none"]  # the networks' own recipe, then the window's


def test_realism_verdict_puts_each_simulated_figure_beside_the_real_one_and_its_band(tmp_path):
    from benchmarks.realism import CROSS, REAL, conditions_figure, interval, verdict

    assert interval([0.5] * 8) == [0.5, 0.5]
    low, high = interval([0.2, 0.4, 0.6, 0.8])
    assert 0.2 <= low < 0.5 < high <= 0.8
    # patches of one micrograph move together: resampling micrographs, not patches, gives the wider interval
    values, groups = [0.2] * 6 + [0.8] * 6, ["a"] * 6 + ["b"] * 6
    grouped = interval(values, groups=groups)
    assert grouped[0] == 0.2 and grouped[1] == 0.8 and np.diff(interval(values)) < np.diff(grouped)
    sets = {name: {"bundle": name.replace("_", "-"), "micrographs": 8, "mean_dice": REAL[name] + shift,
                   "mean_dice_ci": [REAL[name] + shift - 0.01, REAL[name] + shift + 0.01],
                   "lab_contrast_median": 0.25}
            for name, shift in [("au_5nm_423e", -0.049), ("au_5nm_80e", 0.031), ("au_5nm_884e", 0.0),
                                ("au_2.2nm_423e", -0.5), ("au_10nm_425e", 0.0)]}
    cross = {key: {"mean_dice": CROSS[key] + 0.07, "mean_dice_ci": [CROSS[key], CROSS[key] + 0.09]} for key in CROSS}
    out = verdict(sets, cross)
    passes = {r["set"]: r["passes"] for r in out["conditions"]}
    # within 0.05 below to 0.03 above the network's real figure
    assert passes == {"au_5nm_423e": True, "au_5nm_80e": False, "au_5nm_884e": True, "au_2.2nm_423e": False,
                      "au_10nm_425e": True}
    assert all(r["passes"] for r in out["cross"]) and len(out["cross"]) == 4
    contrast = {r["set"]: r["passes"] for r in out["contrast"]}
    assert contrast == {"au_5nm_80e": True, "au_5nm_884e": False}  # real 0.239 and 0.576, within 0.03
    conditions_figure(out, tmp_path / "conditions.png")
    assert (tmp_path / "conditions.png").stat().st_size > 10_000


def test_suite_benchmark_reads_a_junit_report(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="0" '
        'failures="1" skipped="1" tests="3" time="12.5"><testcase classname="tests.a" name="test_x" time="7.0"/>'
        '<testcase classname="tests.a" name="test_y" time="3.0"><failure message="no"/></testcase>'
        '<testcase classname="tests.b" name="test_z" time="0.5"><skipped message="no GPU"/></testcase>'
        '</testsuite></testsuites>')
    proc = subprocess.run([sys.executable, "-m", "benchmarks.suite", str(report), "--slowest", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert (out["passed"], out["failed"], out["skipped"], out["tests"]) == (1, 1, 1, 3)
    assert out["wall_seconds"] == 12.5 and out["test_seconds_total"] == 10.5
    assert [s["test"] for s in out["slowest"]] == ["tests.a::test_x", "tests.a::test_y"] and out["machine"]["kind"]


def _stored(path, kind, commit, **data):
    path.write_text(json.dumps({"machine": {"kind": kind, "cpu": "Some CPU", "cores": 2, "flags": ["avx2"],
                                            "commit": commit, "date": "2026-12-01"}, **data}))


def test_kinds_joins_a_kinds_stored_benchmarks_and_counts_its_targets(tmp_path):
    from benchmarks.kinds import kind_summary

    _stored(tmp_path / "demo_k.json", "k", "aaa", wall_seconds=600.0, job_seconds_total=900.0)
    _stored(tmp_path / "suite_k.json", "k", "bbb", wall_seconds=800.0, tests=10)
    _stored(tmp_path / "epoch_k.json", "k", "bbb",
            sets=[{"set": "paper_sized", "speedup_whole_epoch": 1.0}, {"set": "small", "speedup_whole_epoch": 3.456}])
    out = kind_summary("k", tmp_path)
    assert (out["demo_pipeline_seconds"], out["suite_seconds"], out["epoch_speedup"]) == (600.0, 800.0, 3.46)
    assert out["inference_mpx_per_s"] is None  # no predict_job_k.json: not measured, not guessed
    assert (out["targets_met"], out["targets_measured"]) == (2, 3)  # the demo's pipeline is over 540 s
    assert out["machine"]["commit"] == "aaa, bbb" and out["measured"]["suite_seconds"]["file"] == "suite_k.json"
    _stored(tmp_path / "predict_job_k.json", "other", "ccc", runs=[])
    with pytest.raises(SystemExit, match="measured on 'other', not 'k'"):
        kind_summary("k", tmp_path)
    with pytest.raises(SystemExit, match="no benchmark files for the CPU kind 'none'"):
        kind_summary("none", tmp_path)


def test_stored_kind_tables_are_what_their_files_give():
    from benchmarks.kinds import OUT, kind_summary

    stored = sorted(OUT.glob("kind_*.json"))
    assert stored, "no benchmarks/out/kind_<kind>.json: python -m benchmarks.kinds KIND > that file"
    for path in stored:
        assert json.loads(path.read_text()) == kind_summary(path.stem.removeprefix("kind_")), \
            f"{path.name} is stale: rerun python -m benchmarks.kinds {path.stem.removeprefix('kind_')}"


def test_series_contrast_orders_sets_by_contrast_and_reads_each_gain_difference(tmp_path):
    """Three sets whose larger RF gains 0.06, 0.03 and 0.03 over the smallest, at lab contrasts 0.2, 0.4, 0.6: the
    sets come out in contrast order, the pick is the larger RF where its gain is resolved, and the claim reads
    "agrees" for lowest against the others and "cannot tell" between the two equal gains."""
    import pandas as pd

    from rfseg.blocks.stats import paired_differences

    rng = np.random.default_rng(5)
    for name, gain, contrast in [("hi", 0.03, 0.6), ("lo", 0.06, 0.2), ("mid", 0.03, 0.4)]:
        rows = []
        shift = rng.normal(0, 0.1, 16)
        for arch, rf, g in [("n2_p22", 44, 0.0), ("n2_p88", 392, gain)]:
            for seed in ("1", "2", "3", "4"):
                rows += [{"dataset": name, "method": "unet", "arch": arch, "params": 8074, "rf_px": rf,
                          "rf_nm": rf * 0.02, "seed": seed, "micrograph": f"m{m}",
                          "score": 0.8 + shift[m] + g + rng.normal(0, 0.005)} for m in range(16)]
        scores = pd.DataFrame(rows)
        (tmp_path / name).mkdir()
        scores.to_csv(tmp_path / name / "per_micrograph.csv", index=False)
        paired_differences(scores, "n2_p22", resamples=500).to_csv(tmp_path / name / "paired.csv", index=False)
        pd.DataFrame([{"dataset": name, "lab_contrast": contrast}]).to_csv(tmp_path / name / "fingerprint.csv",
                                                                            index=False)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.series_contrast", "--results", str(tmp_path), "--sets",
                           "hi,mid,lo", "--resamples", "500"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert [s["set"] for s in out["sets"]] == ["lo", "mid", "hi"]
    assert all(s["pick"] == "n2_p88" and s["pick_rf_nm"] == 7.84 and s["resolved"] for s in out["sets"])
    readings = {(c["lower_contrast"], c["higher_contrast"]): c for c in out["comparisons"]}
    assert readings["lo", "mid"]["reading"] == readings["lo", "hi"]["reading"] == "agrees"
    assert readings["lo", "hi"]["diff_mean"] == pytest.approx(0.03, abs=0.005)
    assert readings["mid", "hi"]["reading"] == "cannot tell" and out["machine"]["kind"]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.series_contrast", "--results", str(tmp_path / "none")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "run the series first" in proc.stderr
