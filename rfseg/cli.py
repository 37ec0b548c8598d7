"""rfseg: receptive field and network complexity of residual UNets for nanoparticle segmentation in TEM.

Each command parses its arguments and calls one stage function (rfseg.stages); defaults live in those functions
and are shown in each command's --help. A user mistake becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys

from rfseg.errors import UserError


# ------------------------------------------------------------------------------------------------ argument types
def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _list_of(kind):
    """An argparse type: comma-separated values of ``kind`` (float, int or str)."""
    noun = {float: "numbers", int: "integers"}.get(kind, f"{kind.__name__} values")

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(t) for t in text.split(",") if t)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {noun}, got {text!r}") from None
    return parse


_float_list = _list_of(float)


def _number(kind, minimum, strict: bool, what: str):
    """An argparse type: a ``kind`` (int or float) at least (or, ``strict``, above) ``minimum``."""
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not (v > minimum if strict else v >= minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_positive_float = _number(float, 0, True, "a positive number")
_positive_int = _number(int, 1, False, "a whole number of at least 1")
_non_negative_float = _number(float, 0, False, "a number of at least 0")


def _tile(text: str) -> int | str:
    """--tile: "auto" or a tile size in px."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a tile size in px, got {text!r}") from None


def _defaults(fn) -> dict:
    """Keyword defaults of a stage function (or dataclass): the one place where they are set."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def _opt(p, flag, fn, name=None, help="", **kw):
    """An option whose default is the stage function's: left out of the call when not given, shown in --help."""
    name = name or flag.lstrip("-").replace("-", "_")
    default = _defaults(fn).get(name)
    flag_only = kw.get("action") in ("store_true", "store_false")
    shown = "" if flag_only or default in (None, False, (), "") else f" (default: {default})"
    p.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=help + shown, **kw)


def _given(args, *names) -> dict:
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def _progress(iterable, total, desc):
    """A tqdm bar on a terminal; in a log file (Snakemake jobs) one line per item with the elapsed time."""
    import time

    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, mininterval=2)
        return
    t0 = time.perf_counter()
    for i, item in enumerate(iterable, start=1):
        yield item  # the caller's work on the item runs here: it is done when the loop comes back
        print(f"{desc}: {i}/{total} done ({time.perf_counter() - t0:.0f} s)", flush=True)


# ---------------------------------------------------------------------------------------------------------- arch
def _add_arch(p):
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
    from rfseg.blocks.models import ArchSpec, describe, sweep

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


def _add_arch_table(p):
    p.add_argument("--blocks", type=int, nargs="+", required=True, help="one or more N")
    p.add_argument("--max-rf-px", type=int, required=True, help="keep architectures whose RF is at most this")
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(func=_run_arch_table)


def _run_arch_table(args):
    from rfseg.stages.tables import architecture_table

    df = architecture_table(args.blocks, args.max_rf_px, args.out)
    print(f"wrote {len(df)} architectures to {args.out}")


# ---------------------------------------------------------------------------------------------------------- data
def _add_simulate(p):
    from rfseg.blocks.simulate.hrtem import KNOBS, simulate_image
    from rfseg.stages.simulate import KINDS, simulate

    p.add_argument("kind", choices=KINDS)
    p.add_argument("--n-images", type=_positive_int, required=True)
    p.add_argument("--seed", type=int, required=True)
    _opt(p, "--size", simulate, help="image size in px", type=_positive_int)
    _opt(p, "--pixel-size", simulate, "pixel_size_nm", type=_positive_float,
         help="nm/px (default 0.02152 hrtem, 0.1243 lowres)")
    _opt(p, "--diameter-nm", simulate, type=_float_list, help="particle diameter range, e.g. 2,6")
    _opt(p, "--dose", simulate, "dose_e_per_A2", type=_float_list,
         help="dose in e/A^2: a range lo,hi (hrtem) or one value (lowres)")
    _opt(p, "--carbon-thickness-nm", simulate, type=_float_list, help="hrtem: support thickness range, e.g. 3,5")
    _opt(p, "--defocus-offset-nm", simulate, type=float, help="hrtem: defocus away from Scherzer")
    _opt(p, "--threads", simulate, type=_positive_int, help="CPU cores (hrtem: that many micrographs at once, same result)")
    for key, (name, factor, kind, text) in KNOBS.items():  # HRTEM realism knobs, in the units their names state
        default = _defaults(simulate_image)[name]
        listed = isinstance(default, tuple)
        shown = ",".join(map(str, default)) if listed else default / factor if factor != 1 else default
        kw = ({"action": argparse.BooleanOptionalAction} if kind is bool
              else {"type": _list_of(kind) if listed else kind})
        p.add_argument("--" + key.replace("_", "-"), dest=key, default=argparse.SUPPRESS,
                       help=f"hrtem: {text} (default: {shown})", **kw)
    p.add_argument("--out", required=True, help="output folder (images/, masks/, manifest.csv)")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args):
    from rfseg.blocks.simulate.hrtem import KNOBS
    from rfseg.stages.simulate import simulate

    df = simulate(args.kind, args.out, n_images=args.n_images, seed=args.seed,
                  progress=lambda it, n: _progress(it, n, f"simulate {args.kind}"),
                  **_given(args, "size", "pixel_size_nm", "diameter_nm", "dose_e_per_A2", "carbon_thickness_nm",
                           "defocus_offset_nm", "threads", *KNOBS))
    print(f"wrote {len(df)} {args.kind} micrographs to {args.out}")


