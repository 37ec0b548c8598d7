# rfseg workflow: see README.md. Rules live in workflow/rules/, one file per stage family; the plan (targets, flags,
# checks) is rfseg.plan, tested Python.
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from rfseg.errors import UserError
from rfseg.plan import check_schema

min_version("9.0")


# The demo config.yaml is the default; a --configfile on the command line replaces it instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


# PATH gets the directory of the running Python prepended (workflow/rules/common.smk), so jobs find `rfseg`.
envvars:
    "PATH",


# A schema error as one line naming the key (rfseg.plan.check_schema); Snakemake's validate then fills in defaults.
try:
    check_schema(config, "workflow/schemas/config.schema.yaml")
except UserError as e:
    raise WorkflowError(str(e))
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/baseline.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/predict.smk"


onsuccess:
    for (
        line
    ) in (
        PLAN.flagged_lines()
    ):  # runs not to compare: they predict nothing or everything, or never learned
        print(line, file=sys.stderr)


rule all:
    default_target: True
    input:
        PLAN.targets(),
