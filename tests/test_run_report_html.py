"""The HTML run report in a real headless Chromium (Debian's package): it renders offline, its
charts are there, the console stays quiet, and the screenshot shows the charts.

The run is the real command against the fault server with 20 % faults; the report is written
by `run --report` and again from the journal by `runs show ID --report`. The screenshot is kept
under the test's directory (and, with ANABRANCH_SCREENSHOT=PATH, copied there: `make pictures`
refreshes docs/images/run-report.png that way).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from matplotlib import image

from anabranch.telemetry.html import PALETTE

pytestmark = pytest.mark.slow  # a real command run and three Chromium starts: about 20 s

FAULTS = {"429": 0.08, "500": 0.03, "503": 0.03, "reset": 0.03, "400": 0.03}
CHARTS = (
    "stage",
    "throughput",
    "in-flight",
    "latency",
    "errors-over-time",
    "retries",
    "tokens",
    "error-type",
)
"""Every chart the page draws (`data-chart` of its SVG)."""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "headless Chromium is needed: apt-get install -y chromium (make test does it)"
    return path


def browse(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium, headless, offline (no proxy, no network service reachable), on `page`."""
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--proxy-server=127.0.0.1:9",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={page.parent / 'chromium-profile'}",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def reports(fault_server, tmp_path_factory):
    """One CLI run with faults: its report, and the same run's report from the journal."""
    fault_server.configure(
        rates=FAULTS, retry_after=0.02, retry_after_format="fractional", latency_ms=20, seed=5
    )
    root = tmp_path_factory.mktemp("report")
    tasks = root / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"id": f"t{i}", "text": f"Task {i} reads well."}) + "\n" for i in range(60)
        )
    )
    proc = run_cli(
        "run",
        str(tasks),
        "--out",
        str(root / "out.jsonl"),
        "--llm",
        fault_server.url,
        "--model",
        "fault",
        "--backend",
        "llm",
        "--report",
        str(root / "run.html"),
        "--concurrency",
        "12",
        "--llm-concurrency",
        "12",
    )
    assert proc.returncode in (0, 4), proc.stderr
    run_id = re.search(r"\(run (\w+)\)", proc.stdout).group(1)
    again = run_cli(
        "runs",
        "show",
        run_id,
        str(root / "out.jsonl.journal"),
        "--report",
        str(root / "again.html"),
    )
    assert again.returncode == 0, again.stderr
    return root / "run.html", root / "again.html", fault_server.stats()


def test_the_report_renders_in_chromium_with_its_charts_and_a_quiet_console(reports):
    page, _, stats = reports
    dom = browse(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    # The DOM Chromium built holds every chart, drawn (paths and bars, not empty frames).
    for chart in CHARTS:
        assert f'data-chart="{chart}"' in dom.stdout, chart
    # Bars and tiles: how many depends on the run's length (a quiet machine: 90, a busy one: more).
    assert dom.stdout.count("<rect") > 50 and dom.stdout.count("<polyline") >= 3
    # The page asked for nothing from anywhere and said nothing on the console.
    assert "<script" not in page.read_text() and "http://" not in page.read_text()
    assert not re.search(r"CONSOLE|Uncaught|net::ERR", dom.stderr), dom.stderr
    # It tells this run: the tasks, the 429s the server sent, the failures with their reasons.
    text = dom.stdout
    assert "60 tasks" in text and "tasks ok" in text
    assert stats["faults"]["429"] > 0 and ">429<" in text
    if stats["faults"].get("400"):
        assert "HTTP 400" in text  # a task that failed, and why


def test_the_screenshot_shows_the_charts(reports, tmp_path):
    page, _, _ = reports
    shot = tmp_path / "run-report.png"
    proc = browse(page, "--window-size=1280,1900", f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr
    pixels = (image.imread(shot)[:, :, :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (1900, 1280)
    # The charts' colours fill real areas of the picture (the bars and lines were painted).
    for colour in PALETTE[:4]:
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        painted = int((np.abs(pixels - rgb).sum(axis=2) < 24).sum())
        assert painted > 300, (colour, painted)
    if target := os.environ.get("ANABRANCH_SCREENSHOT"):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_a_past_run_draws_the_same_report_from_its_journal(reports):
    live, from_journal, _ = reports
    charts = re.compile(r'data-chart="([\w-]+)"')
    assert charts.findall(from_journal.read_text()) == charts.findall(live.read_text())
    assert from_journal.read_text() == live.read_text()  # the journal keeps all it shows