def _add_preprocess(p):
    from rfseg.blocks.preprocess import FLAT_FIELDS
    from rfseg.stages.preprocess import preprocess

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="CSV with image, mask [, pixel_size_nm, group] columns")
    src.add_argument("--images", help="glob of image files (with --masks)")
    p.add_argument("--masks", help="mask path pattern with {stem}, e.g. 'data/masks/{stem}.tif'")
    _opt(p, "--pixel-size", preprocess, "pixel_size_nm", type=_positive_float,
         help="nm/px, overriding the files' own (needed for files without one)")
    _opt(p, "--xray-threshold", preprocess, type=float, help="remove pixels above median + this (raw counts)")
    _opt(p, "--xray-passes", preprocess, type=int, help="passes of x-ray removal")
    _opt(p, "--flat-field", preprocess, choices=FLAT_FIELDS,
         help="gaussian: divide by a blur of --flat-field-sigma-nm; bezier: the published networks' surface")
    _opt(p, "--flat-field-sigma-nm", preprocess, type=_positive_float, help="width of the Gaussian flat field")
    _opt(p, "--target-pixel-size", preprocess, "target_pixel_size_nm", type=_positive_float,
         help="resample to this many nm/px")
    _opt(p, "--uncalibrated", preprocess, action="store_true",
         help="accept images without a pixel size: lengths stay in px, nm columns are left empty")
    p.add_argument("--out", required=True, help="output folder (new, empty, or one rfseg wrote)")
    p.set_defaults(func=_run_preprocess)


def _run_preprocess(args):
    from rfseg.stages.preprocess import preprocess

    df = preprocess(args.out, manifest=args.manifest, images=args.images, masks=args.masks,
                    **_given(args, "pixel_size_nm", "xray_threshold", "xray_passes", "flat_field",
                             "flat_field_sigma_nm", "target_pixel_size_nm", "uncalibrated"))
    px = df.pixel_size_nm.iloc[0]
    px_text = "uncalibrated" if px is None or px != px else f"pixel size {px:.5g} nm/px"
    print(f"preprocessed {len(df)} micrographs into {args.out} ({px_text}, particle fraction "
          f"{df.particle_fraction.mean():.3f})")


def _add_patches(p):
    from rfseg.stages.patches import make_patches

    p.add_argument("--preprocessed", required=True, help="folder written by 'rfseg preprocess'")
    p.add_argument("--size", dest="patch_size_px", type=_positive_int, required=True, help="patch size in px")
    _opt(p, "--min-particle-px", make_patches, type=int, help="drop patches with at most this many particle px")
    _opt(p, "--fractions", make_patches, type=_float_list, help="train,val,test shares of the patches")
    _opt(p, "--folds", make_patches, type=int, help="k-fold cross-validation over micrographs instead of fractions")
    _opt(p, "--fold", make_patches, type=int, help="with --folds: which fold is the test set")
    _opt(p, "--dataset", make_patches, help="dataset name, for messages and the summary")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_patches)


def _run_patches(args):
    from rfseg.stages.patches import make_patches

    s = make_patches(args.preprocessed, args.out, patch_size_px=args.patch_size_px,
                     **_given(args, "min_particle_px", "fractions", "folds", "fold", "dataset"))
    counts = ", ".join(f"{k} {v['patches']} patches / {v['micrographs']} micrographs" for k, v in s["splits"].items())
    print(f"{s['dataset'] or args.out}: {counts}")


