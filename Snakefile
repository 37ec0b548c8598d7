# rfseg workflow: see README.md. Rules live in workflow/rules/, one file per stage.
from snakemake.utils import min_version, validate

min_version("9.0")


# The demo config.yaml is the default; a --configfile on the command line replaces it instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


# PATH gets the directory of the running Python prepended (workflow/rules/common.smk), so jobs find `rfseg`.
envvars:
    "PATH",


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
