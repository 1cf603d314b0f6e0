"""The seed's other task kinds: summarize and translate, each an LLMAgent of a few lines.

A long text is cut into chunks like any other; each chunk's summary (or translation) comes from
the model, and the chunks' outputs are joined in order by the agent's merge rule, the reduce
step. The rule planner sends a task here when its instruction asks (`ROUTES`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from anabranch.agents.base import Part
from anabranch.agents.llm import LLMAgent
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.settings import Sampling

SUMMARIZE = "summarize"
TRANSLATE = "translate"

ROUTES: dict[str, tuple[str, ...]] = {"summar": (SUMMARIZE,), "translat": (TRANSLATE,)}
"""Words an instruction may start a word with (summarize, summary; translate, translation), and
the agents they send a task to (RulePlanner.routes)."""

DESCRIPTIONS = {
    SUMMARIZE: "a short summary of the text",
    TRANSLATE: "the text translated into the language the request names",
}
"""What each agent does, as the LLM planner reads it."""


class Summary(BaseModel):
    """What the summarizer returns."""

    summary: str = Field(description="The text's main points, in a few sentences.", max_length=600)
    """Bounded, so that a small model cannot run on to the end of its tokens (the schema's
    grammar stops it)."""


class Translation(BaseModel):
    """What the translator returns."""

    text: str = Field(description="The whole text, translated.")
    target_language: str = Field(description="The language translated into, e.g. French.")


def join_summaries(parts: Sequence[Part[Summary]]) -> Summary:
    """The chunks' summaries, in the text's order."""
    return Summary(summary=" ".join(p.output.summary.strip() for p in parts))


def join_translations(parts: Sequence[Part[Translation]]) -> Translation:
    """The chunks' translations, in the text's order, into the first chunk's language."""
    language = parts[0].output.target_language if parts else ""
    return Translation(text=" ".join(p.output.text.strip() for p in parts),
                       target_language=language)  # fmt: skip


def summarizer(endpoint: Endpoint, name: str = SUMMARIZE) -> LLMAgent:
    """An agent that summarizes each chunk; the summaries are joined."""
    return LLMAgent(
        name,
        endpoint,
        instructions="Summarize the user's text in one to three sentences. Keep its facts.",
        output_type=Summary,
        sampling=Sampling(max_tokens=384),
        merge=join_summaries,
    )


def translator(endpoint: Endpoint, name: str = TRANSLATE) -> LLMAgent:
    """An agent that translates each chunk into the language the request names (English when
    it names none); the translations are joined."""
    return LLMAgent(
        name,
        endpoint,
        instructions="Translate the user's text into the language the request names (English "
        "if it names none). Give the translation and the target language.",
        output_type=Translation,
        sampling=Sampling(max_tokens=1024),  # a chunk's translation is about as long as it
        merge=join_translations,
    )