# ---------------------------------------------------------------------------------------------- train, evaluate
def _add_train(p):
    from rfseg.blocks.augment import AUGMENTS
    from rfseg.blocks.runtime import DEVICES, PRECISIONS
    from rfseg.stages.train import HEAD_BIASES, HEAD_INITS, LR_SCHEDULES, SELECTS, TrainConfig, train

    p.add_argument("--patches", required=True, help="folder written by 'rfseg patches'")
    p.add_argument("--arch", required=True, help="canonical architecture name, e.g. n2_p44")
    p.add_argument("--seed", type=int, required=True)
    _describe(p, "Train one model bundle; the defaults are the paper's protocol (the workflow passes the config's).")
    _opt(p, "--epochs", TrainConfig, type=_positive_int, help="training epochs")
    _opt(p, "--batch-size", TrainConfig, type=_positive_int, help="patches per step")
    _opt(p, "--lr", TrainConfig, type=_positive_float, help="Adam learning rate")
    _opt(p, "--augment", TrainConfig, choices=AUGMENTS,
         help="all8: every patch in all 8 dihedral forms per epoch (the paper); random8: one random form")
    _opt(p, "--precision", TrainConfig, choices=PRECISIONS, help="auto: bfloat16 autocast where supported")
    _opt(p, "--no-channels-last", TrainConfig, "channels_last", action="store_false", help="train in NCHW")
    _opt(p, "--device", TrainConfig, choices=DEVICES, help="auto: the GPU when one is visible")
    _opt(p, "--early-stopping", TrainConfig, "early_stopping_patience", type=int,
         help="stop after this many epochs without val-dice gain (off by default, as in the paper)")
    _opt(p, "--select", TrainConfig, choices=list(SELECTS), help="weights saved as model.pt")
    _opt(p, "--head-bias", TrainConfig, choices=HEAD_BIASES,
         help="initial bias of the output layer: prior = log of the training masks' class fractions; zero = the paper")
    _opt(p, "--head-bias-lr-scale", TrainConfig, type=_positive_float,
         help="learning rate of the output layer's bias relative to --lr (1 = the paper)")
    _opt(p, "--head-init", TrainConfig, choices=list(HEAD_INITS),
         help="initial weights of the output layer: small: N(0, 0.01^2), near-zero logits; kaiming: the paper")
    _opt(p, "--lr-schedule", TrainConfig, choices=LR_SCHEDULES,
         help="constant (the paper) or cosine: every learning rate decays along half a cosine to 0 at the end")
    _opt(p, "--ema-halflife", TrainConfig, "ema_halflife_epochs", type=_positive_float,
         help="validate, select and save an exponential moving average of the weights with this half-life in epochs "
              "(off by default, as in the paper)")
    _opt(p, "--checkpoint", train, help="per-epoch checkpoint for exact resume (default: OUT/checkpoint.pt)")
    _opt(p, "--threads", train, type=_positive_int, help="CPU threads")
    _opt(p, "--dataset", train, help="dataset name, recorded in model.json")
    p.add_argument("--out", required=True, help="bundle folder: model.pt, model.json, history.csv")
    p.set_defaults(func=_run_train)


def _run_train(args):
    from rfseg.stages.train import TrainConfig, train

    cfg = TrainConfig(**_given(args, "epochs", "batch_size", "lr", "augment", "precision", "channels_last",
                               "device", "early_stopping_patience", "select", "head_bias", "head_bias_lr_scale",
                               "head_init", "lr_schedule", "ema_halflife_epochs"))
    print(f"training {args.arch} seed {args.seed} on {args.patches}", flush=True)
    meta = train(args.patches, args.out, args.arch, args.seed, cfg, **_given(args, "checkpoint", "threads",
                                                                            "dataset"))
    print(f"done: {meta['epochs_run']} epochs, final val dice {meta['final']['val_dice']:.4f}, "
          f"weights: {meta['weights']} -> {args.out}")


def _add_evaluate(p):
    from rfseg.blocks.runtime import DEVICES
    from rfseg.stages.evaluate import PUBLISHED_FLAT_FIELDS, evaluate

    p.add_argument("--model", required=True, help="bundle folder with model.pt and model.json")
    p.add_argument("--patches", required=True)
    p.add_argument("--dataset", required=True)
    _opt(p, "--preprocessed", evaluate, help="the dataset's preprocessed folder (needed for published networks)")
    _opt(p, "--tta", evaluate, action="store_true", help="average the 8 dihedral transforms")
    _opt(p, "--published-flat-field", evaluate, choices=PUBLISHED_FLAT_FIELDS,
         help="a published network's flat field: bundle (its own recipe) or none (the test micrographs are windows "
              "of larger micrographs flat-fielded as a whole)")
    _opt(p, "--device", evaluate, choices=DEVICES)
    _opt(p, "--threads", evaluate, type=_positive_int)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args):
    from rfseg.stages.evaluate import evaluate

    row = evaluate(args.model, args.patches, args.out, args.dataset,
                   **_given(args, "preprocessed", "tta", "device", "threads", "published_flat_field"))
    print(f"{row['dataset']} {row['arch']} seed {row['seed']}: hard dice {row['hard_dice']:.4f}, soft dice "
          f"{row['soft_dice']:.4f}, global dice {row['global_dice']:.4f} on {row['n_test_patches']} patches")


