"""Code provenance: which rfseg source files a piece of code runs, and a fingerprint of them.

The import closure of a module is computed from the source (every ``import`` statement, also those inside
functions, followed transitively within the ``rfseg`` package, plus the ``__init__`` of every package on the way),
never listed by hand. The fingerprint hashes each file's syntax tree without docstrings, so editing code reruns what
runs it, while re-wording a docstring or a comment does not.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "rfseg"
ROOT = Path(__file__).resolve().parent


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """Source file of the rfseg module ``name`` (``rfseg.blocks.io``), or None if there is no such module."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _nodes(tree: ast.AST, toplevel_only: bool):
    if not toplevel_only:
        yield from ast.walk(tree)
        return
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo += [c for c in ast.iter_child_nodes(node)
                 if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]


def direct_imports(name: str, root: Path = ROOT, toplevel_only: bool = False) -> set[str]:
    """rfseg modules that the source of module ``name`` imports anywhere in its body (with ``toplevel_only``: outside
    functions, i.e. on import)."""
    path = module_file(name, root)
    if path is None:
        raise ModuleNotFoundError(f"no rfseg module {name!r} under {root}")
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(name, path)
    found: set[str] = set()
    for node in _nodes(tree, toplevel_only):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from rfseg.blocks import io` names a module
    return {m for m in found if module_file(m, root) is not None}


def closure(*names: str, root: Path = ROOT, toplevel_only: bool = False) -> list[str]:
    """Sorted names of every rfseg module that importing ``names`` (and running any of their code) can load,
    including the packages' ``__init__`` modules; with ``toplevel_only``, what importing them loads."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run their __init__
        todo += direct_imports(name, root, toplevel_only)
    return sorted(seen)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _normalised_source(path: Path) -> str:
    return ast.dump(_strip_docstrings(ast.parse(path.read_text(), filename=str(path))), include_attributes=False)


def _cli_view(path: Path, stage_module: str) -> str:
    """The command line's source as the commands calling ``stage_module`` see it: without the option and run
    functions of every other command, and with only their own entries in the command table (``_SUBCOMMANDS``), so
    that adding or editing another command does not rerun their jobs. Shared helpers count for every command."""
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    table = next((n for n in tree.body if isinstance(n, ast.Assign)
                  and any(getattr(t, "id", None) == "_SUBCOMMANDS" for t in n.targets)), None)
    if table is None:
        return ast.dump(tree, include_attributes=False)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}

    def own_functions(entry):  # the add function named in the entry and the run function it sets as func=
        add = entry.elts[2].id
        runs = {kw.value.id for node in ast.walk(functions[add]) if isinstance(node, ast.Call)
                for kw in node.keywords if kw.arg == "func" and isinstance(kw.value, ast.Name)}
        return {add} | runs

    mine = [e for e in table.value.elts if e.elts[1].value == stage_module]
    keep = set().union(*map(own_functions, mine)) if mine else set()
    other = set().union(*(own_functions(e) for e in table.value.elts if e not in mine)) - keep
    tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name in other)]
    table.value.elts = mine
    return ast.dump(tree, include_attributes=False)


@lru_cache(maxsize=None)
def _file_digest(path: Path, mtime_ns: int, stage_module: str | None = None) -> str:
    text = _cli_view(path, stage_module) if stage_module else _normalised_source(path)
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(modules, root: Path, stage_module: str | None = None) -> str:
    h = hashlib.sha256()
    for name in modules:
        path = module_file(name, root)
        h.update(name.encode())
        view = stage_module if name == f"{PACKAGE}.cli" else None
        h.update(_file_digest(path, path.stat().st_mtime_ns, view).encode())
    return h.hexdigest()[:12]


def fingerprint(*names: str, root: Path = ROOT) -> str:
    """12-hex-digit hash of the import closure of ``names``: changes when, and only when, code it runs changes."""
    return _digest(closure(*names, root=root), root)


def command_modules(stage_module: str, root: Path = ROOT) -> list[str]:
    """The rfseg modules that a command calling ``stage_module`` runs (see :data:`rfseg.cli.COMMANDS`): the command
    line itself (what importing it loads) and the import closure of the stage module."""
    return sorted(set(closure("rfseg.cli", root=root, toplevel_only=True)) | set(closure(stage_module, root=root)))


def command_fingerprint(stage_module: str, root: Path = ROOT) -> str:
    """Fingerprint of the code a command calling ``stage_module`` runs; the workflow gives it to every job. Of the
    command line itself only what those commands run counts (:func:`_cli_view`)."""
    return _digest(command_modules(stage_module, root), root, stage_module)
