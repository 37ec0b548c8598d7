"""The documentation: generated pages up to date, the site builds with --strict, the version and the citation."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import ROOT


def test_generated_pages_are_up_to_date():
    """The command and config references and every table rendered from a stored file equal what docs/generate.py
    writes now: edit the parser, the schema or the CSV and this fails until the pages are regenerated."""
    proc = subprocess.run([sys.executable, "docs/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    proc = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr[-3000:]
    assert (tmp_path / "site/reference/cli/index.html").is_file()


def test_version_comes_from_the_package_metadata(cli):
    from importlib.metadata import version

    out = cli("--version", check_rc=0).stdout.strip()
    assert out == f"rfseg {version('rfseg')}" and version("rfseg") == yaml.safe_load(
        (ROOT / "CITATION.cff").read_text())["version"]


def test_citation_file_validates_against_the_cff_schema():
    import jsonschema

    schema = json.loads((ROOT / "tests/data/citation-file-format-1.2.0.schema.json").read_text())
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    cff["date-released"] = str(cff["date-released"])  # YAML reads it as a date, the schema wants its text
    jsonschema.validators.validator_for(schema)(schema).validate(cff)
    assert cff["preferred-citation"]["doi"] == "10.1017/S1431927622012466"


# --------------------------------------------------------------------------------------------------- docs that run
FENCE = re.compile(r"(?:<!-- test: skip: (?P<reason>[^>]*?) -->\n)?```(?P<lang>bash|python)\n(?P<code>.*?)```", re.S)
RUNNABLE = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs/tutorials").glob("*.md"))]


def command_blocks(path):
    """(language, code, skip reason or None) of every bash and python block of a Markdown file, in order."""
    return [(m["lang"], m["code"], m["reason"]) for m in FENCE.finditer((ROOT / path).read_text())]


def test_every_skipped_block_says_why():
    for path in RUNNABLE:
        blocks = command_blocks(path)
        assert blocks, path
        for lang, code, reason in blocks:
            assert reason is None or len(reason.split()) >= 4, (path, code)


@pytest.mark.slow
@pytest.mark.parametrize("path", RUNNABLE)
def test_the_command_blocks_run(tmp_path, path):
    """Every bash and python block of the README and the tutorials, run in order in a fresh copy of the repository,
    as a reader runs them: the python blocks share one interpreter (as a notebook's cells do), the bash blocks run
    where they stand; a block that cannot run here is marked with its reason."""
    from support import env_for, scratch_copy

    wd = scratch_copy(tmp_path / "repo")
    script = ["import subprocess"]
    for lang, code, reason in command_blocks(path):
        if reason:
            continue
        if lang == "bash":
            script.append(f"subprocess.run(['bash', '-e', '-o', 'pipefail', '-c', {code!r}], check=True)")
        else:
            script.append(code)
    (tmp_path / "page.py").write_text("\n".join(script))
    proc = subprocess.run([sys.executable, str(tmp_path / "page.py")], cwd=wd, env=env_for(wd), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{path}: a block failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def test_readme_links_and_size():
    """The front page stays short, and every file it links to exists (GitHub renders it; MkDocs checks the rest)."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220 and len(text.encode()) <= 22_000
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def documented_columns(kind: str) -> set[str]:
    """The column names the outputs reference lists in its table after ``<!-- columns: kind -->``."""
    from rfseg.blocks.stats import METRICS

    text = (ROOT / "docs/reference/outputs.md").read_text().split(f"<!-- columns: {kind} -->\n", 1)[1]
    rows = [line for line in text.split("\n\n", 1)[0].splitlines() if line.startswith("| `")]
    names = {n for row in rows for n in re.findall(r"`([^`]+)`", row.split("|")[1])}
    if "<metric>_mean" in names:
        names -= {"<metric>_mean", "<metric>_std"}
        names |= {f"{m}_{s}" for m in METRICS for s in ("mean", "std")}
    return names


@pytest.mark.slow
def test_the_outputs_reference_lists_every_column(done_workflow):
    import pandas as pd

    results = done_workflow / "results"
    files = {"particles": next((results / "predict/new/segmented").glob("*_particles.csv")),
             "predict_summary": results / "predict/new/segmented/summary.csv", "metrics": results / "metrics.csv",
             "summary": results / "summary.csv", "paired": results / "tiny/paired.csv"}
    for kind, path in files.items():
        assert documented_columns(kind) == set(pd.read_csv(path).columns), kind


def test_a_docs_table_is_computed_from_its_file_and_names_where_it_was_measured(tmp_path, monkeypatch):
    """Tables are computed from the stored rows (means ± std over seeds, filters, labels), say which machine and
    commit measured them, and refuse a file that does not say so."""
    sys.path.insert(0, str(ROOT / "docs"))
    import generate

    rows = tmp_path / "runs.csv"
    rows.write_text("setting,arch,seed,dice\na,n1,1,0.5\na,n1,2,0.7\na,n2,1,0.9\nb,n1,1,0.1\nb,n2,1,0.2\n")
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "MEASURED", tmp_path / "measured.yaml")
    with pytest.raises(SystemExit, match="runs.csv does not say its machine, commit, date"):
        generate.render_table("runs.csv")
    (tmp_path / "measured.yaml").write_text("runs.csv: {machine: a test CPU, commit: abc1234, date: 2026-01-02}\n")
    table = generate.render_table('runs.csv where=setting=a label.setting="a=first" group=setting mean_std=dice '
                                  'pivot=arch "headers=setting:the setting"')
    assert table.splitlines()[:3] == ["| the setting | n1 | n2 |", "|---|---|---|", "| first | 0.600 ± 0.141 | 0.900 |"]
    assert "measured on a test CPU, commit abc1234, 2026-01-02" in table
    (tmp_path / "bench.json").write_text(json.dumps({"machine": {"kind": "amd-epyc-bf16", "commit": "d00d",
                                                                 "date": "2026-02-03"},
                                                     "sets": [{"set": "small", "rfseg": {"epoch_s": 0.61}}]}))
    table = generate.render_table("bench.json records=sets columns=set,rfseg.epoch_s,machine.kind digits=1")
    assert "| small | 0.6 | amd-epyc-bf16 |" in table and "commit d00d, 2026-02-03" in table
    (tmp_path / "bench.json").write_text(json.dumps({"machine": {"kind": "k", "commit": "d00d", "date": "2026-02-03"},
                                                     "sets": {"a": {"dice": 0.5}, "b": {"dice": 0.25}}}))
    table = generate.render_table("bench.json records=sets columns=key,dice")  # a mapping of names to records
    assert "| a | 0.500 |" in table and "| b | 0.250 |" in table
    (tmp_path / "summary.csv").write_text("arch,dice_mean,dice_std\nn1,0.8,0.01\nfourier,0.4,\n")
    (tmp_path / "measured.yaml").write_text("summary.csv: {machine: a test CPU, commit: abc1234, date: 2026-01-02}\n")
    table = generate.render_table("summary.csv pm=dice columns=arch,dice")
    assert "| n1 | 0.800 ± 0.010 |" in table and "| fourier | 0.400 |" in table