def _add_aggregate(p):
    p.add_argument("rows", nargs="+", help="metrics.csv files")
    p.add_argument("--out-rows", required=True, help="all rows in one tidy CSV")
    p.add_argument("--out", required=True, help="mean/std per dataset, method and architecture")
    p.set_defaults(func=_run_aggregate)


def _run_aggregate(args):
    from rfseg.stages.aggregate import aggregate

    summary = aggregate(args.rows, args.out_rows, args.out)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def _add_paired(p):
    from rfseg.stages.paired import paired

    p.add_argument("--dataset", required=True)
    p.add_argument("--patches", nargs="+", required=True,
                   help="the dataset's patch folder (under cross-validation: every fold's)")
    p.add_argument("--evals", nargs="+", required=True, help="evaluation folders of the dataset (trained and published)")
    _opt(p, "--reference", paired, help="architecture the differences are taken against (default: smallest RF)")
    _opt(p, "--resamples", paired, type=int, help="bootstrap resamples (micrographs and seeds)")
    _opt(p, "--seed", paired, type=int, help="seed of the bootstrap draws")
    p.add_argument("--out", required=True, help="CSV: one row per architecture with the difference and its interval")
    p.add_argument("--per-micrograph", help="CSV of the per-micrograph scores the differences come from")
    p.set_defaults(func=_run_paired)


def _run_paired(args):
    from rfseg.stages.paired import paired

    t = paired(args.patches, args.evals, args.dataset, args.out, args.per_micrograph,
               **_given(args, "reference", "resamples", "seed"))
    flagged = t[t["n_flagged"] > 0]
    if len(flagged):
        print(f"flagged runs (no particle or every pixel predicted, or a loss that never fell): "
              f"{', '.join(f'{a} ({n})' for a, n in zip(flagged['arch'], flagged['n_flagged']))}", file=sys.stderr)
    for r in t.itertuples():
        print(f"{args.dataset} {r.arch}: {r.score_mean:.4f}, minus {r.reference} {r.diff_mean:+.4f} "
              f"[{r.diff_ci_low:+.4f}, {r.diff_ci_high:+.4f}] ({r.n_micrographs} micrographs, {r.n_seeds} seeds)")


# ---------------------------------------------------------------------------------------------------------- fourier
def _add_fourier(p):
    from rfseg.stages.baseline import run_baseline

    p.add_argument("--patches", required=True)
    p.add_argument("--dataset", required=True)
    _opt(p, "--material", run_baseline, help="lattice spacings from the built-in table (Au, Ag, Pt, ...)")
    _opt(p, "--spacings-nm", run_baseline, type=_float_list, help="lattice plane spacings in nm (not --material)")
    _opt(p, "--radii-px", run_baseline, type=_float_list, help="annulus radii lo,hi in FFT px (overrides spacings)")
    _opt(p, "--rel-tol", run_baseline, type=float, help="relative widening of the annulus")
    _opt(p, "--sigma-nm", run_baseline, type=_positive_float, help="Gaussian blur of the magnitude, nm")
    _opt(p, "--window", run_baseline, action="store_true", help="Hann window before the FFT (off, as in the paper: "
         "on small patches it erases particles near the edges)")
    p.add_argument("--out", required=True, help="output folder (metrics.csv, masks.tif, false_negatives.tif)")
    p.set_defaults(func=_run_fourier)


def _run_fourier(args):
    from rfseg.stages.baseline import run_baseline

    row = run_baseline(args.patches, args.out, args.dataset,
                       **_given(args, "material", "spacings_nm", "radii_px", "rel_tol", "sigma_nm", "window"))
    if row.get("note"):
        print(f"{args.dataset}: Fourier baseline {row['note']}")
    else:
        print(f"{args.dataset} fourier: annulus {row['annulus_lo_px']:.1f}-{row['annulus_hi_px']:.1f} px, hard dice "
              f"{row['hard_dice']:.4f}, global dice {row['global_dice']:.4f}")


def _add_fn_overlap(p):
    p.add_argument("--fourier", required=True, help="folder written by 'rfseg fourier'")
    p.add_argument("--networks", nargs="+", required=True, help="folders written by 'rfseg evaluate'")
    p.add_argument("--out", required=True, help="CSV")
    p.set_defaults(func=_run_fn_overlap)


