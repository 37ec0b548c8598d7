# Shared helpers: dataset and architecture lists from the config, target lists, per-stage code fingerprints.
import glob as _glob
import hashlib
import os
import sys
from pathlib import Path

import rfseg
from rfseg.errors import UserError
from rfseg.models import ArchSpec, build_model, receptive_field, sweep
from snakemake.exceptions import WorkflowError

# Jobs call the `rfseg` installed beside the Python that runs Snakemake, also when its venv is not activated
# (e.g. `.venv/bin/snakemake ...`); the SLURM executor passes this PATH on to its jobs.
os.environ["PATH"] = (
    f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
)

RESULTS = config["results"]
PACKAGE = Path(rfseg.__file__).parent
DATASETS = config.get("datasets", {})


def code_fingerprint(*modules):
    """Hash of the rfseg source files a stage runs: editing them reruns that stage (Snakemake does not track
    installed package code by itself)."""
    h = hashlib.sha256()
    for m in modules:
        for f in (
            sorted((PACKAGE / m).glob("*.py"))
            if (PACKAGE / m).is_dir()
            else [PACKAGE / m]
        ):
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


CODE = {
    "simulate": code_fingerprint("simulate", "io.py"),
    "preprocess": code_fingerprint("io.py", "preprocess.py", "data.py"),
    "patches": code_fingerprint("io.py", "data.py", "patches.py"),
    "train": code_fingerprint("train.py", "models.py", "patches.py", "data.py"),
    "evaluate": code_fingerprint("evaluate.py", "metrics.py", "train.py", "models.py"),
    "fourier": code_fingerprint("fourier.py", "metrics.py", "data.py"),
    "aggregate": code_fingerprint("evaluate.py"),
    "erf": code_fingerprint("erf.py", "train.py", "models.py", "data.py", "io.py"),
    "figures": code_fingerprint("figures", "erf.py", "metrics.py"),
    "fingerprint": code_fingerprint("fingerprint.py", "fourier.py", "data.py"),
    "predict": code_fingerprint(
        "predict.py", "preprocess.py", "io.py", "train.py", "models.py"
    ),
}


def dataset_training(ds):
    """Global training settings, overridden key by key by the dataset's own `training` section."""
    return {**config["training"], **DATASETS[ds].get("training", {})}


def _arch_specs(ds):
    out = []
    for i, entry in enumerate(DATASETS[ds]["architectures"]):
        key = f"datasets.{ds}.architectures[{i}]"
        try:
            if isinstance(entry, str):
                out.append(ArchSpec.from_name(entry))
            elif "sweep" in entry:
                s = entry["sweep"]
                max_rf = s.get("max_rf_px", DATASETS[ds]["patches"]["size"])
                for n in (
                    s["blocks"] if isinstance(s["blocks"], list) else [s["blocks"]]
                ):
                    out += sweep(
                        n, max_rf, s.get("mode", "max"), tuple(s.get("dilations", ()))
                    )
            else:
                out.append(
                    ArchSpec(
                        entry["blocks"],
                        tuple(entry["pools"]),
                        tuple(entry.get("dilations", ())),
                        entry.get("mode", "max"),
                    )
                )
        except UserError as e:
            raise WorkflowError(f"config {key}: {e}")
    return out


def architectures(ds):
    """Canonical names of a dataset's architectures; rejects any whose RF exceeds the patch."""
    size = DATASETS[ds]["patches"]["size"]
    names = []
    for spec in _arch_specs(ds):
        rf = receptive_field(build_model(spec))
        if rf > size or size % spec.downsampling:
            raise WorkflowError(
                f"config datasets.{ds}.architectures: {spec.name} has a receptive field of {rf} px and needs "
                f"patches that are a multiple of {spec.downsampling} px, but datasets.{ds}.patches.size is {size}: "
                f"remove it or enlarge the patches"
            )
        if spec.name not in names:
            names.append(spec.name)
    return names


def seeds(ds):
    return dataset_training(ds)["seeds"]


def raw_inputs(ds):
    """Files a dataset's preprocessing reads: the simulation folder, or the user's images, masks and manifest."""
    d = DATASETS[ds]
    if "simulate" in d:
        return [f"{RESULTS}/{ds}/raw"]
    if "manifest" in d:
        if not Path(d["manifest"]).is_file():
            raise WorkflowError(
                f"config datasets.{ds}.manifest: {d['manifest']} does not exist: fix the path"
            )
        return [d["manifest"]]
    images = sorted(_glob.glob(d["images"]))
    if not images:
        raise WorkflowError(
            f"config datasets.{ds}.images: the pattern {d['images']!r} matches no file: fix the path"
        )
    masks = [d["masks"].format(stem=Path(p).stem) for p in images]
    missing = [m for m in masks if not Path(m).is_file()]
    if missing:
        raise WorkflowError(
            f"config datasets.{ds}.masks: {missing[0]} does not exist: fix the pattern"
        )
    return images + masks


