"""The package works outside the repository: built as a wheel, installed into a fresh venv, run
from an empty directory (the example tasks and the model set-up ship inside the package)."""

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_the_wheel_runs_the_demo_from_an_empty_directory(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(dist), str(ROOT)],
        check=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("anabranch-*.whl")
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
                   check=True, timeout=300)  # fmt: skip
    # The dependencies come from this environment, but not this source tree: a path file adds
    # the site-packages without running its own path files (the editable install among them).
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    fresh_site = Path(site)
    (fresh_site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    anabranch = fresh / "bin" / "anabranch"

    where = subprocess.run([python, "-c", "import anabranch; print(anabranch.__file__)"],
                           capture_output=True, text=True, cwd=empty, check=True)  # fmt: skip
    assert where.stdout.startswith(str(fresh_site))  # the wheel, not the source tree
    demo = subprocess.run([anabranch, "demo", "--backend", "local", "--out", "out.jsonl"],
                          capture_output=True, text=True, cwd=empty, timeout=300)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    results = [json.loads(line) for line in (empty / "out.jsonl").read_text().splitlines()]
    assert len(results) == 100 and "-> 100 delivered" in demo.stdout
    setup = subprocess.run([anabranch, "setup"], capture_output=True, text=True, cwd=empty,
                           timeout=600)  # fmt: skip
    assert setup.returncode == 0 and "local LLM ready" in setup.stdout
