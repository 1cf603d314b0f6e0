"""The chat adapters read a real graph's stream: every result counts, none is skipped."""

from dataclasses import dataclass

from anabranch import build_fanout_graph, local_agents
from anabranch.chat.adapters import STREAM_MODES, AnalyzeChat
from anabranch.events import AgentDone, Planned
from anabranch.types import Subtask


@dataclass
class PlannerWithStrays:
    """Plans one real subtask and two for agents the graph does not have."""

    async def plan(self, task):
        return [Subtask(task_id=task.id, kind=k, text=task.text)
                for k in ("sentiment", "translate", "summarise")]  # fmt: skip


async def test_every_result_in_an_update_becomes_a_progress_event():
    chat = AnalyzeChat(build_fanout_graph(PlannerWithStrays(), local_agents()))
    turn = chat.start([{"role": "user", "content": "What a lovely day."}])
    events = []
    async for mode, chunk in chat.graph.astream(turn.input, stream_mode=STREAM_MODES):
        events += turn.feed(mode, chunk)[1]
    done = sorted((e.agent, e.status) for e in events if isinstance(e, AgentDone))
    # The planner's update carries both stray error records at once; neither may be dropped.
    assert done == [("sentiment", "ok"), ("summarise", "error"), ("translate", "error")]
    assert [e.subtasks for e in events if isinstance(e, Planned)] == [
        ["sentiment", "translate", "summarise"]
    ]
    answer = turn.answer()
    assert answer.startswith("Sentiment: positive") and "Error in translate: LookupError" in answer