def _run_fn_overlap(args):
    from rfseg.stages.baseline import fn_overlap

    out = fn_overlap(args.fourier, args.networks, args.out)
    if out.empty:
        print(f"no Fourier false-negative maps in {args.fourier}: wrote an empty table")
    else:
        print(out.groupby(["arch", "rf_nm"], dropna=False)["jaccard"].mean().to_string())


# ---------------------------------------------------------------------------------------------------------- figures
def _add_figure(p):
    from rfseg.figures import FIGURES

    _describe(p, description="\n".join(f"{k}: {v[0]} (needs --{', --'.join(v[1])})" for k, v in FIGURES.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=list(FIGURES))
    p.add_argument("--dataset", required=True)
    p.add_argument("--metrics", help="tidy metrics.csv of all runs")
    p.add_argument("--particles", nargs="+", default=[], help="particles.csv files")
    p.add_argument("--patches", help="patch folder of the dataset")
    p.add_argument("--evals", nargs="+", default=[], help="evaluation folders")
    p.add_argument("--fourier", help="Fourier baseline folder")
    p.add_argument("--fn-overlap", help="fn_overlap.csv")
    p.add_argument("--models", nargs="+", default=[], help="model bundle folders")
    p.add_argument("--erfs", nargs="+", default=[], help="ERF TIFFs, one per --models folder")
    p.add_argument("--fingerprints", nargs="+", default=[], help="fingerprint CSV files")
    p.add_argument("--paired", nargs="+", default=[], help="paired.csv files (rfseg paired)")
    p.add_argument("--out", required=True, help="PNG to write (an SVG is written beside it)")
    p.set_defaults(func=_run_figure)


def _run_figure(args):
    from rfseg.figures import draw

    draw(args.kind, args.dataset, args.out, **_given(args, "metrics", "particles", "patches", "evals", "fourier",
                                                     "fn_overlap", "models", "erfs", "fingerprints", "paired"))
    print(f"wrote {args.out}")


def _add_erf(p):
    from rfseg.stages.erf import run_erf

    p.add_argument("--model", required=True, help="bundle folder with model.pt and model.json")
    p.add_argument("--patches", required=True)
    _opt(p, "--n-patches", run_erf, type=_positive_int, help="test patches to average over")
    p.add_argument("--out", required=True, help="TIFF to write")
    p.set_defaults(func=_run_erf)


def _run_erf(args):
    from rfseg.stages.erf import run_erf

    r = run_erf(args.model, args.patches, args.out, **_given(args, "n_patches"))
    print(f"{r['arch']}: theoretical RF {r['rf_px']} px; half of the ERF mass within {r['erf50_px']} px")


def _add_dataset_table(p):
    p.add_argument("patches", nargs="+", help="patch folders")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_dataset_table)


def _run_dataset_table(args):
    from rfseg.stages.tables import dataset_table

    print(dataset_table(args.patches, args.out).to_string(index=False))


# ---------------------------------------------------------------------------------------------------------- predict
def _add_predict(p):
    from rfseg.blocks.inference import AUTO_TILE_PX, MAX_OVERLAP
    from rfseg.blocks.predictor import COMPILE, COMPILE_AFTER_MPX
    from rfseg.blocks.runtime import DEVICES, PRECISIONS
    from rfseg.stages.predict import predict

    _describe(p, description="rfseg predict MODEL [MODEL ...] IMAGE_OR_GLOB [...] --out DIR: the models are model "
                                   "folders (model.pt + model.json), folders of them (an ensemble) or shipped models' "
                                   "names (rfseg models lists them, e.g. au-5nm-423e); the rest are images (TIFF, "
                                   "DM3/DM4, SER/EMI, EMD) or glob patterns.")
    p.add_argument("paths", nargs="+", help="models (folders or shipped names), then images or glob patterns")
    p.add_argument("--out", required=True, help="output folder (new, empty, or one rfseg wrote)")
    p.add_argument("--select-best", metavar="SUMMARY_CSV",
                   help="use only the models of the architecture with the best mean hard dice in this summary")
    p.add_argument("--dataset", help="with --select-best: the dataset whose ranking to use")
    _opt(p, "--device", predict, choices=DEVICES)
    _opt(p, "--tta", predict, action="store_true", help="average the 8 dihedral transforms")
    _opt(p, "--batch-size", predict, type=int, help="tiles per batch")
    _opt(p, "--tile", predict, type=_tile,
         help=f"auto: tiles of up to {AUTO_TILE_PX} px fitted to each micrograph and stitched exactly (the "
              "whole-micrograph result); or a tile size in px, Gaussian-blended with --overlap")
    _opt(p, "--overlap", predict, type=float,
         help=f"with --tile PX: tile overlap as a fraction of the tile (0-{MAX_OVERLAP})")
    _opt(p, "--precision", predict, choices=PRECISIONS,
         help="auto: bfloat16 on a CPU that supports it, float32 on a GPU (faster there); fp32: reference")
    _opt(p, "--compile", predict, nargs="?", const="on", choices=COMPILE,
         help="torch.compile the models with freezing: 12-18 s once, then faster tiles; auto: on a CPU once the "
              f"job's tiles, those of the micrographs still to come included, reach {COMPILE_AFTER_MPX:g} Mpx per "
              "model; a bare --compile is on")
    _opt(p, "--on-pixel-mismatch", predict, choices=["resample", "refuse"])
    _opt(p, "--pixel-size", predict, "pixel_size_nm", type=_positive_float,
         help="nm/px for images without one; it overrides a file's own, with a warning (summary.csv keeps both)")
    _opt(p, "--min-area-px", predict, type=_non_negative_float,
         help="drop components smaller than this many px² (default: a quarter of the 1st-percentile area of the "
              "whole particles the network was trained on)")
    _opt(p, "--min-area-nm2", predict, type=_non_negative_float, help="drop components smaller than this many nm²")
    _opt(p, "--keep-all", predict, action="store_true", help="keep every component and fill no hole")
    _opt(p, "--split-touching", predict, action="store_true",
         help="split touching particles by a distance-transform watershed (off by default)")
    _opt(p, "--split-min-distance-nm", predict, type=_positive_float,
         help="with --split-touching: seeds at least this far apart (default: half the median training diameter)")
    _opt(p, "--drop-border", predict, action="store_true",
         help="drop particles touching the image border (always flagged in touches_border)")
    _opt(p, "--skip-bad", predict, action="store_true",
         help="segment the micrographs that can be and list the others, with why, in summary.csv (status); without "
              "it one that cannot be segmented stops the run before any is")
    _opt(p, "--threads", predict, type=_positive_int)
    p.set_defaults(func=_run_predict)


