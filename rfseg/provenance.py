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


def _normalised_source(path: Path) -> str:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


@lru_cache(maxsize=None)
def _file_digest(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(_normalised_source(path).encode()).hexdigest()


def _digest(modules, root: Path) -> str:
    h = hashlib.sha256()
    for name in modules:
        path = module_file(name, root)
        h.update(name.encode())
        h.update(_file_digest(path, path.stat().st_mtime_ns).encode())
    return h.hexdigest()[:12]


def fingerprint(*names: str, root: Path = ROOT) -> str:
    """12-hex-digit hash of the import closure of ``names``: changes when, and only when, code it runs changes."""
    return _digest(closure(*names, root=root), root)


def command_modules(stage_module: str, root: Path = ROOT) -> list[str]:
    """The rfseg modules that a command calling ``stage_module`` runs (see :data:`rfseg.cli.COMMANDS`): the command
    line itself (what importing it loads) and the import closure of the stage module."""
    return sorted(set(closure("rfseg.cli", root=root, toplevel_only=True)) | set(closure(stage_module, root=root)))


def command_fingerprint(stage_module: str, root: Path = ROOT) -> str:
    """Fingerprint of the code a command calling ``stage_module`` runs; the workflow gives it to every job."""
    return _digest(command_modules(stage_module, root), root)
