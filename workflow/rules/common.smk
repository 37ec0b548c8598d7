# Glue between the config and the rules: the plan (rfseg.plan, tested Python), the results layout, code fingerprints.
import os
import re
import sys
from pathlib import Path

from rfseg.blocks.artifacts import eval_files
from rfseg.blocks.bundle import bundle_files
from rfseg.errors import UserError
from rfseg.plan import Plan, code
from snakemake.exceptions import WorkflowError

# Jobs call the `rfseg` installed beside the Python that runs Snakemake, also when its venv is not activated
# (e.g. `.venv/bin/snakemake ...`); the SLURM executor passes this PATH on to its jobs.
os.environ["PATH"] = (
    f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
)

try:
    PLAN = Plan(config)
except UserError as e:
    raise WorkflowError(str(e))
L = PLAN.layout
DATASETS = PLAN.datasets
for line in PLAN.warnings():  # before any job, so `snakemake -n` shows them too
    print(line, file=sys.stderr)

# A job's code fingerprint: the hash of the rfseg modules its command imports (rfseg.provenance); editing any of them
# reruns exactly the jobs that run it.
CODE = {
    c: code(c)
    for c in [
        "arch-table",
        "simulate",
        "preprocess",
        "patches",
        "train",
        "evaluate",
        "aggregate",
        "fourier",
        "fn-overlap",
        "figure",
        "erf",
        "dataset-table",
        "predict",
        "fingerprint",
        "paired",
    ]
}

# Wildcard placeholders for the layout's paths. A part is a dataset, or one fold of a cross-validated dataset
# (<dataset>/fold<k>): patches, models, evaluations and the Fourier baseline are made per part.
DS, PART, ARCH, SEED = "{dataset}", "{part}", "{arch}", "{seed}"
MODEL = bundle_files(L.model(PART, ARCH, SEED))
EVAL = eval_files(L.eval(PART, ARCH, SEED))


wildcard_constraints:
    dataset="|".join(DATASETS) or "NONE",
    part="|".join(re.escape(p) for p in PLAN.all_parts()) or "NONE",
    arch=r"n\d_p[248]+(_d\d+)?(_avg)?",
    seed=r"\d+",
    name=r"[A-Za-z0-9_.-]+",
    member=r"[A-Za-z0-9_.-]+",


def model_files(dirs, kind):
    """One file of each model bundle in ``dirs`` (kind: weights, meta, history)."""
    return [str(bundle_files(d)[kind]) for d in dirs]


def eval_metrics(part):
    """The metrics file of every trained network's evaluation in one part."""
    return [str(eval_files(d)["metrics"]) for d in PLAN.part_eval_dirs(part)]


def figure(name, category):
    """A figure of the dataset wildcard as a report item with its caption."""
    return report(
        L.figure(DS, name),
        caption=f"../report/{name}.rst",
        category=category,
        subcategory="{dataset}",
    )


def example_eval_files(wc):
    return [
        str(v)
        for d in PLAN.example_evals(wc.dataset)
        for k, v in eval_files(d).items()
        if k in ("metrics", "probabilities")
    ]


def all_evals(ds):
    """Evaluation folders of a dataset: every trained network, seed and fold, then every published network."""
    return PLAN.eval_dirs(ds) + PLAN.published_eval_dirs(ds)


def dataset(wc):
    """The dataset of a rule's part wildcard."""
    return PLAN.dataset_of(wc.part)


def all_eval_files(wc):
    return [
        str(eval_files(d)[k])
        for d in all_evals(wc.dataset)
        for k in ("metrics", "probabilities")
    ]


def bundle_dir(input):
    """The model bundle folder of a rule whose input holds its model.json as `meta`."""
    return str(Path(input.meta).parent)
