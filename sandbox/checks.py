"""Static pre-check of chart code: reject obvious escapes early, with a message an LLM can act on.

This is a courtesy layer, not the boundary: Python cannot be sandboxed by inspecting its AST (string
tricks, `getattr` chains and library internals get around any list). The worker's OS-level isolation
(namespaces, dropped privileges, seccomp, rlimits) is what holds; the security tests run every attack
with this check switched off to prove it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

ALLOWED_MODULES = frozenset(
    {
        "matplotlib", "numpy", "pandas", "math", "datetime", "statistics", "collections", "itertools",
        "json", "csv", "io", "textwrap", "decimal", "__future__",
    }
)  # fmt: skip
# Sub-packages of allowed modules that reach native code, the compiler or processes.
DENIED_SUBMODULES = frozenset({"ctypeslib", "f2py", "distutils", "testing", "clipboard", "clipboards"})
IO_ALLOWED = frozenset({"StringIO", "BytesIO"})
DENIED_CALLS = frozenset(
    {
        "__import__", "eval", "exec", "compile", "globals", "locals", "vars", "breakpoint", "input",
        "help", "memoryview", "exit", "quit", "delattr", "setattr",
    }
)  # fmt: skip
# Attribute names that lead out of the plotting libraries (e.g. `matplotlib.subprocess`, `np.os`).
DENIED_ATTRS = frozenset(
    {
        "os", "sys", "subprocess", "ctypes", "ctypeslib", "importlib", "builtins", "socket", "shutil",
        "system", "popen", "spawn", "fork", "forkpty", "kill", "killpg", "execv", "execve", "f2py",
        "distutils", "f_globals", "f_locals", "f_back", "gi_frame", "cr_frame", "tb_frame", "co_code",
    }
)  # fmt: skip
ALLOWED_DUNDERS = frozenset({"__name__", "__doc__", "__init__"})
# Functions whose first argument is a path: only relative paths inside the work dir are accepted.
PATH_FUNCS = frozenset(
    {
        "open", "read_csv", "read_table", "read_json", "read_excel", "read_fwf", "read_parquet",
        "read_pickle", "read_html", "read_xml", "read_feather", "read_sql", "loadtxt", "genfromtxt",
        "load", "fromfile", "savefig", "to_csv", "to_json", "to_excel", "to_pickle", "save", "savetxt",
        "imread", "imsave",
    }
)  # fmt: skip
_FORMAT_DUNDER = re.compile(r"\{[^{}]*__\w+")  # "{0.__class__}".format(x) reads attributes


@dataclass(frozen=True)
class CheckFailure:
    """Why the code was refused; `message` names the line and the construct."""

    message: str
    line: int


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and len(name) > 4


def _bad_path(value: str) -> bool:
    parts = value.replace("\\", "/").split("/")
    return value.startswith(("/", "~")) or ".." in parts or value.startswith("file:")


class _Checker(ast.NodeVisitor):
    def __init__(self) -> None:
        self.failures: list[CheckFailure] = []
        self.io_aliases: set[str] = set()

    def fail(self, node: ast.AST, message: str) -> None:
        line = getattr(node, "lineno", 0)
        self.failures.append(CheckFailure(f"line {line}: {message}", line))

    def _check_module(self, node: ast.AST, name: str) -> None:
        parts = name.split(".")
        if parts[0] not in ALLOWED_MODULES:
            allowed = ", ".join(sorted(ALLOWED_MODULES - {"__future__"}))
            self.fail(node, f"import of '{name}' is not allowed (allowed: {allowed})")
        elif DENIED_SUBMODULES.intersection(parts[1:]):
            self.fail(node, f"import of '{name}' is not allowed")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)
            if alias.name == "io":
                self.io_aliases.add(alias.asname or "io")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.fail(node, "relative imports are not allowed")
            return
        module = node.module or ""
        self._check_module(node, module)
        for alias in node.names:
            if module == "io" and alias.name not in IO_ALLOWED:
                self.fail(node, f"only StringIO and BytesIO may be imported from io, not '{alias.name}'")
            if alias.name in DENIED_SUBMODULES or alias.name in DENIED_ATTRS:
                self.fail(node, f"importing '{alias.name}' from '{module}' is not allowed")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if _is_dunder(node.id) and node.id not in ALLOWED_DUNDERS:
            self.fail(node, f"the name '{node.id}' is not allowed")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("__") and node.attr not in ALLOWED_DUNDERS:
            self.fail(node, f"access to the attribute '{node.attr}' is not allowed")
        elif node.attr in DENIED_ATTRS or node.attr in DENIED_SUBMODULES:
            self.fail(node, f"access to the attribute '{node.attr}' is not allowed")
        elif isinstance(node.value, ast.Name) and node.value.id in self.io_aliases:
            if node.attr not in IO_ALLOWED:
                self.fail(node, f"only io.StringIO and io.BytesIO are allowed, not io.{node.attr}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if isinstance(func, ast.Name) and name in DENIED_CALLS:
            self.fail(node, f"calling '{name}' is not allowed")
        if name in {"getattr", "hasattr"} and isinstance(func, ast.Name):
            attr = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
                self.fail(node, f"'{name}' is only allowed with a literal attribute name")
            elif attr.value.startswith("__") or attr.value in DENIED_ATTRS:
                self.fail(node, f"'{name}' with '{attr.value}' is not allowed")
        if name in PATH_FUNCS and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and _bad_path(first.value):
                self.fail(node, f"'{first.value}' is outside the work directory; use a plain file name")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and _FORMAT_DUNDER.search(node.value):
            self.fail(node, "format strings may not reach dunder attributes")


def check_code(code: str) -> CheckFailure | None:
    """Return why `code` is refused, or None if it passes. Syntax errors are left to the worker."""
    try:
        tree = ast.parse(code, filename="<chart>")
    except (SyntaxError, ValueError):
        return None
    checker = _Checker()
    checker.visit(tree)
    if not checker.failures:
        return None
    first = checker.failures[0]
    more = len(checker.failures) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return CheckFailure(first.message + suffix, first.line)
