"""`anabranch eval`: sentiment backends measured against human labels.

The end-to-end test runs the real command on the embedded llama.cpp server (its real token
probabilities included); the figures are checked for consistency, never against fixed values.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import run_cli

from anabranch.analysis import label_probabilities
from anabranch.analysis.evaluation import bootstrap, builtin_set, read_labelled, score
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
                   "--backend", "llm", "--backend", "llm-probs", "--backend", "llm-blend",
                   "--out", str(out))  # fmt: skip
    # Exit 2: lines were rejected (named on stderr), and the rest was measured.
    assert done.returncode == 2, done.stderr
    assert "line 3" in done.stderr and "line 8" in done.stderr
    assert "agreement" in done.stdout and "llm-probs" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["band"] == 1.0
    by_name = {b["backend"]: b for b in figures["backends"]}
    assert set(by_name) == {"local", "llm", "llm-probs", "llm-blend"}
    for name, backend in by_name.items():
        assert backend["texts"] == 5
        assert sum(sum(row.values()) for row in backend["confusion"].values()) == 5
        correct = sum(backend["confusion"][g][g] for g in backend["confusion"])
        assert backend["agreement"] == pytest.approx(correct / 5)
        assert (backend["usage"]["requests"] > 0) == (name != "local")
    # One token per text is all the probabilities backends generate.
    for name in ("llm-probs", "llm-blend"):
        assert by_name[name]["usage"]["completion_tokens"] <= 5
        assert by_name[name]["failed"] == 0


def test_eval_refuses_llm_backends_without_an_llm(labelled):
    done = run_cli("eval", str(labelled), "--backend", "llm")
    assert done.returncode == 2 and "--llm" in done.stderr


def test_llm_probs_and_llm_blend_are_sentiment_backends_only():
    from anabranch.analysis import (
        DEFAULT_LLM_BACKEND,
        BlendedSentiment,
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
    with pytest.raises(ConfigError, match="tokenize=llm-blend: use one of local, llm"):
        parse_backend("tokenize=llm-blend", True)
    # With an LLM and no --backend, sentiment is the blend and the others run on the LLM.
    assert parse_backend(None, True) == DEFAULT_LLM_BACKEND
    assert DEFAULT_LLM_BACKEND["sentiment"] == "llm-blend" and parse_backend(None, False) == "local"
    tokens, keywords, sentiment = make_agents(DEFAULT_LLM_BACKEND, Endpoint("http://x:9", "m"))
    assert type(sentiment) is BlendedSentiment and type(keywords) is LLMKeywordAgent


def test_the_blend_takes_the_lean_off_then_averages_then_reads_its_band():
    from anabranch.analysis import Blend
    from anabranch.tools.sentiment import label_for

    blend = Blend(weight=1.0, lean=0.5, band=0.15)
    # (0 + (0.9 - 0.5)) / 2 = 0.2, past the band: positive, its score moved 0.1 toward 0.
    assert blend.output(0.0, 0.9).model_dump() == {"label": "positive", "score": 0.1}
    # (0 + (0.7 - 0.5)) / 2 = 0.1, within the band: neutral, however sure VADER's cut-off is.
    assert blend.output(0.0, 0.7).label == "neutral"
    # (-0.6 + (0.5 - 0.5)) / 2 = -0.3: the model's lean alone does not pull it positive.
    assert blend.output(-0.6, 0.5).model_dump() == {"label": "negative", "score": -0.2}
    for vader, model in [(0.3, -0.4), (-0.05, 0.95), (1.0, 1.0), (-1.0, -1.0)]:
        out = blend.output(vader, model)
        assert label_for(out.score) == out.label and -1.0 <= out.score <= 1.0


async def test_the_blend_reads_the_servers_probabilities_with_one_request(faults):
    from anabranch.analysis import BlendedSentiment
    from anabranch.llm.endpoint import Endpoint
    from anabranch.testing.fault_server import LABEL_LOGPROBS
    from anabranch.tools.sentiment import VaderSentiment
    from anabranch.types import Subtask

    texts = ["The meeting is at noon.", "I love it, wonderful!", "Awful, a waste of money."]
    async with Endpoint(faults.url, "fault") as llm:
        agent = BlendedSentiment(llm)
        answers = [await agent.run(Subtask(task_id="t", kind="sentiment", text=t)) for t in texts]
    assert faults.stats()["requests"] == 3 and all(a.usage.requests == 1 for a in answers)
    # The fault server gives every answer the same first-token odds (positive ahead).
    odds = label_probabilities(LABEL_LOGPROBS)
    assert odds is not None
    for text, answer in zip(texts, answers, strict=True):
        vader = await VaderSentiment().score(text)
        assert answer.output == agent.blend.output(vader, odds["positive"] - odds["negative"])
    labels = [a.output.label for a in answers]  # type: ignore[attr-defined]
    assert labels == ["neutral", "positive", "negative"]


async def test_the_blend_falls_back_to_json_when_a_server_sends_no_probabilities(faults, caplog):
    from anabranch.analysis import BlendedSentiment
    from anabranch.llm.endpoint import Endpoint
    from anabranch.types import Subtask

    faults.configure(logprobs=False)
    async with Endpoint(faults.url, "fault") as llm:
        blend = BlendedSentiment(llm)
        first, second = [
            await blend.run(Subtask(task_id="t", kind="sentiment", text="The meeting is at noon."))
            for _ in range(2)
        ]
    # One request finds out; from then on the JSON judgement alone is asked.
    assert (first.usage.requests, second.usage.requests) == (2, 1)
    assert faults.stats()["requests"] == 3
    assert [r.message for r in caplog.records if "JSON judgement" in r.message] == [
        f"{faults.url}: the server sent no token probabilities (it needs `logprobs` support); "
        "sentiment blends the model's JSON judgement instead"
    ]
    # The fault server's judgement is `positive, low` (0.34): half of it, past the band.
    assert first.output.label == second.output.label == "positive"  # type: ignore[attr-defined]


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
