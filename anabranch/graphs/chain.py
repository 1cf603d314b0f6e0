"""The chain graph: START -> specialist 1 -> specialist 2 -> ... -> END.

Each step sees the initial prompt and the previous output (or every earlier output). A step whose
LLM call fails after the endpoint's retries is recorded as failed and the chain stops there: its
error never becomes the next step's input. Text streams out as LangGraph custom events
(`stream_mode="custom"`), so a terminal or a chat backend can show it as it is written.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypedDict, cast

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer

from anabranch.agents.specialists import Specialist
from anabranch.errors import ConfigError, LLMOutputError
from anabranch.events import Event, StepEnded, StepStarted, TextDelta
from anabranch.graphs.state import Graph, now, requested_sampling
from anabranch.graphs.sync import sync_capable
from anabranch.llm.connect import LLMOptions, build_endpoint
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.settings import Sampling
from anabranch.telemetry.tracing import agent_node
from anabranch.types import ChainResult, ChainStep, SubtaskError, ToolCallRecord, Usage

ChainContext = Literal["previous", "all"]
"""What a step sees besides the prompt: the previous output, or all earlier outputs."""


class ChainState(TypedDict, total=False):
    prompt: str
    steps: Annotated[list[ChainStep], operator.add]


def build_chain_graph(
    specialists: Sequence[Specialist],
    endpoint: Endpoint,
    *,
    context: ChainContext = "previous",
    endpoints: Mapping[str, Endpoint] | None = None,
    checkpointer: Checkpointer = None,
) -> Graph:
    """Compile a sequential chain; `endpoints` gives specialists an endpoint of their own."""
    if not specialists:
        raise ConfigError("a chain needs at least one specialist")
    names = [s.name for s in specialists]
    if len(set(names)) != len(names):
        raise ConfigError(f"specialist names must be unique in a chain, got {names}")
    endpoints = endpoints or {}

    builder = StateGraph(ChainState)
    for i, specialist in enumerate(specialists, start=1):
        own = endpoints.get(specialist.name, endpoint)
        last = i == len(specialists)
        builder.add_node(specialist.name, _step_node(i, specialist, own, context, last))
    builder.add_edge(START, names[0])
    for current, following in itertools.pairwise(names):
        builder.add_conditional_edges(current, _continue_to(following), [following, END])
    builder.add_edge(names[-1], END)
    return sync_capable(builder.compile(checkpointer=checkpointer))


def chain_result(state: ChainState, specialists: Sequence[Specialist]) -> ChainResult:
    """The chain's outcome from its final state: every step so far, and what was planned."""
    return ChainResult(
        prompt=state["prompt"], steps=state.get("steps", []), planned=[s.name for s in specialists]
    )


async def run_chain(
    graph: Graph,
    prompt: str,
    specialists: Sequence[Specialist],
    on_event: Callable[[Event], None] | None = None,
) -> ChainResult:
    """Run a chain graph on `prompt`, handing each event (steps starting, text as it is written,
    steps ending) to `on_event`, and return the result from the final state."""
    state: ChainState = {"prompt": prompt}
    async for mode, chunk in graph.astream(state, stream_mode=["custom", "values"]):
        if mode == "values":
            state = cast(ChainState, chunk)
        elif on_event is not None:
            on_event(cast(Event, chunk))
    return chain_result(state, specialists)


def _continue_to(following: str) -> Callable[[ChainState], str]:
    def route(state: ChainState) -> str:
        return following if state["steps"][-1].status == "ok" else END

    return route


