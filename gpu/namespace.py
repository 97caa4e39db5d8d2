"""Which ``xp.<name>`` a package uses, found by parsing its source (``ast``), and which of them a
namespace (CuPy) lacks.

A use is any attribute chain on a namespace expression: the name ``xp`` (however it was bound:
``xp = get_xp(a)``, a parameter ``xp``), a direct call ``get_xp(...)``, or
``getattr(<namespace>, "name")`` with a constant name. ``xp.linalg.norm`` records both
``linalg`` and ``linalg.norm``. Names reached in other ways (``f = getattr(xp, name)`` with a
variable) cannot be seen statically; the strict stand-in catches those at run time.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

NAMESPACE_NAMES = ("xp",)
NAMESPACE_GETTERS = ("get_xp",)


def _is_namespace(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in NAMESPACE_NAMES
    if isinstance(node, ast.Call):
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        return name in NAMESPACE_GETTERS
    return False


def _chain(node: ast.AST) -> str | None:
    """``xp.a.b`` -> "a.b"; ``getattr(xp, "a")`` -> "a"; None if not rooted at a namespace."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str) and _is_namespace(node.args[0])):
        parts.append(node.args[1].value)
        node = node.args[0]
    if not parts or not _is_namespace(node):
        return None
    return ".".join(reversed(parts))


def uses_in_source(source: str, filename: str = "<source>") -> dict[str, list[str]]:
    """{"zeros": ["file.py:12", ...], "linalg.norm": [...]} for one module's source."""
    found: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.Attribute, ast.Call)):
            chain = _chain(node)
            if chain is not None:
                found.setdefault(chain, []).append(f"{filename}:{node.lineno}")
    return found


def uses_in_package(directory) -> dict[str, list[str]]:
    """The same over every ``*.py`` under ``directory``."""
    found: dict[str, list[str]] = {}
    root = Path(directory)
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root.parent))
        for name, where in uses_in_source(path.read_text(), rel).items():
            found.setdefault(name, []).extend(where)
    return found


def missing(namespace, names) -> list[str]:
    """The dotted names that ``namespace`` (a module such as cupy) does not have."""

    def has(name: str) -> bool:
        try:
            functools.reduce(getattr, name.split("."), namespace)
        except AttributeError:
            return False
        return True

    return sorted(n for n in names if not has(n))
