"""The package's shape: every module imports on its own, no two modules import each other, and
every exception it raises is one of errors.py's."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import anabranch
from anabranch import errors

PACKAGE = Path(anabranch.__file__).parent
ROOT = PACKAGE.parent


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (`__main__` runs the command)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def top_level_imports(path: Path) -> list[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported (not those inside functions)."""
    tree = ast.parse(path.read_text())
    found: list[ast.Import | ast.ImportFrom] = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.Try):
            found += [n for n in node.body if isinstance(n, ast.Import | ast.ImportFrom)]
    return found


@pytest.mark.slow  # a fork and an import per module
def test_every_module_imports_first_in_a_fresh_interpreter():
    """A cycle shows as an ImportError only when a module in it is the first one imported. One
    interpreter imports every module (so that the libraries they use are loaded once: the
    package itself imports its API on first use, and each child loaded them again, 94 s in
    all), forgets the package's own modules, then forks a child that imports each afresh."""
    names = sorted(modules())
    script = f"""
import importlib, os, sys, traceback
for name in {names!r}:
    importlib.import_module(name)
for loaded in [m for m in sys.modules if m == "anabranch" or m.startswith("anabranch.")]:
    del sys.modules[loaded]
failed = []
for name in {names!r}:
    child = os.fork()
    if child == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    if status:
        failed.append(name)
print(failed)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stderr


def test_no_two_modules_import_each_other():
    """Module-level imports between the package's modules form no cycle (the root package,
    which only re-exports, aside)."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for node in top_level_imports(path):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif node.level == 0 and node.module:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                           else node.module for a in node.names]  # fmt: skip
            else:
                targets = []
            graph[name] |= {t for t in targets if t in known and t != "anabranch"}
    cycles = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for other in sorted(graph[node]):
            if state.get(other) == 1:
                cycles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, [*path, other])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles


ALLOWED = {
    "typer.Exit": "the CLI's way to end with an exit code",
    "UsageError": "the CLI's bad usage (anabranch/cli/codes.py): kept apart from errors.py so "
    "the commands load before pydantic does; it never leaves the CLI",
    "openai": "the transport layer hands the SDK's own exceptions to the retry layer, which "
    "turns them into LLMError",
}
"""What the package may raise besides errors.py's classes, and why."""

PROTOCOL = {
    ("anabranch/__init__.py", "AttributeError"): "a module's __getattr__ (PEP 562) must",
    ("anabranch/telemetry/__init__.py", "AttributeError"): "the same, for the telemetry package",
    ("anabranch/types.py", "KeyError"): "TaskResult.output(name): a lookup by key, as a mapping's",
    ("anabranch/types.py", "TypeError"): "TaskResult.output(name, model): an argument of the "
    "wrong kind for that output",
}
"""Python's own exceptions where a protocol of the language asks for them, by file."""


def raised_classes() -> list[tuple[str, int, str]]:
    """(file, line, name) of every `raise SomeClass(...)` in the package, but for raises inside
    pydantic validators (pydantic turns their ValueError into a ValidationError)."""
    found = []
    for path in modules().values():
        tree = ast.parse(path.read_text())
        validators = {
            id(node)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            and any("validator" in ast.unparse(d) for d in fn.decorator_list)
            for node in ast.walk(fn)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None or id(node) in validators:
                continue
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = ast.unparse(target)
            if name.split(".")[-1][:1].isupper():  # a class, not a variable holding one
                found.append((str(path.relative_to(ROOT)), node.lineno, name))
    return found


def test_every_exception_the_package_raises_is_defined_in_errors():
    defined = {name for name, value in vars(errors).items()
               if inspect.isclass(value) and issubclass(value, BaseException)
               and value.__module__ == errors.__name__}  # fmt: skip
    strays = [
        f"{path}:{line}: {name}"
        for path, line, name in raised_classes()
        if name not in defined
        and name not in ALLOWED
        and name.split(".")[0] not in ALLOWED
        and (path, name) not in PROTOCOL
    ]
    assert not strays
    assert sorted(errors.__all__) == sorted(defined | {"describe"})
    assert all(issubclass(getattr(errors, n), errors.AnabranchError) for n in defined)


def test_no_module_but_errors_defines_an_exception():
    strays = []
    for name in modules():
        module = importlib.import_module(name)
        strays += [
            f"{name}.{attr}"
            for attr, value in vars(module).items()
            if inspect.isclass(value)
            and issubclass(value, BaseException)
            and value.__module__ == name != errors.__name__
            and f"{name}.{attr}" != "anabranch.cli.codes.UsageError"  # see ALLOWED
        ]
    assert not strays


def test_no_module_is_over_400_lines():
    """Small modules named by concept: one that grows past 400 lines holds two concepts."""
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py")}  # fmt: skip
    assert {name: n for name, n in sizes.items() if n > 400} == {}
