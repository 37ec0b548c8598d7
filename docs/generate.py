"""Writes the docs pages that are generated, so that they cannot drift from what they describe.

- ``reference/cli.md``: every ``rfseg`` command and option, from the argparse parser (``rfseg.cli``);
- ``reference/config.md``: every config key, from ``workflow/schemas/config.schema.yaml``;
- tables in any page between ``<!-- table: SOURCE OPTION=VALUE ... -->`` and ``<!-- /table -->``, rendered from a
  stored file, with a line naming the file and the machine, commit and date that measured it.

``SOURCE`` is a CSV or JSON file, or a glob of JSON files (one table over all of them, with a ``file`` column), relative
to the repository. Options (values with spaces in quotes):

- ``records=KEY.KEY``: the list of records inside each JSON file (default: the file is one record), or a mapping of
  names to records (each record then gets its name as ``key``); nested keys become ``a.b`` columns, and the file's
  ``machine`` fields are added to each record as ``machine.*``;
- ``where=COLUMN=VALUE`` (repeatable; ``VALUE`` may list alternatives ``a|b``): keep the matching rows;
- ``group=A,B`` with ``mean_std=X,Y``: one row per group, each ``X`` as ``mean ± std`` over the group's rows (sample
  std), and the group's size as ``n``; ``pivot=COLUMN`` then spreads one ``mean_std`` column over that column's values;
- ``pm=X,Y``: a column ``X`` showing the stored ``X_mean`` and ``X_std`` as ``mean ± std`` (a summary file's columns);
- ``label.COLUMN="value=text|value=text"``: show a column's values as text (applied before grouping);
- ``sort=A,B``: order the rows by these columns (default: as they come in the file);
- ``columns=A,B``: the columns shown, in order; ``headers="A:label|B:label"``: their headings;
- ``digits=N``: decimals of floats (default 3; values of 100 and more are shown without decimals);
  ``digits.COLUMN=N`` for one column.

Where a file was measured comes from its own ``machine`` (and ``commit``, ``date``) fields, else from
``docs/data/measured.yaml``; a table whose source says neither fails the check.

Usage: ``python docs/generate.py`` writes them; ``python docs/generate.py --check`` exits 1 naming every page that
differs from what it would write (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TABLE = re.compile(r"(<!-- table: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def cli_reference() -> str:
    os.environ["COLUMNS"] = "110"  # argparse wraps help to the terminal: fix it, so the page is the same anywhere
    from rfseg.cli import _SUBCOMMANDS, build_parser

    parts = ["# Command line reference\n",
             "Generated from the `rfseg` parser by `docs/generate.py`; every stage of the workflow runs one of these "
             "commands, so each also runs by hand. A user mistake prints one line naming the file or option and the "
             "fix, and exits 2.\n",
             "```text\n" + build_parser([]).format_help().replace("rfseg", "rfseg", 1) + "```\n"]
    for name, _, _, help_ in _SUBCOMMANDS:
        parser = build_parser([name])
        sub = next(a for a in parser._actions if a.dest == "command").choices[name]
        parts.append(f"## rfseg {name}\n\n{help_[0].upper() + help_[1:]}.\n\n```text\n{sub.format_help()}```\n")
    return "\n".join(parts).replace(f"{ROOT}/", "")  # defaults inside the repository, shown relative to it


def _kind(node: dict) -> str:
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    if "oneOf" in node:
        return " or ".join(_kind(n) for n in node["oneOf"])
    kind = node.get("type", "object" if "properties" in node else "")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and "items" in node:
        kind = f"list of {_kind(node['items'])}"
    bounds = [f"{op} {node[k]}" for k, op in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"))
              if k in node]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def _walk(node: dict, path: str, schema: dict, rows: list) -> None:
    if "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    if "allOf" in node:
        for part in node["allOf"]:
            _walk(part, path, schema, rows)
        return
    required = set(node.get("required", []))
    for key, child in (node.get("properties") or {}).items():
        here = f"{path}.{key}" if path else key
        ref = child.get("$ref")
        target = schema["definitions"][ref.rsplit("/", 1)[1]] if ref else child
        description = " ".join(str(target.get("description", child.get("description", ""))).split())
        default = f"`{json.dumps(target['default'])}`" if "default" in target else ""
        if "properties" in target or "allOf" in target:
            rows.append((here, "section", "yes" if key in required else "", default, description))
            _walk(target, here, schema, rows)
        elif isinstance(target.get("additionalProperties"), dict):
            rows.append((here, "a section per name", "yes" if key in required else "", default, description))
            _walk(target["additionalProperties"], f"{here}.NAME", schema, rows)
        else:
            rows.append((here, _kind(target), "yes" if key in required else "", default, description))


def config_reference() -> str:
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    rows: list = []
    _walk(schema, "", schema, rows)
    lines = ["# Configuration reference\n",
             "Generated from `workflow/schemas/config.schema.yaml` by `docs/generate.py`. The workflow checks a "
             "config against this schema before any job and names the first key that does not fit, in one line. "
             "`NAME` stands for a dataset's name. How to set a config up: [Configure the workflow]"
             "(../how-to/configure.md).\n",
             "| key | value | required | default | what it does |", "|---|---|---|---|---|"]
    lines += [f"| `{k}` | {v} | {r} | {d} | {t.replace('|', '/')} |" for k, v, r, d, t in rows]
    return "\n".join(lines) + "\n"


MEASURED = ROOT / "docs/data/measured.yaml"


def _format(value, digits: int = 3) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _records(data, path: Path, key: str | None) -> pd.DataFrame:
    machine = data.get("machine") if isinstance(data, dict) else None
    rows = data
    for part in key.split(".") if key else []:
        rows = rows[part]
    if isinstance(rows, dict) and rows and all(isinstance(v, dict) for v in rows.values()):
        rows = [{"key": name, **record} for name, record in rows.items()]
    table = pd.json_normalize(rows if isinstance(rows, list) else [rows], sep=".")
    for name, value in (machine or {}).items():
        table[f"machine.{name}"] = [", ".join(map(str, value)) if isinstance(value, list) else value] * len(table)
    table.insert(0, "file", path.stem)
    return table


def _load(source: str, key: str | None) -> tuple[pd.DataFrame, dict[Path, dict | None]]:
    """The table of ``source`` and, per file, its own ``machine`` record (None for a CSV or a JSON without one)."""
    paths = sorted(ROOT.glob(source)) if any(c in source for c in "*?[") else [ROOT / source]
    if not paths or not all(p.is_file() for p in paths):
        raise SystemExit(f"docs table: no file {source}")
    if paths[0].suffix == ".csv":
        return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True), dict.fromkeys(paths)
    data = {p: json.loads(p.read_text()) for p in paths}
    machines = {p: d.get("machine") if isinstance(d, dict) and isinstance(d.get("machine"), dict) else None
                for p, d in data.items()}
    return pd.concat([_records(d, p, key) for p, d in data.items()], ignore_index=True), machines


def _pm(mean: float, std: float, digits: int) -> str:
    """``mean ± std``, or the mean alone where there is no std."""
    return _format(mean, digits) if pd.isna(std) else f"{_format(mean, digits)} ± {_format(std, digits)}"


def _mean_std(values: pd.Series, digits: int) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    return _pm(float(values.mean()), float(values.std()) if len(values) > 1 else float("nan"), digits)


def _aggregate(table: pd.DataFrame, options: dict) -> pd.DataFrame:
    group = options["group"].split(",")
    digits = int(options.get("digits", 3))
    values = options["mean_std"].split(",")
    if "pivot" in options:
        (value,) = values
        pivot = options["pivot"]
        order = list(dict.fromkeys(table[pivot]))
        cells = table.groupby([*group, pivot], sort=False, dropna=False)[value].apply(lambda v: _mean_std(v, digits))
        wide = cells.unstack(pivot)[order].reset_index()
        wide.columns = [*group, *map(str, order)]
        first = table.drop_duplicates(group)[group].reset_index(drop=True)
        return first.merge(wide, on=group, how="left")
    grouped = table.groupby(group, sort=False, dropna=False)
    out = grouped[values].agg(lambda v: _mean_std(v, digits)).reset_index()
    out["n"] = grouped.size().values
    return out


def _where(machines: dict[Path, dict | None]) -> str:
    """One line naming the files and the machine, commit and date that measured them (``machines``: each file's own
    record, else ``docs/data/measured.yaml``)."""
    measured = yaml.safe_load(MEASURED.read_text()) if MEASURED.is_file() else {}
    parts = []
    for path, own in machines.items():
        name = str(path.relative_to(ROOT))
        entry = dict(measured.get(name) or {})
        if own:
            entry.setdefault("commit", own.get("commit"))
            entry.setdefault("date", own.get("date"))
            if own.get("kind") and "machine" not in entry:
                cores = f", {own['cores']} cores" if own.get("cores") else ""
                entry["machine"] = f"{own['kind']} ({own.get('cpu', 'CPU')}{cores})"
        missing = [k for k in ("machine", "commit", "date") if not entry.get(k)]
        if missing:
            raise SystemExit(f"docs table: {name} does not say its {', '.join(missing)}: add it to "
                             f"{MEASURED.relative_to(ROOT)}")
        parts.append((name, entry["machine"], str(entry["commit"]), str(entry["date"])))
    machines = {p[1:] for p in parts}
    files = ", ".join(f"`{p[0]}`" for p in parts)
    if len(machines) == 1:
        machine, commit, date = machines.pop()
        return f"*From {files}; measured on {machine}, commit {commit}, {date}.*\n"
    each = "; ".join(f"`{p[0]}`: {p[1]}, commit {p[2]}, {p[3]}" for p in parts)
    return f"*Measured: {each}.*\n"


def render_table(spec: str) -> str:
    """A Markdown table and its source line from a table marker's spec (see the module's docstring)."""
    words = shlex.split(spec)
    options: dict = {}
    wheres = []
    for word in words[1:]:
        key, value = word.split("=", 1)
        if key == "where":
            wheres.append(value.split("=", 1))
        else:
            options[key] = value
    table, machines = _load(words[0], options.get("records"))
    for column, value in wheres:
        table = table[table[column].astype(str).isin(value.split("|"))]
    for key in [k for k in options if k.startswith("label.")]:
        column = key.split(".", 1)[1]
        labels = dict(pair.split("=", 1) for pair in options[key].split("|"))
        table[column] = [labels.get(_format(v) if isinstance(v, float) else str(v), v) for v in table[column]]
    for name in options["pm"].split(",") if options.get("pm") else []:
        table[name] = [_pm(m, sd, int(options.get("digits", 3)))
                       for m, sd in zip(table[f"{name}_mean"], table[f"{name}_std"])]
    if "group" in options:
        table = _aggregate(table, options)
    if "sort" in options:
        table = table.sort_values(options["sort"].split(","), kind="stable")
    if "columns" in options:
        table = table[options["columns"].split(",")]
    headers = dict(h.split(":", 1) for h in options["headers"].split("|")) if "headers" in options else {}
    digits = [int(options.get(f"digits.{c}", options.get("digits", 3))) for c in table.columns]
    lines = ["| " + " | ".join(headers.get(c, c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_format(v, d) for v, d in zip(row, digits)) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n\n" + _where(machines)


def with_tables(text: str) -> str:
    return TABLE.sub(lambda m: m[1] + render_table(m["spec"]) + m[4], text)


def pages() -> dict[Path, str]:
    """Every generated page and every page holding a generated table, as this script would write it."""
    out = {DOCS / "reference/cli.md": cli_reference(), DOCS / "reference/config.md": config_reference()}
    for page in sorted([*DOCS.rglob("*.md"), ROOT / "README.md"]):
        if page not in out and TABLE.search(page.read_text()):
            out[page] = with_tables(page.read_text())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in pages().items():
        if not path.is_file() or path.read_text() != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if args.check and stale:
        print(f"out of date (run python docs/generate.py): {', '.join(map(str, stale))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
