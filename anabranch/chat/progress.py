"""A run's progress as a person reads it: one line per event, for `reasoning_content`.

Chat UIs (Open WebUI, LibreChat) show a model's `delta.reasoning_content` as a collapsible
thinking block, which is where a graph's progress belongs for a person; the SSE comments
(`: anabranch {...}`) stay the machine-readable channel, skipped by standard clients.
"""

from __future__ import annotations

import json

from anabranch.events import (
    AgentDone,
    BaseEvent,
    Custom,
    NodeDone,
    Planned,
    StepEnded,
    StepStarted,
    TextDelta,
    UsageTotal,
)


def progress_line(event: BaseEvent) -> str:
    """The event as a line of text ending in a newline; empty for what a person need not read
    (a chain step's words, which come as the answer or not at all)."""
    match event:
        case Planned(subtasks=kinds):
            return f"Planned {len(kinds)} subtasks: {', '.join(kinds)}\n"
        case AgentDone(agent=agent, chunk=chunk, status=status, usage=usage):
            tokens = usage.prompt_tokens + usage.completion_tokens
            return f"{agent} (chunk {chunk}): {status}, {tokens} tokens\n"
        case StepStarted(step=step, specialist=name):
            return f"Step {step}: {name} is writing...\n"
        case StepEnded(step=step, specialist=name, status=status, seconds=seconds):
            return f"Step {step}: {name} {status} in {seconds:.1f} s\n"
        case NodeDone(node=node):
            return f"{node} wrote a message\n"
        case UsageTotal(prompt_tokens=prompt, completion_tokens=completion):
            return f"Used {prompt} prompt and {completion} completion tokens\n"
        case Custom(data=data):
            return f"{data if isinstance(data, str) else json.dumps(data, default=str)}\n"
        case TextDelta():
            return ""
    return f"{event.model_dump_json()}\n"