def _run_predict(args):
    from rfseg.api import is_model, model_folders
    from rfseg.stages.predict import predict, select_best

    models = [p for p in args.paths if is_model(p)]
    images = [p for p in args.paths if p not in models]
    if not models:
        raise UserError("no model given: the first arguments must be model folders (model.pt + model.json), a "
                        "folder of them, or a shipped model's name (rfseg models lists them)")
    if not images:
        raise UserError("no image given: add micrograph files or glob patterns after the models")
    models = model_folders(models)
    if args.select_best:
        if not args.dataset:
            raise UserError("--select-best needs --dataset")
        models = select_best(args.select_best, args.dataset, models)
    summary = predict(models, images, args.out, progress=lambda it: _progress(it, len(it), "predict"),
                      **_given(args, "device", "tta", "batch_size", "tile", "overlap", "precision", "compile",
                               "on_pixel_mismatch", "pixel_size_nm", "min_area_px", "min_area_nm2", "keep_all",
                               "split_touching", "split_min_distance_nm", "drop_border", "skip_bad", "threads"),
                      warn=lambda text: print(f"rfseg predict: warning: {text}", file=sys.stderr, flush=True))
    skipped = summary[summary["status"] != "ok"]
    summary = summary[summary["status"] == "ok"]
    if len(skipped):
        print(f"skipped {len(skipped)} micrograph(s) that cannot be segmented (listed in summary.csv): "
              f"{', '.join(skipped['image'])}", file=sys.stderr)
    print(f"segmented {len(summary)} micrographs with {len(models)} model(s) of {summary['arch'].iloc[0]}: "
          f"{int(summary['particles'].sum())} particles -> {args.out}")


# ---------------------------------------------------------------------------------------------- published networks
def _add_import(p):
    from rfseg.stages.importer import import_network

    _describe(p, "Read a published network of the paper's lab (never executing its pickle), check that it fits the "
                 "residual UNet family and write an rfseg bundle. With --shipped SRC, regenerate the bundles "
                 "shipped in resources/pretrained from the lab's files in SRC.")
    p.add_argument("checkpoint", nargs="?", help="the lab's .h5/.pt file (a pickled UNet)")
    p.add_argument("--out", help="bundle folder to write (with --shipped: the folder of all shipped bundles)")
    p.add_argument("--shipped", metavar="SRC", help="regenerate every shipped bundle from the lab's folder SRC")
    _opt(p, "--details", import_network, help="the lab's model_details.csv (pixel size, dataset, dose, fold)")
    _opt(p, "--pixel-size", import_network, "pixel_size_nm", type=_positive_float,
         help="nm/px of the training data (without --details)")
    _opt(p, "--name", import_network, help="bundle name for tables and ensembles, e.g. au-5nm-423e")
    _opt(p, "--member", import_network, help="member name within an ensemble, e.g. fold0")
    _opt(p, "--repository", import_network, help="source repository, recorded in model.json")
    _opt(p, "--license", import_network, help="license of the source, recorded in model.json")
    p.set_defaults(func=_run_import)