def _messages(
    specialist: Specialist, prompt: str, earlier: Sequence[ChainStep], context: ChainContext
) -> list[dict[str, str]]:
    if not earlier:
        user = prompt
    else:
        shown = earlier if context == "all" else earlier[-1:]
        answers = "\n\n".join(f"Previous answer ({s.specialist}):\n{s.output}" for s in shown)
        user = f"Question:\n{prompt}\n\n{answers}\n\nBuild on it as your role requires."
    system = specialist.system_prompt
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _step_node(
    index: int, specialist: Specialist, endpoint: Endpoint, context: ChainContext, last: bool
) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def step(
        state: ChainState, runtime: Runtime[Any], config: RunnableConfig
    ) -> dict[str, Any]:
        write = runtime.stream_writer
        messages = _messages(specialist, state["prompt"], state.get("steps", []), context)
        model = specialist.model or endpoint.model
        asked = requested_sampling(config)
        # Every step is held to the caller's sampling; only the answer's own step to its stop
        # sequences and format, which would cut or reshape the earlier steps' drafts.
        extra = {k: asked[k] for k in ("top_p", "seed") if k in asked}
        if last:
            extra |= {k: asked[k] for k in ("stop", "response_format") if k in asked}
        temperature = asked.get("temperature", specialist.temperature)
        write(StepStarted(step=index, specialist=specialist.name))
        about = {"index": index, "specialist": specialist.name, "model": model,
                 "temperature": temperature}  # fmt: skip
        start = now()
        calls: list[ToolCallRecord] = []
        try:
            if specialist.tools or specialist.output_type is not None:
                text, usage, calls = await _agent_step(
                    specialist, endpoint, messages, temperature, asked.get("max_tokens")
                )
                write(TextDelta(step=index, specialist=specialist.name, text=text))
                truncated = False
            else:
                completion = await endpoint.stream_chat(
                    messages,
                    lambda text: write(
                        TextDelta(step=index, specialist=specialist.name, text=text)
                    ),
                    temperature=temperature,
                    max_tokens=asked.get("max_tokens", specialist.max_tokens),
                    model=model,
                    extra=extra,
                )
                text, usage = completion.text, completion.usage
                truncated = completion.finish_reason == "length"
            if not text.strip():
                raise LLMOutputError("the model returned no text")
        except Exception as exc:  # noqa: BLE001 - a failed step is recorded; the chain stops
            error = SubtaskError(
                kind=specialist.name,
                type=type(exc).__name__,
                message=str(exc) or repr(exc),
                attempts=getattr(exc, "attempts", 1),
            )
            record = ChainStep.model_validate(
                {**about, "seconds": now() - start, "status": "error", "error": error,
                 "usage": getattr(exc, "usage", None) or Usage(),
                 "tool_calls": getattr(exc, "tool_calls", None) or []}
            )  # fmt: skip
        else:
            record = ChainStep.model_validate(
                {**about, "seconds": now() - start, "status": "ok", "output": text.strip(),
                 "usage": usage, "truncated": truncated, "tool_calls": calls}
            )  # fmt: skip
        write(StepEnded(step=index, specialist=specialist.name, status=record.status,
                        seconds=record.seconds))  # fmt: skip
        return {"steps": [record]}

    step.__name__ = f"step_{index}_{specialist.name}"
    return agent_node(specialist.name, step, _step_failure)


def _step_failure(update: dict[str, Any]) -> str | None:
    """The error type a failed step recorded, for its span."""
    error = update["steps"][-1].error
    return error.type if error is not None else None


async def _agent_step(
    specialist: Specialist,
    endpoint: Endpoint,
    messages: list[dict[str, Any]],
    temperature: float,
    max_tokens: int | None,
) -> tuple[str, Usage, list[ToolCallRecord]]:
    """A step with tools or an output model: the specialist as an LLMAgent (its tool turns and
    calls go to the stream as they happen); a typed answer becomes its JSON."""
    from anabranch.agents.llm import LLMAgent, TextOutput

    agent = LLMAgent(
        specialist.name,
        endpoint,
        output_type=specialist.output_type or str,
        tools=specialist.tools,
        sampling=Sampling(temperature=temperature, max_tokens=max_tokens or specialist.max_tokens),
        max_steps=specialist.max_steps,
    )
    answer = await agent.answer(messages)
    output = answer.output
    text = output.text if isinstance(output, TextOutput) else output.model_dump_json(indent=2)
    return text, answer.usage, answer.tool_calls


async def run_specialists(
    prompt: str,
    specialists: Sequence[Specialist],
    endpoint: Endpoint,
    *,
    context: ChainContext = "previous",
    on_event: Callable[[Event], None] | None = None,
) -> ChainResult:
    """Build and run a chain in one call: what `anabranch chain` does.

    A specialist with a `base_url` of its own gets an endpoint there, with the chain's timeouts
    and retry policy and no API key: the chain's key is for the chain's server and is never sent
    elsewhere.
    """
    async with contextlib.AsyncExitStack() as stack:
        own = {
            s.name: await stack.enter_async_context(
                build_endpoint(
                    LLMOptions(
                        s.base_url,
                        s.model or endpoint.model,
                        timeouts=endpoint.timeouts,
                        retry=endpoint.retry,
                    )
                )
            )
            for s in specialists
            if s.base_url
        }
        graph = build_chain_graph(specialists, endpoint, context=context, endpoints=own)
        return await run_chain(graph, prompt, specialists, on_event)
