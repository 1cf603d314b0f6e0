"""Tool calls without the server's `tools`: the tools described in the prompt, the calls read
from the text.

Some servers refuse `tools` (a 400 about them); some models, offered native tools, write their
call as text anyway (small local models do). Both are read here: a `<tool_call>{...}</tool_call>`
block, or the whole answer as bare JSON (`{"name": ..., "arguments": {...}}`, or a list of them).
A block is a call whatever it names (an unknown name gets its error message like any call); bare
JSON is a call only when it names an offered tool, so an answer that happens to be JSON is not
mistaken for one.

The messages of a turn are also built here, in the form the mode needs: native `tool_calls` and
`tool` messages, or the model's text and a user message with `<tool_response>` blocks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from anabranch.errors import LLMStatusError
from anabranch.redact import redact
from anabranch.types import ToolCallRecord

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_ABOUT_TOOLS = re.compile(r"\btools?\b|tool_choice|function", re.I)

MARKER = "<tool_call>"
"""What the prompt asks the model to write; a test server knows a prompted request by it."""


def with_tools_prompt(
    messages: list[dict[str, Any]], specs: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The conversation with the tools described in a system message of its own, first."""
    listed = "\n".join(json.dumps(spec["function"]) for spec in specs)
    prompt = (
        "You can call these tools (JSON schemas of their arguments):\n"
        f"{listed}\n\n"
        "To call a tool, reply with only one block per call, like\n"
        f'{MARKER}{{"name": "TOOL", "arguments": {{...}}}}</tool_call>\n'
        "Their results come back in <tool_response> blocks. When you have what you need, "
        "reply with your answer and no tool call."
    )
    return [{"role": "system", "content": prompt}, *messages]


def text_calls(text: str, names: Sequence[str], step: int) -> list[dict[str, str]]:
    """The calls written in `text`, as `{"id", "name", "arguments"}` (arguments as JSON text)."""
    blocks = _BLOCK.findall(text or "")
    if blocks:
        found = [_call(block, None) for block in blocks]
    else:
        match = _FENCE.match(text or "")
        body = (match.group(1) if match else text or "").strip()
        if not body.startswith(("{", "[")):
            return []
        found = [_call(body, names)]
    calls = [c for group in found for c in group]
    return [{"id": f"text-{step}-{i}", **c} for i, c in enumerate(calls)]


def _call(body: str, names: Sequence[str] | None) -> list[dict[str, str]]:
    """Calls in one JSON text; with `names`, only calls of those tools (bare JSON)."""
    try:
        data = json.loads(body)
    except ValueError:
        if names is not None:
            return []
        return [{"name": "(unreadable)", "arguments": json.dumps(body)}]
    items = data if isinstance(data, list) else [data]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            if names is None:
                calls.append({"name": "(unreadable)", "arguments": json.dumps(body)})
            continue
        if names is not None and item["name"] not in names:
            continue
        arguments = item.get("arguments", item.get("parameters", {}))
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        calls.append({"name": item["name"], "arguments": raw})
    return calls


def tool_message_content(record: ToolCallRecord) -> str:
    """What the model reads for a call: the result, or `error: ...`."""
    if record.error is not None:
        return redact(f"error: {record.error}")
    return redact(record.result or "")


def refuses_tools(exc: LLMStatusError) -> bool:
    """A 400 about `tools` itself: the server does not take them."""
    return exc.status == 400 and bool(_ABOUT_TOOLS.search(str(exc)))


def turn_messages(
    text: str,
    calls: Sequence[tuple[str, str, str]],
    records: Sequence[ToolCallRecord],
    *,
    native: bool,
) -> list[dict[str, Any]]:
    """The assistant's turn and the answers to its calls (`(id, name, raw arguments)` each),
    as the conversation goes on: every call has its answer."""
    contents = [tool_message_content(r) for r in records]
    if native:
        asked = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": raw}}
            for cid, name, raw in calls
        ]
        return [
            {"role": "assistant", "content": text or None, "tool_calls": asked},
            *(
                {"role": "tool", "tool_call_id": cid, "content": content}
                for (cid, _, _), content in zip(calls, contents, strict=True)
            ),
        ]
    responses = "\n".join(
        f'<tool_response name="{name}">{content}</tool_response>'
        for (_, name, _), content in zip(calls, contents, strict=True)
    )
    return [{"role": "assistant", "content": text}, {"role": "user", "content": responses}]