def _run_import(args):
    from rfseg.stages.importer import PRETRAINED, import_network, import_shipped

    if args.shipped:
        metas = import_shipped(args.shipped, args.out or PRETRAINED)
        print(f"wrote {len(metas)} bundles into {args.out or PRETRAINED}")
        return
    if not args.checkpoint or not args.out:
        raise UserError("give a CHECKPOINT and --out (or --shipped SRC)")
    meta = import_network(args.checkpoint, args.out, **_given(args, "details", "pixel_size_nm", "name", "member",
                                                              "repository", "license"))
    print(f"{args.checkpoint}: {meta['name']} ({meta['params']:,} parameters, RF {meta['rf_px']} px = "
          f"{meta['rf_nm']:.3g} nm at {meta['pixel_size_nm']:g} nm/px) -> {args.out}")


def _add_models(p):
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_models)


def _run_models(args):
    from rfseg.stages.importer import shipped_models

    table = shipped_models()
    if table.empty:
        raise UserError("no shipped model bundles found under resources/pretrained")
    if args.json:
        print(table.to_json(orient="records", indent=2))
        return
    print(table.drop(columns=["source"]).to_string(index=False))
    print(f"source: {table['source'].iloc[0]}; segment with: rfseg predict {table['name'].iloc[0]} IMAGES --out DIR")


# ---------------------------------------------------------------------------------------------- fingerprint, recommend
def _add_fingerprint(p):
    from rfseg.stages.fingerprint import LAB_FLAT_FIELDS, fingerprint

    p.add_argument("--preprocessed", required=True)
    p.add_argument("--patches", required=True)
    p.add_argument("--dataset", required=True)
    _opt(p, "--material", fingerprint, help="lattice spacings for the fringe share")
    _opt(p, "--published-flat-field", fingerprint, choices=list(LAB_FLAT_FIELDS),
         help="the lab contrast's flat field: bundle (the published networks' own) or none (windows of larger "
              "micrographs flat-fielded as a whole)")
    p.add_argument("--out", required=True, help="CSV (one row)")
    p.set_defaults(func=_run_fingerprint)


def _run_fingerprint(args):
    import pandas as pd

    from rfseg.stages.fingerprint import fingerprint

    fp = fingerprint(args.preprocessed, args.patches, args.dataset, args.out,
                     **_given(args, "material", "published_flat_field"))
    print(pd.Series(fp).to_string())