def model_dirs(ds):
    return [
        f"{RESULTS}/{ds}/models/{a}/seed{s}"
        for a in architectures(ds)
        for s in seeds(ds)
    ]


def metrics_files():
    nets = [
        f"{RESULTS}/{ds}/eval/{a}/seed{s}/metrics.csv"
        for ds in DATASETS
        for a in architectures(ds)
        for s in seeds(ds)
    ]
    return nets + [
        f"{RESULTS}/{ds}/fourier/metrics.csv"
        for ds in DATASETS
        if "fourier" in DATASETS[ds]
    ]


def all_targets():
    targets = [f"{RESULTS}/architectures.csv"]
    if DATASETS:
        targets += [f"{RESULTS}/summary.csv"]
        targets += [
            f"{RESULTS}/{ds}/fourier/fn_overlap.csv"
            for ds in DATASETS
            if "fourier" in DATASETS[ds]
        ]
        targets += [f for ds in DATASETS for f in figure_targets(ds)]
        targets += [f"{RESULTS}/tables/datasets.csv"]
        targets += [f"{RESULTS}/{ds}/fingerprint.csv" for ds in DATASETS]
        if config.get("series_figure"):
            targets += [f"{RESULTS}/figures/series.png"]
    if config.get("predict"):
        targets += [f"{RESULTS}/predict/{config['predict']['name']}/segmented"]
    return targets


# Validate every dataset's architectures and inputs now, before any job runs.
for _ds in DATASETS:
    architectures(_ds)
    raw_inputs(_ds)


wildcard_constraints:
    dataset="|".join(DATASETS) or "NONE",
    arch=r"n\d_p[248]+(_d\d+)?(_avg)?",
    seed=r"\d+",


def _flags(pairs):
    """'--flag value' for each set value; True gives a bare flag, None/False leaves it out.

    Rules pass these strings (never dicts) as params: the order is fixed here, so reordering keys in the config
    file does not look like a change to Snakemake."""
    out = []
    for flag, value in pairs:
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out.append(f"{flag} {','.join(map(str, value))}")
        else:
            out.append(f"{flag} {value}")
    return " ".join(out)


def simulate_options(ds):
    return simulate_options_for(DATASETS[ds]["simulate"])


def preprocess_options(ds):
    d = DATASETS[ds]
    p = d.get("preprocess", {})
    return _flags(
        [
            ("--pixel-size", d.get("pixel_size_nm")),
            ("--xray-threshold", p.get("xray_threshold")),
            ("--xray-passes", p.get("xray_passes", 2)),
            ("--flat-field-sigma-nm", p.get("flat_field_sigma_nm")),
            ("--target-pixel-size", p.get("target_pixel_size_nm")),
            ("--uncalibrated", d.get("uncalibrated", False)),
        ]
    )


def split_options(ds):
    s = DATASETS[ds].get("split", {})
    if s.get("folds"):
        return _flags([("--folds", s["folds"]), ("--fold", s.get("fold", 0))])
    return _flags([("--fractions", s.get("fractions", [0.7, 0.1, 0.2]))])


def train_options(ds):
    t = dataset_training(ds)
    return _flags(
        [
            ("--epochs", t["epochs"]),
            ("--batch-size", t["batch_size"]),
            ("--lr", t["lr"]),
            ("--augment", t["augment"]),
            ("--precision", t["precision"]),
            ("--no-channels-last", not t["channels_last"]),
            ("--device", config["compute"]["device"]),
            ("--early-stopping", t.get("early_stopping_patience")),
            ("--select", t["select"]),
        ]
    )


def fourier_options(ds):
    f = DATASETS[ds]["fourier"]
    return _flags(
        [
            ("--material", f.get("material")),
            ("--spacings-nm", f.get("spacings_nm")),
            ("--radii-px", f.get("radii_px")),
            ("--rel-tol", f.get("rel_tol")),
            ("--sigma-nm", f.get("sigma_nm")),
            ("--window", f.get("window", False)),
        ]
    )


