"""The "Chain Execution Results" report, in the structure docs/architecture.md draws.

Beyond the original format: tokens in and out per step, a note where a step was cut at its token
limit or failed, the tools a step called, and a Key Contribution taken from what the step
actually added: its new key phrases, the ones that appear in neither the prompt nor any earlier
step.
"""

from __future__ import annotations

import json
import re

from anabranch.tools.keywords import YakeKeywords
from anabranch.types import ChainResult, ChainStep

_WORD = re.compile(r"[\w'-]+")


def words(text: str) -> int:
    return len(_WORD.findall(text))


def mmss(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def render_chain_report(result: ChainResult) -> str:
    """The chain's *Chain Execution Results* report, as Markdown."""
    temperatures = {s.specialist: s.temperature for s in result.steps}
    lines = ["# Chain Execution Results", ""]
    if not result.complete:
        failed = next((s for s in result.steps if s.status == "error"), None)
        where = f"step {failed.index} ({failed.specialist})" if failed else "an unknown step"
        lines += [
            f"> **Partial report:** the chain stopped at {where}; "
            f"{len([s for s in result.steps if s.status == 'ok'])} of "
            f"{len(result.planned)} steps completed.",
            "",
        ]
    lines += ["## Initial Prompt", "", result.prompt, "", "## Models Used", ""]
    for i, name in enumerate(result.planned, start=1):
        temp = temperatures.get(name)
        lines.append(
            f"{i}. {name} (temp={temp:g})" if temp is not None else f"{i}. {name} (not run)"
        )
    lines.append("")

    for step in result.steps:
        lines += [
            f"## Step {step.index}: {step.specialist} (execution time: {mmss(step.seconds)})",
            "",
        ]
        attempts = step.error.attempts if step.error else step.usage.requests or 1
        lines.append(
            f"*Model {step.model}; tokens: {step.usage.prompt_tokens} in, "
            f"{step.usage.completion_tokens} out; attempts: {attempts}.*"
        )
        lines.append("")
        if step.tool_calls:
            lines += ["**Tool calls:**", ""]
            lines += [f"- {c.name}({_arguments(c.arguments)}) -> "
                      + (f"error: {c.error}" if c.error is not None else str(c.result))
                      + f" ({c.seconds:.2f} s)" for c in step.tool_calls]  # fmt: skip
            lines.append("")
        if step.status == "error" and step.error:
            lines += [f"**Step failed:** {step.error.type}: {step.error.message}", ""]
            continue
        lines += [step.output, ""]
        if step.truncated:
            lines += ["*The output was cut at the step's token limit.*", ""]

    ran = [s.specialist for s in result.steps if s.status == "ok"]
    lines += [
        "## Chain Transformation Visualization",
        "",
        "This section visualizes how each specialist transformed the solution:",
        "",
        "### Progress Path",
        "",
        "```",
        " → ".join(["Initial Prompt", *ran]),
        "```",
        "",
        "### Contribution Analysis",
        "",
        "| Step | Specialist | Content Length | Processing Time | Key Contribution |",
        "|------|------------|----------------|-----------------|------------------|",
        f"| 0 | Initial Prompt | {words(result.prompt)} words | - | Starting point |",
    ]
    seen = [result.prompt]
    for step in result.steps:
        lines.append(
            f"| {step.index} | {step.specialist} | {words(step.output)} words "
            f"| {mmss(step.seconds)} | {key_contribution(step, seen, len(result.planned))} |"
        )
        seen.append(step.output)
    lines += [
        "",
        "### Token Usage",
        "",
        "| Step | Specialist | Tokens In | Tokens Out |",
        "|------|------------|-----------|------------|",
    ]
    lines += [
        f"| {s.index} | {s.specialist} | {s.usage.prompt_tokens} | {s.usage.completion_tokens} |"
        for s in result.steps
    ]
    total_in = sum(s.usage.prompt_tokens for s in result.steps)
    total_out = sum(s.usage.completion_tokens for s in result.steps)
    lines += [f"| | total | {total_in} | {total_out} |", ""]
    return "\n".join(lines)


def _arguments(arguments: dict[str, object] | str) -> str:
    """A call's arguments on one line, as the model passed them."""
    if isinstance(arguments, str):
        return arguments
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())


def key_contribution(step: ChainStep, earlier: list[str], planned: int) -> str:
    if step.status == "error":
        return f"Failed ({step.error.type if step.error else 'error'})"
    role = (
        "Initial analysis"
        if step.index == 1
        else "Final integration"
        if step.index == planned
        else "Refinement and expansion"
    )
    before = {w.lower() for text in earlier for w in _WORD.findall(text)}
    fresh = [
        k.term
        for k in YakeKeywords(top_k=15).extract_sync(step.output)
        if any(w.lower() not in before for w in _WORD.findall(k.term))
    ]
    added = ", ".join(term.replace("|", "/") for term in fresh[:3])
    return f"{role}; adds: {added}" if fresh else f"{role}; no new key terms"
