"""The chat adapters read a real graph's stream: every result counts, none is skipped."""

from dataclasses import dataclass

from anabranch import build_fanout_graph
from anabranch.analysis import local_agents, render_analysis
from anabranch.chat.adapters import STREAM_MODES, FanoutChat, render_outputs
from anabranch.events import AgentDone, Planned
from anabranch.types import Subtask


@dataclass
class PlannerWithStrays:
    """Plans one real subtask and two for agents the graph does not have."""

    async def plan(self, task):
        return [Subtask(task_id=task.id, kind=k, text=task.text)
                for k in ("sentiment", "translate", "summarise")]  # fmt: skip


async def test_every_result_in_an_update_becomes_a_progress_event():
    chat = FanoutChat(
        build_fanout_graph(local_agents(), PlannerWithStrays()), render=render_analysis
    )
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


async def test_any_fan_out_graph_answers_with_its_outputs_by_default():
    chat = FanoutChat(build_fanout_graph(local_agents()[2:]))  # sentiment alone
    turn = chat.start([{"role": "user", "content": "What a lovely day."}])
    async for mode, chunk in chat.graph.astream(turn.input, stream_mode=STREAM_MODES):
        turn.feed(mode, chunk)
    assert turn.answer() == render_outputs(turn.result)
    assert turn.answer().startswith('sentiment: {"label": "positive", "score": ')
