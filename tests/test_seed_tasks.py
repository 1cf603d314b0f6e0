"""The seed's three task kinds through `anabranch run` (the real command, in a subprocess):
'Analyze text A' gets the analysis, 'Summarize report B' a summary, 'Translate sentence C into
French' a translation; against the fault server, and on the embedded model."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from anabranch import Task
from anabranch.agents.planner import RulePlanner
from anabranch.agents.text import ROUTES

SEED = [
    {"id": "A", "instruction": "Analyze text A",
     "text": "The new library is fast and the documentation is wonderful. I love the examples."},
    {"id": "B", "instruction": "Summarize report B",
     "text": "Quarterly report: revenue grew by twelve percent while costs stayed flat. The team "
             "shipped two products and hired five engineers. Customer churn fell to three "
             "percent."},
    {"id": "C", "instruction": "Translate sentence C into French",
     "text": "The weather is beautiful today."},
]  # fmt: skip


def run_seed(tmp_path, llm: str) -> dict[str, dict]:
    tasks = tmp_path / "seed.jsonl"
    tasks.write_text("".join(json.dumps(t) + "\n" for t in SEED))
    out = tmp_path / "out.jsonl"
    proc = run_cli("run", str(tasks), "--out", str(out), "--llm", llm)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 tasks -> 5 subtasks -> 5 results -> 3 task results -> 3 delivered" in proc.stdout
    return {r["task_id"]: r for r in map(json.loads, out.read_text().splitlines())}


def check_kinds(records: dict[str, dict]) -> None:
    """An analysis for A, a summary for B, a translation for C, and nothing else for each."""
    a, b, c = records["A"], records["B"], records["C"]
    assert a["sentiment"] in ("positive", "negative", "neutral") and a["token_count"] > 0
    assert a["outputs"] == {}
    assert set(b["outputs"]) == {"summarize"} and b["outputs"]["summarize"]["summary"].strip()
    assert b["sentiment"] is None and b["token_count"] == 0
    assert set(c["outputs"]) == {"translate"}
    translation = c["outputs"]["translate"]
    assert translation["text"].strip() and translation["target_language"].strip()


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_the_seed_tasks_against_the_fault_server(faults, tmp_path):
    records = run_seed(tmp_path, faults.url)
    check_kinds(records)
    # A's two LLM analysts (keywords, sentiment), B's summarizer, C's translator: one call each.
    assert faults.stats()["requests"] == 4


@pytest.mark.slow
def test_the_seed_tasks_on_the_embedded_model(tmp_path):
    records = run_seed(tmp_path, "local")
    check_kinds(records)


def test_instructions_route_tasks_to_the_agents_they_ask_for():
    planner = RulePlanner(kinds=["tokenize", "keywords", "sentiment"], routes=ROUTES)

    def kinds(instruction: str | None) -> list[str]:
        return list(planner.kinds_for(Task(id="t", text="x", instruction=instruction)))

    assert kinds("Summarize report B") == ["summarize"]
    assert kinds("Give me a summary") == ["summarize"]
    assert kinds("translate sentence C into French") == ["translate"]
    assert kinds("Summarize this, then translate it") == ["summarize", "translate"]
    assert kinds("Analyze text A") == ["tokenize", "keywords", "sentiment"]
    assert kinds(None) == ["tokenize", "keywords", "sentiment"]
    assert kinds("retranslate nothing") == ["tokenize", "keywords", "sentiment"]  # word starts
