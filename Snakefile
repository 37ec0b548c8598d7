# rfseg workflow: see README.md. Rules live in workflow/rules/, one file per stage.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/architectures.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/fourier.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/predict.smk"


rule all:
    default_target: True
    input:
        all_targets(),
