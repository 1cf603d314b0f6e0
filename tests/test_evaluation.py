"""`anabranch eval`: sentiment backends measured against human labels.

The end-to-end test runs the real command on the embedded llama.cpp server (its real token
probabilities included); the figures are checked for consistency, never against fixed values.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import run_cli

from anabranch.agents.analysts import label_probabilities
from anabranch.evaluation import bootstrap, builtin_set, read_labelled, score
from anabranch.types import Usage

LINES = [
    {"id": "a", "text": "I love this phone, it is wonderful.", "label": "positive"},
    {"id": "b", "text": "Terrible service, I am furious.", "label": "negative"},
    "{not json",
    {"id": "c", "text": "The meeting is at noon.", "label": "neutral"},
    {"id": "d", "text": "What a fantastic, happy day!", "human_mean": 2.6},
    {"id": "e", "text": "The worst film I have ever seen.", "human_mean": -2.9},
    {"id": "f", "text": "It was fine, I guess.", "human_mean": 0.3},
    {"id": "g", "text": "no label here"},
    {"id": "a", "text": "a repeated id", "label": "positive"},
]


@pytest.fixture
def labelled(tmp_path):
    path = tmp_path / "labelled.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in LINES) + "\n")
    return path


def test_a_labelled_file_names_its_bad_lines_and_keeps_the_rest(labelled):
    found = read_labelled(labelled, band=1.0)
    assert [i.id for i in found.items] == ["a", "b", "c", "d", "e"]
    assert [i.label for i in found.items][3:] == ["positive", "negative"]
    assert found.in_band == 1  # f: 0.3 is too close to neutral to call
    assert [p.split(":")[0] for p in found.problems] == ["line 3", "line 8", "line 9"]


def test_the_figures_add_up():
    gold = ["positive", "positive", "negative", "neutral", "neutral", "negative"]
    given = ["positive", "negative", "negative", "neutral", "failed", "negative"]
    figures = score("x", gold, given, Usage(), 1.0)
    assert figures.agreement == pytest.approx(4 / 6)
    assert figures.failed == 1
    negative = figures.classes["negative"]
    assert (negative.precision, negative.recall) == (pytest.approx(2 / 3), 1.0)
    assert figures.classes["positive"].recall == 0.5
    assert figures.confusion["neutral"] == {"positive": 0, "negative": 0, "neutral": 1, "failed": 1}
    assert sum(sum(row.values()) for row in figures.confusion.values()) == len(gold)
    low, high = figures.interval
    assert low < figures.agreement < high


def test_the_bootstrap_interval_narrows_with_more_texts():
    few, many = bootstrap([True, False] * 10), bootstrap([True, False] * 500)
    assert few[0] < many[0] <= 0.5 <= many[1] < few[1]


def test_label_probabilities_read_the_labels_first_tokens():
    odds = label_probabilities([(" Positive", math.log(0.6)), ("neg", math.log(0.2)),
                                ("The", math.log(0.1)), ("ne", math.log(0.05))])  # fmt: skip
    assert odds == pytest.approx({"positive": 0.75, "negative": 0.25, "neutral": 0.0})
    assert label_probabilities([("The", -0.1)]) is None


def test_the_shipped_set_has_both_parts_and_every_label():
    tune = read_labelled(builtin_set(), split="tune")
    held_out = read_labelled(builtin_set(), split="held-out")
    assert not tune.problems and len(tune.items) + len(held_out.items) >= 300
    assert {i.id for i in tune.items}.isdisjoint({i.id for i in held_out.items})
    for part in (tune, held_out):
        assert {i.label for i in part.items} == {"positive", "negative", "neutral"}


@pytest.mark.slow
def test_eval_compares_backends_on_the_embedded_model(labelled, tmp_path):
    out = tmp_path / "figures.json"
    done = run_cli("eval", str(labelled), "--llm", "local", "--backend", "local",
                   "--backend", "llm", "--backend", "llm-probs", "--out", str(out))  # fmt: skip
    # Exit 2: lines were rejected (named on stderr), and the rest was measured.
    assert done.returncode == 2, done.stderr
    assert "line 3" in done.stderr and "line 8" in done.stderr
    assert "agreement" in done.stdout and "llm-probs" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["band"] == 1.0
    by_name = {b["backend"]: b for b in figures["backends"]}
    assert set(by_name) == {"local", "llm", "llm-probs"}
    for name, backend in by_name.items():
        assert backend["texts"] == 5
        assert sum(sum(row.values()) for row in backend["confusion"].values()) == 5
        correct = sum(backend["confusion"][g][g] for g in backend["confusion"])
        assert backend["agreement"] == pytest.approx(correct / 5)
        assert (backend["usage"]["requests"] > 0) == (name != "local")
    # One token per text is all the probabilities backend generates.
    assert by_name["llm-probs"]["usage"]["completion_tokens"] <= 5
    assert by_name["llm-probs"]["failed"] == 0


def test_eval_refuses_llm_backends_without_an_llm(labelled):
    done = run_cli("eval", str(labelled), "--backend", "llm")
    assert done.returncode == 2 and "--llm" in done.stderr


def test_llm_probs_is_a_sentiment_backend_only():
    from anabranch.agents.analysts import (
        LLMKeywordAgent,
        LLMLabelProbabilities,
        ServerTokenizer,
        make_agents,
        parse_backend,
    )
    from anabranch.errors import ConfigError
    from anabranch.llm.endpoint import Endpoint

    assert parse_backend("llm-probs", True) == "llm-probs"
    assert parse_backend("keywords=local,sentiment=llm-probs", True)["sentiment"] == "llm-probs"
    with pytest.raises(ConfigError, match="keywords=llm-probs: use one of local, llm"):
        parse_backend("keywords=llm-probs", True)
    tokens, keywords, sentiment = make_agents("llm-probs", Endpoint("http://127.0.0.1:9", "m"))
    assert type(sentiment) is LLMLabelProbabilities  # and the others on the LLM, as with llm
    assert type(keywords) is LLMKeywordAgent and type(tokens.tokenizer) is ServerTokenizer


@pytest.mark.slow
def test_run_reads_sentiment_off_token_probabilities(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    texts = ["I love it, wonderful!", "Awful, broken, a waste.", "It opens at nine."]
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n"
                             for i, t in enumerate(texts)))  # fmt: skip
    out = tmp_path / "results.jsonl"
    done = run_cli("run", str(tasks), "--out", str(out), "--llm", "local",
                   "--backend", "tokenize=local,keywords=local,sentiment=llm-probs")  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 3 and all(r["status"] == "ok" and r["sentiment"] for r in results)
    # One generated token per text: the label's first token, read off its probabilities.
    assert all(r["usage"]["completion_tokens"] == 1 for r in results)
