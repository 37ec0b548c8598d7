"""The ``rfseg`` command line. The only module that knows about argv and exit codes.

Each subcommand parses its arguments and calls one function of a stage module. A :class:`UserError` (or a file that
cannot be read) becomes one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rfseg.errors import UserError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


# ---------------------------------------------------------------------------------------------------------- arch
def _add_arch(sub):
    p = sub.add_parser("arch", help="parameters, receptive field and canonical name of a UNet architecture")
    p.add_argument("--blocks", type=int, required=True, help="number of encoder blocks N (2-5)")
    p.add_argument("--pools", type=_int_list, help="pooling size per block, e.g. 4,4 (each 2, 4 or 8)")
    p.add_argument("--dilations", type=_int_list, default=(), help="dilation per encoder block + bottleneck, e.g. 1,1,2")
    p.add_argument("--mode", choices=["max", "avg"], default="max", help="max-pool+nearest or avg-pool+bilinear")
    p.add_argument("--pixel-size", type=_positive_float, help="pixel size in nm/px, to report the RF in nm")
    p.add_argument("--sweep", action="store_true", help="list all pooling combinations from {2,4,8} by RF")
    p.add_argument("--max-rf-px", type=int, help="with --sweep: keep architectures whose RF fits in this many px")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_arch)


def _run_arch(args):
    from rfseg.models import ArchSpec, describe, sweep

    if args.sweep:
        if args.pools:
            raise UserError("--sweep generates the pools itself: leave out --pools")
        max_rf = args.max_rf_px if args.max_rf_px is not None else 10**9
        rows = [describe(s, args.pixel_size) for s in sweep(args.blocks, max_rf, args.mode, args.dilations)]
    else:
        if not args.pools:
            raise UserError("give --pools (e.g. --pools 4,4) or --sweep")
        rows = [describe(ArchSpec(args.blocks, args.pools, args.dilations, args.mode), args.pixel_size)]
    if args.json:
        print(json.dumps(rows if args.sweep else rows[0], indent=2))
        return
    print(f"{'name':<16}{'params':>9}{'rf_px':>7}{'rf_nm':>9}")
    for r in rows:
        rf_nm = "-" if r["rf_nm"] is None else f"{r['rf_nm']:.3g}"
        print(f"{r['name']:<16}{r['params']:>9,}{r['rf_px']:>7}{rf_nm:>9}")


def _add_arch_table(sub):
    p = sub.add_parser("arch-table", help="CSV of every pooling combination (per N) that fits a patch, by RF")
    p.add_argument("--blocks", type=int, nargs="+", required=True, help="one or more N")
    p.add_argument("--max-rf-px", type=int, required=True, help="keep architectures whose RF is at most this")
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(func=_run_arch_table)


def _run_arch_table(args):
    import pandas as pd

    from rfseg.io import write_csv
    from rfseg.models import describe, sweep

    rows = [describe(s) for n in args.blocks for s in sweep(n, args.max_rf_px)]
    df = pd.DataFrame(rows).drop(columns=["pixel_size_nm", "rf_nm"])
    for col in ("pools", "dilations"):
        df[col] = df[col].map(lambda v: ",".join(map(str, v)))
    write_csv(df, args.out)
    print(f"wrote {len(df)} architectures to {args.out}")


# ---------------------------------------------------------------------------------------------------------- data
def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_simulate(sub):
    p = sub.add_parser("simulate", help="make a demo dataset: simulated micrographs with exact masks")
    p.add_argument("kind", choices=["hrtem", "lowres"])
    p.add_argument("--n-images", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--size", type=int, default=512, help="image size in px")
    p.add_argument("--pixel-size", type=_positive_float, help="nm/px (default 0.02152 hrtem, 0.1243 lowres)")
    p.add_argument("--diameter-nm", type=_float_list, help="particle diameter range, e.g. 2,6")
    p.add_argument("--dose", type=_float_list, help="dose in e/A^2: a range lo,hi (hrtem) or one value (lowres)")
    p.add_argument("--carbon-thickness-nm", type=_float_list, help="hrtem: support thickness range, e.g. 3,5")
    p.add_argument("--defocus-offset-nm", type=float, default=0.0, help="hrtem: defocus away from Scherzer")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="output folder (images/, masks/, manifest.csv)")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args):
    from rfseg.simulate import write_dataset

    kwargs = {"size": args.size}
    if args.pixel_size:
        kwargs["pixel_size_nm"] = args.pixel_size
    if args.diameter_nm:
        kwargs["diameter_nm"] = args.diameter_nm
    if args.n_images < 1:
        raise UserError("--n-images must be at least 1")
    if args.kind == "hrtem":
        from rfseg.simulate.hrtem import simulate_dataset

        kwargs["threads"] = args.threads
        kwargs["defocus_offset_a"] = args.defocus_offset_nm * 10
        if args.carbon_thickness_nm:
            kwargs["carbon_thickness_a"] = tuple(10 * t for t in args.carbon_thickness_nm)
        if args.dose:
            kwargs["dose_e_per_a2"] = (args.dose[0], args.dose[-1])
    else:
        from rfseg.simulate.lowres import simulate_dataset

        if args.dose:
            kwargs["dose_e_per_a2"] = args.dose[0]
    frames = _progress(simulate_dataset(args.n_images, args.seed, **kwargs), args.n_images, f"simulate {args.kind}")
    df = write_dataset(args.out, frames)
    print(f"wrote {len(df)} {args.kind} micrographs to {args.out}")


def _progress(iterable, total, desc):
    """A tqdm bar on a terminal; in a log file (Snakemake jobs) one line per item with the elapsed time."""
    import time

    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, mininterval=2)
        return
    t0 = time.perf_counter()
    for i, item in enumerate(iterable, start=1):
        print(f"{desc}: {i}/{total} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        yield item


def _add_preprocess(sub):
    p = sub.add_parser("preprocess", help="x-ray removal, flat field, resampling, standardisation of a dataset")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="CSV with image, mask [, pixel_size_nm, group] columns")
    src.add_argument("--images", help="glob of image files (with --masks)")
    p.add_argument("--masks", help="mask path pattern with {stem}, e.g. 'data/masks/{stem}.tif'")
    p.add_argument("--pixel-size", type=_positive_float, help="nm/px for files without one (overrides none in file)")
    p.add_argument("--xray-threshold", type=float, help="remove pixels above median + this (raw units)")
    p.add_argument("--xray-passes", type=int, default=2)
    p.add_argument("--flat-field-sigma-nm", type=_positive_float)
    p.add_argument("--target-pixel-size", type=_positive_float, help="resample to this many nm/px")
    p.add_argument("--uncalibrated", action="store_true",
                   help="accept images without a pixel size: lengths stay in px, nm columns are left empty")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run_preprocess)


def _run_preprocess(args):
    from rfseg import data

    if args.images and not args.masks:
        raise UserError("--images needs --masks (a pattern with {stem})")
    manifest = data.read_manifest(args.manifest) if args.manifest else data.manifest_from_glob(args.images,
                                                                                             args.masks)
    if args.pixel_size and "pixel_size_nm" in manifest:
        manifest = manifest.drop(columns="pixel_size_nm")
    df = data.preprocess_dataset(
        manifest, args.out, pixel_size_nm=args.pixel_size, xray_threshold=args.xray_threshold,
        xray_passes=args.xray_passes, flat_field_sigma_nm=args.flat_field_sigma_nm,
        target_pixel_size_nm=args.target_pixel_size, uncalibrated=args.uncalibrated)
    px = df.pixel_size_nm.iloc[0]
    px_text = "uncalibrated" if px is None or px != px else f"pixel size {px:.5g} nm/px"
    print(f"preprocessed {len(df)} micrographs into {args.out} ({px_text}, particle fraction "
          f"{df.particle_fraction.mean():.3f})")


def _add_patches(sub):
    p = sub.add_parser("patches", help="cut preprocessed micrographs into patches and split them by micrograph")
    p.add_argument("--preprocessed", required=True, help="folder written by 'rfseg preprocess'")
    p.add_argument("--size", type=int, required=True, help="patch size in px")
    p.add_argument("--min-particle-px", type=int, default=400, help="drop patches with at most this many")
    p.add_argument("--fractions", type=_float_list, default=(0.7, 0.1, 0.2), help="train,val,test shares")
    p.add_argument("--folds", type=int, help="k-fold cross-validation over micrographs instead of fractions")
    p.add_argument("--fold", type=int, default=0, help="with --folds: which fold is the test set")
    p.add_argument("--dataset", default="", help="dataset name, for messages and the summary")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_patches)


def _run_patches(args):
    from rfseg import data

    if len(args.fractions) != 3 or abs(sum(args.fractions) - 1) > 1e-6 or min(args.fractions) <= 0:
        raise UserError(f"--fractions must be three positive shares that sum to 1, got {args.fractions}")
    s = data.make_patches(args.preprocessed, args.out, size=args.size, min_particle_px=args.min_particle_px,
                          fractions=args.fractions, folds=args.folds, fold=args.fold, dataset=args.dataset)
    counts = ", ".join(f"{k} {v['patches']} patches / {v['micrographs']} micrographs" for k, v in s["splits"].items())
    print(f"{args.dataset or args.out}: {counts}")


# ---------------------------------------------------------------------------------------------- train, evaluate
def _add_train(sub):
    p = sub.add_parser("train", help="train one architecture on one dataset with one seed (resumes if interrupted)")
    p.add_argument("--patches", required=True, help="folder written by 'rfseg patches'")
    p.add_argument("--arch", required=True, help="canonical architecture name, e.g. n2_p44")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=_positive_float, default=1e-4)
    p.add_argument("--augment", choices=["all8", "random8"], default="all8")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--early-stopping", type=int, help="patience in epochs (off by default, as in the paper)")
    p.add_argument("--select", choices=["last", "best"], default="last", help="weights saved as model.pt")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dataset", default="")
    p.add_argument("--out", required=True, help="run folder: model.pt, model.json, history.csv, checkpoint.pt")
    p.set_defaults(func=_run_train)


def _run_train(args):
    from rfseg.models import ArchSpec
    from rfseg.train import TrainConfig, train

    if args.epochs < 1 or args.batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, augment=args.augment,
                      precision=args.precision, channels_last=not args.no_channels_last, device=args.device,
                      early_stopping_patience=args.early_stopping, select=args.select)
    spec = ArchSpec.from_name(args.arch)
    print(f"training {spec.name} seed {args.seed} on {args.patches} ({args.threads} threads)", flush=True)
    meta = train(args.patches, args.out, spec, args.seed, cfg, threads=args.threads,
                 extra_meta={"dataset": args.dataset})
    print(f"done: {meta['epochs_run']} epochs, final val dice {meta['final']['val_dice']:.4f}, "
          f"weights: {meta['weights']} -> {args.out}/model.pt")


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="score a trained model on the test patches")
    p.add_argument("--model", required=True, help="run folder with model.pt and model.json")
    p.add_argument("--patches", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--tta", action="store_true", help="average the 8 dihedral transforms")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args):
    from rfseg.evaluate import evaluate

    row = evaluate(args.model, args.patches, args.out, args.dataset, tta=args.tta, device=args.device,
                   threads=args.threads)
    print(f"{row['dataset']} {row['arch']} seed {row['seed']}: hard dice {row['hard_dice']:.4f}, soft dice "
          f"{row['soft_dice']:.4f}, global dice {row['global_dice']:.4f} on {row['n_test_patches']} patches")


def _add_aggregate(sub):
    p = sub.add_parser("aggregate", help="collect metrics rows and compute mean ± std over seeds")
    p.add_argument("rows", nargs="+", help="metrics.csv files")
    p.add_argument("--out-rows", required=True, help="all rows in one tidy CSV")
    p.add_argument("--out", required=True, help="mean/std per dataset, method and architecture")
    p.set_defaults(func=_run_aggregate)


def _run_aggregate(args):
    import pandas as pd

    from rfseg.evaluate import aggregate
    from rfseg.io import write_csv

    missing = [r for r in args.rows if not Path(r).is_file()]
    if missing:
        raise UserError(f"{missing[0]}: metrics file not found: run the evaluation stage first")
    rows = pd.concat([pd.read_csv(r) for r in args.rows], ignore_index=True)
    write_csv(rows, args.out_rows)
    summary = aggregate(rows)
    write_csv(summary, args.out)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


# ---------------------------------------------------------------------------------------------------------- fourier
def _add_fourier(sub):
    p = sub.add_parser("fourier", help="Fourier-filter baseline on the test patches (annulus from the lattice)")
    p.add_argument("--patches", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--material", default="Au", help="lattice spacings from the built-in table (Au, Ag, Pt, ...)")
    p.add_argument("--spacings-nm", type=_float_list, help="lattice plane spacings in nm (instead of --material)")
    p.add_argument("--radii-px", type=_float_list, help="annulus radii lo,hi in FFT px (overrides spacings)")
    p.add_argument("--rel-tol", type=float, default=0.05, help="relative widening of the annulus")
    p.add_argument("--sigma-nm", type=_positive_float, default=0.19, help="Gaussian blur of the magnitude, nm")
    p.add_argument("--window", action="store_true", help="Hann window before the FFT (off, as in the paper: on "
                   "small patches it erases particles near the edges)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_fourier)


def _run_fourier(args):
    from rfseg.fourier import run_baseline

    if args.radii_px is not None and len(args.radii_px) != 2:
        raise UserError("--radii-px takes two numbers: lo,hi")
    row = run_baseline(args.patches, args.out, args.dataset, material=args.material, spacings_nm=args.spacings_nm,
                       radii_px=args.radii_px, rel_tol=args.rel_tol, sigma_nm=args.sigma_nm,
                       window=args.window)
    if not row.get("note"):
        print(f"{args.dataset} fourier: annulus {row['annulus_lo_px']:.1f}-{row['annulus_hi_px']:.1f} px, hard dice "
              f"{row['hard_dice']:.4f}, global dice {row['global_dice']:.4f}")


def _add_fn_overlap(sub):
    p = sub.add_parser("fn-overlap", help="Jaccard of false-negative maps: Fourier filtering vs each network")
    p.add_argument("--fourier", required=True, help="folder written by 'rfseg fourier'")
    p.add_argument("--networks", nargs="+", required=True, help="folders written by 'rfseg evaluate'")
    p.add_argument("--out", required=True, help="CSV")
    p.set_defaults(func=_run_fn_overlap)


def _run_fn_overlap(args):
    import pandas as pd
    import tifffile

    from rfseg.fourier import false_negative_overlap
    from rfseg.io import write_csv

    fdir = Path(args.fourier)
    if not (fdir / "false_negatives.tif").is_file():
        note = pd.read_csv(fdir / "metrics.csv")["note"].iloc[0] if (fdir / "metrics.csv").is_file() else ""
        columns = ["dataset", "arch", "seed", "rf_px", "rf_nm", "patch", "network", "jaccard", "fourier_fn_px",
                   "network_fn_px"]
        write_csv(pd.DataFrame(columns=columns), args.out)
        print(f"no Fourier false-negative maps in {fdir} ({note or 'baseline not run'}): wrote an empty table")
        return
    fourier_fn = tifffile.imread(fdir / "false_negatives.tif").astype(bool)
    tables = []
    for d in args.networks:
        d = Path(d)
        m = pd.read_csv(d / "metrics.csv").iloc[0]
        fn = tifffile.imread(d / "false_negatives.tif").astype(bool)
        t = false_negative_overlap(fourier_fn, {m["arch"]: fn})
        t.insert(0, "rf_nm", m["rf_nm"])
        t.insert(0, "rf_px", m["rf_px"])
        t.insert(0, "seed", m["seed"])
        t.insert(0, "arch", m["arch"])
        t.insert(0, "dataset", m["dataset"])
        tables.append(t)
    out = pd.concat(tables, ignore_index=True)
    write_csv(out, args.out)
    print(out.groupby(["arch", "rf_nm"], dropna=False)["jaccard"].mean().to_string())


# ---------------------------------------------------------------------------------------------------------- figures
FIGURES = {
    "dice-vs-rf": "hard and soft dice against RF per number of blocks, Fourier band (needs --metrics)",
    "dilation": "pooling vs dilation at N = 2 (needs --metrics)",
    "sizes": "recovered fraction against RF by particle size (needs --metrics, --particles)",
    "examples": "test segmentations with RF squares (needs --patches, --evals)",
    "false-negatives": "FN maps of Fourier filtering and networks (needs --patches, --fourier, --evals)",
    "fn-overlap": "Jaccard of FN maps, Fourier vs networks (needs --fn-overlap)",
    "edges": "zoomed edges, pooled vs dilated network (needs --patches, --evals POOLED DILATED)",
    "curves": "training and validation curves (needs --histories)",
    "erf": "effective receptive fields (needs --erfs, --models)",
    "series": "best RF against particle size and contrast across datasets (needs --metrics, --fingerprints)",
}


def _add_figure(sub):
    p = sub.add_parser("figure", help="draw one figure from result files (PNG + SVG)",
                       description="\n".join(f"{k}: {v}" for k, v in FIGURES.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=list(FIGURES))
    p.add_argument("--dataset", required=True)
    p.add_argument("--metrics", help="tidy metrics.csv of all runs")
    p.add_argument("--particles", nargs="+", default=[], help="particles.csv files")
    p.add_argument("--patches", help="patch folder of the dataset")
    p.add_argument("--evals", nargs="+", default=[], help="evaluation folders")
    p.add_argument("--fourier", help="Fourier baseline folder")
    p.add_argument("--fn-overlap", help="fn_overlap.csv")
    p.add_argument("--histories", nargs="+", default=[], help="history.csv files")
    p.add_argument("--erfs", nargs="+", default=[], help="ERF TIFFs")
    p.add_argument("--models", nargs="+", default=[], help="model.json files matching --erfs")
    p.add_argument("--fingerprints", nargs="+", default=[], help="fingerprint CSV files")
    p.add_argument("--out", required=True, help="PNG to write (an SVG is written beside it)")
    p.set_defaults(func=_run_figure)


def _run_figure(args):
    from rfseg.figures import maps, rf, training

    def need(**kw):
        missing = [k.replace("_", "-") for k, v in kw.items() if not v]
        if missing:
            raise UserError(f"figure {args.kind} needs --{', --'.join(missing)}")

    k, ds, out = args.kind, args.dataset, args.out
    if k == "dice-vs-rf":
        need(metrics=args.metrics)
        rf.dice_vs_rf(args.metrics, ds, out)
    elif k == "dilation":
        need(metrics=args.metrics)
        rf.dilation_vs_pooling(args.metrics, ds, out)
    elif k == "sizes":
        need(metrics=args.metrics, particles=args.particles)
        rf.size_bins(args.particles, args.metrics, ds, out)
    elif k == "examples":
        need(patches=args.patches, evals=args.evals)
        maps.examples(args.patches, args.evals, ds, out)
    elif k == "false-negatives":
        need(patches=args.patches, fourier=args.fourier, evals=args.evals)
        maps.false_negatives(args.patches, args.fourier, args.evals, ds, out)
    elif k == "fn-overlap":
        need(fn_overlap=args.fn_overlap)
        maps.fn_overlap(args.fn_overlap, ds, out)
    elif k == "edges":
        need(patches=args.patches, evals=args.evals)
        if len(args.evals) != 2:
            raise UserError("figure edges needs --evals POOLED_DIR DILATED_DIR")
        maps.edges(args.patches, args.evals[0], args.evals[1], ds, out)
    elif k == "curves":
        need(histories=args.histories)
        training.curves(args.histories, ds, out)
    elif k == "series":
        need(metrics=args.metrics, fingerprints=args.fingerprints)
        rf.series(args.metrics, args.fingerprints, out)
    elif k == "erf":
        need(erfs=args.erfs, models=args.models)
        if len(args.erfs) != len(args.models):
            raise UserError("figure erf needs one --models file per --erfs file")
        maps.erf_maps(args.erfs, args.models, ds, out)
    print(f"wrote {out}")


def _add_erf(sub):
    p = sub.add_parser("erf", help="effective receptive field of a trained model on test patches (TIFF)")
    p.add_argument("--model", required=True, help="run folder with model.pt and model.json")
    p.add_argument("--patches", required=True)
    p.add_argument("--n-patches", type=int, default=16)
    p.add_argument("--out", required=True, help="TIFF to write")
    p.set_defaults(func=_run_erf)


def _run_erf(args):
    from rfseg.erf import run_erf

    r = run_erf(args.model, args.patches, args.out, args.n_patches)
    print(f"{r['arch']}: theoretical RF {r['rf_px']} px; half of the ERF mass within {r['erf50_px']} px")


def _add_dataset_table(sub):
    p = sub.add_parser("dataset-table", help="Table 1: patches, micrographs, particle fraction, pixel size")
    p.add_argument("patches", nargs="+", help="patch folders")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_dataset_table)


def _run_dataset_table(args):
    import pandas as pd

    from rfseg.data import load_summary
    from rfseg.io import write_csv

    rows = []
    for d in args.patches:
        s = load_summary(d)
        row = {"dataset": s["dataset"], "pixel_size_nm": s["pixel_size_nm"], "patch_size_px": s["patch_size_px"],
               "micrographs": s["n_images"]}
        for split, v in s["splits"].items():
            row[f"{split}_patches"] = v["patches"]
            row[f"{split}_particle_fraction"] = v["particle_fraction"]
        rows.append(row)
    df = pd.DataFrame(rows)
    write_csv(df, args.out)
    print(df.to_string(index=False))


# ---------------------------------------------------------------------------------------------------------- predict
def _add_predict(sub):
    p = sub.add_parser("predict", help="segment whole micrographs with trained models and measure the particles",
                       description="rfseg predict MODEL [MODEL ...] IMAGE_OR_GLOB [...] --out DIR: arguments that "
                                   "are folders with model.json are models, the rest are images (TIFF, DM3/DM4, "
                                   "SER/EMI, EMD) or glob patterns.")
    p.add_argument("paths", nargs="+", help="model folders, then images or glob patterns")
    p.add_argument("--out", required=True)
    p.add_argument("--select-best", metavar="SUMMARY_CSV",
                   help="use only the models of the architecture with the best mean hard dice in this summary")
    p.add_argument("--dataset", help="with --select-best: the dataset whose ranking to use")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--tta", action="store_true", help="average the 8 dihedral transforms")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tile", type=int, help="tile size in px (default: the training patch size)")
    p.add_argument("--overlap", type=float, default=0.5, help="tile overlap as a fraction of the tile (0-0.9)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bfloat16 on a CPU that supports it, float32 on a GPU (faster there); fp32: reference")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the models with freezing: 10-15 s once, then faster tiles (many or large "
                        "micrographs)")
    p.add_argument("--on-pixel-mismatch", choices=["resample", "refuse"], default="resample")
    p.add_argument("--pixel-size", type=_positive_float, help="nm/px for images without one")
    p.add_argument("--min-area-nm2", type=float, default=0.0, help="drop particles smaller than this")
    p.add_argument("--drop-border", action="store_true", help="drop particles touching the image border")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_run_predict)


def _run_predict(args):
    from rfseg.predict import predict, select_best

    models = [p for p in args.paths if (Path(p) / "model.json").is_file()]
    images = [p for p in args.paths if p not in models]
    if not models:
        raise UserError("no model given: the first arguments must be run folders with model.pt and model.json")
    if not images:
        raise UserError("no image given: add micrograph files or glob patterns after the models")
    if not 0 <= args.overlap < 0.95:
        raise UserError(f"--overlap must be in [0, 0.95), got {args.overlap}")
    if args.select_best:
        if not args.dataset:
            raise UserError("--select-best needs --dataset")
        models = select_best(args.select_best, args.dataset, models)
    summary = predict(models, images, args.out, device=args.device, tta=args.tta, batch_size=args.batch_size,
                      tile=args.tile, overlap=args.overlap, precision=args.precision,
                      compile=args.compile,
                      on_pixel_mismatch=args.on_pixel_mismatch,
                      pixel_size_nm=args.pixel_size, min_area_nm2=args.min_area_nm2, drop_border=args.drop_border,
                      threads=args.threads)
    print(f"segmented {len(summary)} micrographs with {len(models)} model(s) of {summary['arch'].iloc[0]}: "
          f"{int(summary['particles'].sum())} particles -> {args.out}")


# ---------------------------------------------------------------------------------------------- fingerprint, recommend
def _add_fingerprint(sub):
    p = sub.add_parser("fingerprint", help="particle size, contrast, fringe strength and balance of a dataset")
    p.add_argument("--preprocessed", required=True)
    p.add_argument("--patches", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--material", default="Au")
    p.add_argument("--out", required=True, help="CSV (one row)")
    p.set_defaults(func=_run_fingerprint)


def _run_fingerprint(args):
    import pandas as pd

    from rfseg.fingerprint import fingerprint
    from rfseg.io import write_csv

    fp = fingerprint(args.preprocessed, args.patches, args.dataset, args.material)
    write_csv(pd.DataFrame([fp]), args.out)
    print(pd.Series(fp).to_string())


def _add_recommend(sub):
    p = sub.add_parser("recommend", help="recommended architecture and RF for a dataset")
    p.add_argument("target", help="a dataset name (with --results or --fingerprints) or a fingerprint CSV")
    p.add_argument("--results", help="summary.csv of a sweep (measured recommendation)")
    p.add_argument("--fingerprints", nargs="*", default=[], help="fingerprint CSV files to look the dataset up in")
    p.add_argument("--patch-px", type=int, default=512, help="patch size the architecture must fit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_recommend)


def _run_recommend(args):
    import pandas as pd

    from rfseg.recommend import best_rf, from_fingerprint

    target = args.target
    rec = None
    if args.results:
        if not Path(args.results).is_file():
            raise UserError(f"{args.results}: results file not found")
        summary = pd.read_csv(args.results)
        if target in set(summary["dataset"]):
            rec = best_rf(summary, target)
    if rec is None:
        fps = [Path(target)] if target.endswith(".csv") else [Path(f) for f in args.fingerprints]
        rows = pd.concat([pd.read_csv(f) for f in fps if f.is_file()], ignore_index=True) if fps else pd.DataFrame()
        if target.endswith(".csv") and not rows.empty:
            rec = from_fingerprint(rows.iloc[0].to_dict(), args.patch_px)
        elif not rows.empty and target in set(rows["dataset"]):
            rec = from_fingerprint(rows[rows["dataset"] == target].iloc[0].to_dict(), args.patch_px)
    if rec is None:
        raise UserError(f"unknown dataset {target!r}: give --results with its sweep, --fingerprints with its "
                        f"fingerprint, or a fingerprint CSV")
    if args.json:
        print(json.dumps(rec, indent=2))
        return
    nm = f" = {rec['rf_nm']:.3g} nm" if rec.get("rf_nm") else ""
    print(f"{rec['dataset']}: use {rec['arch']} (RF {rec['rf_px']} px{nm}) [{rec['basis']}]\n  {rec['reason']}")


# ---------------------------------------------------------------------------------------------------------- main
class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (no usage block): ``rfseg arch: error: ...``, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rfseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('rfseg').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


_SUBCOMMANDS = [_add_arch, _add_arch_table, _add_simulate, _add_preprocess, _add_patches,
                _add_train, _add_evaluate, _add_aggregate, _add_fourier, _add_fn_overlap,
                _add_figure, _add_erf, _add_dataset_table, _add_predict,
                _add_fingerprint, _add_recommend]


def _log_job_environment():
    """Under SLURM, one line naming the scheduler job and the GPUs it was given, for the job's log."""
    import os

    if "SLURM_JOB_ID" not in os.environ:
        return
    keys = {"SLURM_JOB_ID": "slurm_job", "CUDA_VISIBLE_DEVICES": "cuda_visible_devices"}
    print("[rfseg] " + " ".join(f"{v}={os.environ.get(k, '-')}" for k, v in keys.items()), flush=True,
          file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "arch":
        _log_job_environment()
    try:
        args.func(args)
    except UserError as e:
        print(f"rfseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rfseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
