"""Code provenance: a job's fingerprint is the import closure of its command, so editing code reruns exactly the
jobs that run it (rfseg.provenance)."""

import re

import pytest

from rfseg import provenance
from rfseg.cli import COMMANDS
from support import job_counts, snakemake

ALL_RULES = {"architectures", "simulate", "simulate_for_predict", "preprocess", "patches", "train", "evaluate",
             "erf", "aggregate", "fourier", "fn_overlap", "fingerprint", "dataset_table", "figure_dice_vs_rf",
             "figure_sizes", "figure_dilation", "figure_edges", "figure_examples", "figure_false_negatives",
             "figure_curves", "figure_erf", "predict", "evaluate_published", "paired", "all"}
FIGURES = {r for r in ALL_RULES if r.startswith("figure_")}
AFTER_EVALUATE = {"aggregate", "fn_overlap", "figure_sizes", "figure_examples", "figure_edges",
                  "figure_false_negatives", "figure_dice_vs_rf", "figure_dilation", "predict", "paired", "all"}
AFTER_TRAIN = {"evaluate", "erf", "figure_curves", "figure_erf"} | AFTER_EVALUATE
AFTER_PATCHES = ALL_RULES - {"architectures", "simulate", "simulate_for_predict", "preprocess", "patches"}

# module edited -> the rules that must rerun: those whose command imports it, and what depends on their outputs
EXPECTED = {
    "blocks/io.py": ALL_RULES,
    "blocks/preprocess.py": ALL_RULES - {"architectures", "simulate", "simulate_for_predict"},
    "blocks/patches.py": AFTER_PATCHES | {"patches"},
    "blocks/models.py": {"architectures", "dataset_table", "train", "evaluate_published"} | AFTER_TRAIN | FIGURES,
    "stages/train.py": {"train"} | AFTER_TRAIN,
    "stages/predict.py": {"predict", "all"},
    "blocks/inference.py": {"evaluate", "evaluate_published"} | AFTER_EVALUATE,
    "stages/evaluate.py": {"evaluate", "evaluate_published"} | AFTER_EVALUATE,
    "blocks/fourier.py": {"fourier", "fn_overlap", "fingerprint", "aggregate", "figure_false_negatives",
                          "figure_dice_vs_rf", "figure_sizes", "figure_dilation", "predict", "all"},
    "figures/rf.py": FIGURES | {"all"},
    "cli.py": ALL_RULES,
}


def _edit_one_function(path):
    """Add a statement before the first return of the file: a change of code, not of a docstring."""
    src = path.read_text()
    m = re.search(r"^( +)return\b", src, re.M)
    path.write_text(src[:m.start()] + f"{m[1]}_edited = 1\n" + src[m.start():])
    return src


@pytest.mark.slow
@pytest.mark.parametrize("module", list(EXPECTED))
def test_editing_code_reruns_exactly_the_jobs_that_run_it(done_workflow, module):
    f = done_workflow / "rfseg" / module
    original = _edit_one_function(f)
    try:
        proc = snakemake(done_workflow, "-n")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert set(job_counts(proc.stdout + proc.stderr)) == EXPECTED[module]
    finally:
        f.write_text(original)
    again = snakemake(done_workflow, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_docstrings_and_comments_do_not_change_a_fingerprint(tmp_path):
    import shutil

    root = tmp_path / "rfseg"
    shutil.copytree(provenance.ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    before = provenance.command_fingerprint(COMMANDS["train"], root)
    f = root / "stages/train.py"
    src = f.read_text()
    f.write_text(src.replace('"""Stage: train one architecture', '"""Stage: (reworded) train one architecture', 1)
                 + "\n# a comment\n")
    assert provenance.command_fingerprint(COMMANDS["train"], root) == before
    _edit_one_function(f)
    assert provenance.command_fingerprint(COMMANDS["train"], root) != before


def test_the_command_line_counts_per_command(tmp_path):
    """Editing one command's functions in rfseg/cli.py reruns only its jobs; adding a command reruns none; a shared
    helper counts for every command."""
    import shutil

    root = tmp_path / "rfseg"
    shutil.copytree(provenance.ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    cli = root / "cli.py"
    original = cli.read_text()

    def fingerprints():
        return {c: provenance.command_fingerprint(m, root) for c, m in COMMANDS.items()}

    before = fingerprints()
    cli.write_text(original.replace("def _run_predict(args):\n", "def _run_predict(args):\n    _edited = 1\n", 1))
    changed = {c for c, f in fingerprints().items() if f != before[c]}
    assert changed == {"predict"}
    cli.write_text(original.replace("_SUBCOMMANDS = [\n", "def _add_extra(p):\n    p.set_defaults(func=_run_extra)"
                                    "\n\n\ndef _run_extra(args):\n    print(args)\n\n\n_SUBCOMMANDS = [\n    ('extra', "
                                    "'rfseg.stages.extra', _add_extra, 'a new command'),\n", 1))
    assert fingerprints() == before
    cli.write_text(original.replace("def _opt(p, flag, fn, name=None, help=\"\", **kw):\n",
                                    "def _opt(p, flag, fn, name=None, help=\"\", **kw):\n    _edited = 1\n", 1))
    assert all(f != before[c] for c, f in fingerprints().items())


def test_closures_follow_the_real_imports():
    train = provenance.command_modules(COMMANDS["train"])
    assert {"rfseg.stages.train", "rfseg.blocks.training", "rfseg.blocks.models", "rfseg.blocks.io",
            "rfseg.cli"} <= set(train)
    assert "rfseg.stages.evaluate" not in train and "rfseg.figures" not in train
    assert "rfseg.blocks.inference" in provenance.command_modules(COMMANDS["evaluate"])
    assert "rfseg.blocks.models" not in provenance.command_modules(COMMANDS["simulate"])


def test_no_stage_imports_another_stage_and_blocks_import_no_stage():
    for name in provenance.closure(*COMMANDS.values()):
        deps = provenance.direct_imports(name)
        if name.startswith("rfseg.stages."):
            assert not {d for d in deps if d.startswith("rfseg.stages.")}, name
        if name.startswith("rfseg.blocks") or name.startswith("rfseg.figures"):
            assert not {d for d in deps if d.startswith("rfseg.stages") or d == "rfseg.cli"}, name
