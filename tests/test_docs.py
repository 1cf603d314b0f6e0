"""The docs hold to the repository: links and anchors resolve inside it, the CLI reference is the
commands' own help, docs/architecture.md's layout is the package, and the README's example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from conftest import ROOT

from anabranch.cli import app

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_inside_the_repository(doc):
    broken = []
    for link in relative_links(doc):
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        missing = not path.is_relative_to(ROOT) or not path.exists()
        if missing or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(link)
    assert not broken, f"{doc.name}: links to nothing in the repository: {broken}"


def test_the_docs_link_each_other():
    """A newcomer reaches every page of docs/ from the README, directly or through a page."""
    seen, todo = set(), [ROOT / "README.md"]
    while todo:
        doc = todo.pop()
        for link in relative_links(doc):
            target = (doc.parent / link.partition("#")[0]).resolve()
            if target.suffix == ".md" and target.is_file() and target not in seen:
                seen.add(target)
                todo.append(target)
    assert {p.resolve() for p in DOCS[1:]} <= seen


def help_rows(name: str) -> list[str]:
    """The option table of one command, from its own help (what `anabranch NAME --help` shows)."""
    command = typer.main.get_command(app).commands[name]
    ctx = typer.Context(command, info_name=name)
    rows = []
    for param in command.params:
        if param.param_type_name == "option" and param.name != "help":
            flags, text = (part.replace("|", "\\|") for part in param.get_help_record(ctx))
            rows.append(f"| `{flags}` | {text} |")
    return rows


def test_the_cli_reference_is_the_commands_own_help():
    """docs/cli.md has a section per command whose option table is the command's help: regenerate
    a table from the rows this test prints when an option changes."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## anabranch (\S+)\n(.*?)(?=^## |\Z)", text, re.S | re.M))
    commands = typer.main.get_command(app).commands
    assert set(sections) == set(commands)
    for name in commands:
        documented = [row for row in sections[name].splitlines() if row.startswith("| `-")]
        expected = help_rows(name)
        assert documented == expected, f"anabranch {name}'s options are:\n" + "\n".join(expected)


def test_the_readme_example_runs_against_the_fault_server(faults, tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(.*?)```", readme, re.S)
    assert example and "http://127.0.0.1:8001" in example.group(1)
    script = tmp_path / "example.py"
    script.write_text(example.group(1).replace("http://127.0.0.1:8001", faults.root))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = sorted(proc.stdout.splitlines())
    assert [line.split()[:2] for line in lines] == [["r1", "ok"], ["r2", "ok"]]
    assert faults.stats()["requests"] == 2  # one LLM call per task: the agent really asked


def documented_modules() -> set[str]:
    """The paths docs/architecture.md's layout tree names: one entry per line, its depth by its
    indent (two spaces a level); a line whose first column is not a name continues the one above."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = re.search(r"^## The layout\n.*?^```\n(.*?)^```", text, re.S | re.M)
    assert tree, "docs/architecture.md has no layout tree"
    paths, folders = set(), []
    for line in tree.group(1).splitlines():
        indent = len(line) - len(line.lstrip())
        name = line.strip().split("  ")[0]
        if not re.fullmatch(r"[\w.]+(\.\w+|/)", name):
            continue
        folders = folders[: indent // 2]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            paths.add("/".join([*folders, name]))
    return paths


def test_the_architecture_layout_is_the_package():
    package = ROOT / "anabranch"
    files = [*package.rglob("*.py"), *(package / "data").iterdir()]
    actual = {p.relative_to(ROOT).as_posix() for p in files if p.is_file()}
    documented = documented_modules()
    assert documented - actual == set(), "the layout names modules that do not exist"
    assert actual - documented == set(), "modules missing from docs/architecture.md's layout"