def _add_recommend(p):
    from rfseg.stages.recommend import recommend

    p.add_argument("target", help="a dataset name (with --results or --fingerprints) or a fingerprint CSV")
    p.add_argument("--paired", nargs="*", default=[],
                   help="paired.csv files of sweeps (rfseg paired): the measured recommendation, by intervals")
    p.add_argument("--results", help="summary.csv of a sweep without paired files (one-seed-std rule)")
    p.add_argument("--fingerprints", nargs="*", default=[], help="fingerprint CSV files to look the dataset up in")
    _opt(p, "--evidence", recommend, help="folder with paired.csv and fingerprints.csv of a series, used for "
         "datasets known only by their fingerprint (default: the series shipped in resources/series)")
    _opt(p, "--patch-px", recommend, type=int, help="patch size the architecture must fit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_recommend)


def _run_recommend(args):
    from rfseg.stages.recommend import recommend

    rec = recommend(args.target, args.results, args.fingerprints, paired=args.paired,
                    **_given(args, "patch_px", "evidence"))
    if args.json:
        print(json.dumps(rec, indent=2))
        return
    nm = f" = {rec['rf_nm']:.3g} nm" if rec.get("rf_nm") else ""
    if rec.get("resolved") is False and rec["basis"].startswith("cannot tell"):
        print(f"{rec['dataset']}: {rec['basis']}; the cheapest RF is {rec['arch']} (RF {rec['rf_px']} px{nm})\n  "
              f"{rec['reason']}")
        return
    print(f"{rec['dataset']}: use {rec['arch']} (RF {rec['rf_px']} px{nm}) [{rec['basis']}]\n  {rec['reason']}")


# ---------------------------------------------------------------------------------------------------------- main
class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (no usage block): ``rfseg arch: error: ...``, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


#: every command: its name, the module whose code it runs (the workflow fingerprints each job by that module's
#: import closure), the function adding its options, and its one-line help
_SUBCOMMANDS = [
    ("arch", "rfseg.blocks.models", _add_arch,
     "parameters, receptive field and canonical name of a UNet architecture"),
    ("arch-table", "rfseg.stages.tables", _add_arch_table,
     "CSV of every pooling combination (per N) that fits a patch, by RF"),
    ("simulate", "rfseg.stages.simulate", _add_simulate,
     "make a demo dataset: simulated micrographs with exact masks"),
    ("preprocess", "rfseg.stages.preprocess", _add_preprocess,
     "x-ray removal, flat field, resampling, standardisation of a dataset"),
    ("patches", "rfseg.stages.patches", _add_patches,
     "cut preprocessed micrographs into patches and split them by micrograph"),
    ("train", "rfseg.stages.train", _add_train,
     "train one architecture on one dataset with one seed (resumes if interrupted)"),
    ("evaluate", "rfseg.stages.evaluate", _add_evaluate,
     "score a model bundle on the test patches"),
    ("aggregate", "rfseg.stages.aggregate", _add_aggregate,
     "collect metrics rows and compute mean ± std over seeds"),
    ("paired", "rfseg.stages.paired", _add_paired,
     "paired differences between RFs per test micrograph and seed, with bootstrap intervals"),
    ("fourier", "rfseg.stages.baseline", _add_fourier,
     "Fourier-filter baseline on the test patches (annulus from the lattice)"),
    ("fn-overlap", "rfseg.stages.baseline", _add_fn_overlap,
     "Jaccard of false-negative maps: Fourier filtering vs each network"),
    ("figure", "rfseg.figures", _add_figure,
     "draw one figure from result files (PNG + SVG)"),
    ("erf", "rfseg.stages.erf", _add_erf,
     "effective receptive field of a model on test patches (TIFF)"),
    ("dataset-table", "rfseg.stages.tables", _add_dataset_table,
     "Table 1: patches, micrographs, particle fraction, pixel size"),
    ("predict", "rfseg.stages.predict", _add_predict,
     "segment whole micrographs with model bundles and measure the particles"),
    ("import", "rfseg.stages.importer", _add_import,
     "turn a published network of the paper's lab into an rfseg bundle, safely"),
    ("models", "rfseg.stages.importer", _add_models,
     "list the model bundles shipped with rfseg (segmentation without training)"),
    ("fingerprint", "rfseg.stages.fingerprint", _add_fingerprint,
     "particle size, contrast, fringe strength and balance of a dataset"),
    ("recommend", "rfseg.stages.recommend", _add_recommend,
     "recommended architecture and RF for a dataset"),
]
COMMANDS = {name: module for name, module, _, _ in _SUBCOMMANDS}


def _describe(p, description, formatter_class=argparse.HelpFormatter):
    p.description, p.formatter_class = description, formatter_class


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` gets its options (and imports its stage), so that a command
    starts without loading every stage."""
    argv = sys.argv[1:] if argv is None else argv
    parser = _Parser(prog="rfseg", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('rfseg').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, _, add, help_ in _SUBCOMMANDS:
        p = sub.add_parser(name, help=help_)
        if name == chosen:
            add(p)
    return parser


def _log_job_environment():
    """Under SLURM, one line naming the scheduler job and the GPUs it was given, for the job's log."""
    import os

    if "SLURM_JOB_ID" not in os.environ:
        return
    keys = {"SLURM_JOB_ID": "slurm_job", "CUDA_VISIBLE_DEVICES": "cuda_visible_devices"}
    print("[rfseg] " + " ".join(f"{v}={os.environ.get(k, '-')}" for k, v in keys.items()), flush=True,
          file=sys.stderr)


def reuse_freed_memory() -> bool:
    """Make glibc's allocator keep the memory a job frees for its next allocations (blocks up to 32 MB, glibc's cap)
    instead of handing it back to the system. A training step frees and allocates the same activations every time;
    by default glibc returns large blocks with munmap above a moving threshold, and the next step faults them back in
    page by page: about 4,400 page faults per step of the demo's training against a few dozen, and a tenth or more
    of its step time (docs/explanation/performance.md). Values are unchanged. Set here, in the command's own
    process, rather than in the library, because it is a setting of the whole process. False where the C library
    has no ``mallopt`` (not glibc) or refuses."""
    import ctypes

    trim_threshold, mmap_threshold = -1, -3  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD of glibc's malloc.h
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(mmap_threshold, 32 << 20)) and bool(mallopt(trim_threshold, 1 << 30))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command != "arch":
        _log_job_environment()
        reuse_freed_memory()
    try:
        args.func(args)
    except UserError as e:
        print(f"rfseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from rfseg.blocks.io import disk_error

        disk = disk_error(e, e.filename or ".")
        if disk is None:
            raise
        print(f"rfseg {args.command}: error: {disk}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rfseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
