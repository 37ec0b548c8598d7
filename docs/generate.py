"""Writes the docs pages that are generated, so that they cannot drift from what they describe.

- ``reference/cli.md``: every ``rfseg`` command and option, from the argparse parser (``rfseg.cli``);
- ``reference/config.md``: every config key, from ``workflow/schemas/config.schema.yaml``;
- tables in any page between ``<!-- table: FILE [columns=a,b,...] [where=col=value] -->`` and ``<!-- /table -->``,
  rendered from the CSV ``FILE`` (a path relative to the repository).

Usage: ``python docs/generate.py`` writes them; ``python docs/generate.py --check`` exits 1 naming every page that
differs from what it would write (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def _format(value) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def render_table(spec: str) -> str:
    """A Markdown table from ``FILE [columns=a,b] [where=col=value]`` (relative to the repository)."""
    words = spec.split()
    table = pd.read_csv(ROOT / words[0])
    options = dict(w.split("=", 1) for w in words[1:])
    if "where" in options:
        column, value = options["where"].split("=", 1)
        table = table[table[column].astype(str) == value]
    if "columns" in options:
        table = table[options["columns"].split(",")]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_format(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


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