def preprocess_source(wc, input):
    d = DATASETS[wc.dataset]
    if "simulate" in d:
        return f"--manifest {input[0]}/manifest.csv"
    if "manifest" in d:
        return f"--manifest {d['manifest']}"
    return f"--images '{d['images']}' --masks '{d['masks']}'"


def eval_files(ds, name):
    return [
        f"{RESULTS}/{ds}/eval/{a}/seed{s}/{name}"
        for a in architectures(ds)
        for s in seeds(ds)
    ]


def _plain(name):
    spec = ArchSpec.from_name(name)
    return spec.mode == "max" and set(spec.dilations) == {1}


def example_evals(ds):
    """Evaluations of the first seed of the smallest, a middle and the largest plain (max-pool, undilated) RF."""
    plain = sorted(
        (a for a in architectures(ds) if _plain(a)),
        key=lambda a: receptive_field(build_model(ArchSpec.from_name(a))),
    )
    picks = (
        list(dict.fromkeys([plain[0], plain[len(plain) // 2], plain[-1]]))
        if plain
        else []
    )
    return [f"{RESULTS}/{ds}/eval/{a}/seed{seeds(ds)[0]}/metrics.csv" for a in picks]


def edge_pair(ds):
    """(pooled, dilated) architectures of similar RF, for the edge figure; None when the dataset has no dilation."""
    rf = {
        a: receptive_field(build_model(ArchSpec.from_name(a)))
        for a in architectures(ds)
    }
    dilated = [a for a in rf if set(ArchSpec.from_name(a).dilations) != {1}]
    pooled = [a for a in rf if _plain(a)]
    if not dilated or not pooled:
        return None
    d = max(dilated, key=rf.get)
    return [min(pooled, key=lambda a: abs(rf[a] - rf[d])), d]


def figure_targets(ds):
    figs = ["dice_vs_rf", "dice_by_size", "examples", "training_curves", "effective_rf"]
    if "fourier" in DATASETS[ds]:
        figs += ["false_negatives", "fn_overlap"]
    if edge_pair(ds):
        figs += ["pooling_vs_dilation", "edges"]
    return [f"{RESULTS}/figures/{ds}/{f}.png" for f in figs]


PREDICT = config.get("predict")


def simulate_options_for(s):
    return _flags(
        [
            ("--n-images", s["n_images"]),
            ("--seed", s["seed"]),
            ("--size", s.get("size", 512)),
            ("--pixel-size", s.get("pixel_size_nm")),
            ("--diameter-nm", s.get("diameter_nm")),
            ("--dose", s.get("dose_e_per_A2")),
            ("--carbon-thickness-nm", s.get("carbon_thickness_nm")),
            ("--defocus-offset-nm", s.get("defocus_offset_nm")),
        ]
    )


def predict_model_dirs():
    ds, arch = PREDICT["dataset"], PREDICT.get("arch", "best")
    if ds not in DATASETS:
        raise WorkflowError(
            f"config predict.dataset: {ds!r} is not one of the datasets ({', '.join(DATASETS)})"
        )
    if arch != "best" and arch not in architectures(ds):
        raise WorkflowError(
            f"config predict.arch: {arch} is not trained for dataset {ds}: use 'best' or one of "
            f"{', '.join(architectures(ds))}"
        )
    dirs = model_dirs(ds)
    return dirs if arch == "best" else [d for d in dirs if f"/models/{arch}/" in d]


def predict_inputs():
    if "simulate" in PREDICT:
        return [f"{RESULTS}/predict/{PREDICT['name']}/raw"]
    files = sorted(_glob.glob(PREDICT["images"]))
    if not files:
        raise WorkflowError(
            f"config predict.images: the pattern {PREDICT['images']!r} matches no file: fix the path"
        )
    return files


def predict_image_args(wc, input):
    if "simulate" in PREDICT:
        return f"'{input.images}/images/*.tif'"
    return " ".join(f"'{f}'" for f in input.images)


def predict_select(wc, input):
    if PREDICT.get("arch", "best") != "best":
        return ""
    return f"--select-best {input.summary} --dataset {PREDICT['dataset']}"


def predict_options():
    p = PREDICT
    return _flags(
        [
            ("--tta", p.get("tta", False)),
            ("--tile", p.get("tile")),
            ("--overlap", p.get("overlap")),
            ("--compile", p.get("compile", False)),
            ("--min-area-nm2", p.get("min_area_nm2")),
            ("--drop-border", p.get("drop_border", False)),
            ("--on-pixel-mismatch", p.get("on_pixel_mismatch")),
            ("--pixel-size", p.get("pixel_size_nm")),
            ("--device", config["compute"]["device"]),
        ]
    )
