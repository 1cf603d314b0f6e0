"""An agent with two tools, declared in a few lines: the model calls them, at once when it asks
for both in one turn, and answers from their results.

    python examples/tool_agent.py [LLM]    # LLM: `local` (the default) or an OpenAI-compatible URL

Every call and its result is kept in the task's result; a tool that raises, hangs past its
deadline or gets bad arguments becomes an error the model reads, never a crash. (The embedded
135M model rarely calls a tool; a larger model, or the project's fault server taught to call
tools, shows the loop at work.)
"""

import asyncio
import sys

import anabranch as ab


def weather(city: str) -> str:
    """The current weather in a city.

    Args:
        city: the city's name, e.g. Oslo
    """
    return {"oslo": "snow, -3 C", "lima": "sunny, 24 C"}.get(city.lower(), "unknown")


async def local_time(city: str) -> str:
    """The local time in a city.

    Args:
        city: the city's name
    """
    return {"oslo": "09:00", "lima": "03:00"}.get(city.lower(), "unknown")


async def main(llm: str) -> None:
    async with ab.open_endpoint(ab.LLMOptions(llm=llm)) as endpoint:
        agent = ab.LLMAgent("travel", endpoint, instructions="Answer with the tools' help.",
                            tools=[weather, local_time])  # fmt: skip
        graph = ab.build_fanout_graph([agent])
        task = ab.Task(id="q", text="What is the weather and the time in Oslo?")
        result = (await graph.ainvoke({"task": task}))["result"]
    for call in result.tool_calls:
        print(f"called {call.name}({call.arguments}) -> {call.result or call.error}")
    for output in result.output("travel") if result.status == "ok" else ():
        print("answer:", output.text)
    print("status:", result.status, *(f"{e.type}: {e.message}" for e in result.errors))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "local"))
