import asyncio
import time

from anabranch.tools.keywords import YakeKeywords
from anabranch.tools.sentiment import VaderSentiment, label_for
from anabranch.tools.tokenizer import TiktokenTokenizer, count_tokens, readable_pieces


async def test_tiktoken_pieces_rebuild_the_text():
    text = "Async agents split work; café, naïve, 日本語 all survive."
    out = await TiktokenTokenizer().tokenize(text)
    assert "".join(out.tokens) == text and out.tokenizer == "tiktoken:cl100k_base"
    assert out.count == count_tokens(text) > len(out.tokens)  # 語 spans two tokens
    assert "\ufffd" not in "".join(out.tokens)


def test_readable_pieces_joins_split_characters():
    data = "語".encode()
    assert readable_pieces([data[:1], data[1:], b" ok"]) == ["語", " ok"]


async def test_long_text_does_not_block_the_event_loop():
    text = "The quick brown fox jumps over the lazy dog. " * 40_000
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    start = time.perf_counter()
    out = await TiktokenTokenizer().tokenize(text)
    elapsed = time.perf_counter() - start
    tick_task.cancel()
    assert out.count > 100_000
    # While the tokenizer ran on its thread, the loop kept ticking; a blocked loop ticks ~once.
    assert elapsed < 0.05 or ticks >= 3


async def test_yake_ranks_relevant_phrases_as_plain_floats():
    text = (
        "The battery life of this phone is amazing. Battery charging is fast, "
        "and the battery lasts two days."
    )
    keywords = await YakeKeywords(top_k=5).extract(text)
    assert 0 < len(keywords) <= 5
    assert any("battery" in k.term.lower() for k in keywords)
    assert all(type(k.score) is float and 0 < k.score <= 1 for k in keywords)
    assert [k.score for k in keywords] == sorted((k.score for k in keywords), reverse=True)
    assert await YakeKeywords().extract("   ") == []


async def test_vader_labels():
    vader = VaderSentiment()
    assert label_for(await vader.score("I love it, this is wonderful!")) == "positive"
    assert label_for(await vader.score("This is awful, broken and useless.")) == "negative"
    assert label_for(await vader.score("")) == "neutral"


def test_a_keyword_occurs_in_a_text_whatever_its_case_and_inflection():
    from anabranch.tools.keywords import occurs_in

    text = "The chargers CRASHED twice; customer support didn't reply."
    for term in ("charger", "crash", "Customer Support", "support customers", "didn't"):
        assert occurs_in(term, text), term
    for term in ("refund", "cat", "", "charge cable"):
        assert not occurs_in(term, text), term
