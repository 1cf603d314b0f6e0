"""Mount served graphs in your own FastAPI backend, then talk to them with the openai client.

    python examples/chat_backend.py          # starts the backend, asks it once, stops

The graphs live under /graphs/v1 beside your own routes, as chat completions and as the
Responses API. A mounted app gets no lifespan events of
its own, so the parent's lifespan closes it.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import openai
import uvicorn
from fastapi import FastAPI

from anabranch.analysis import analysis_chat
from anabranch.chat import create_app
from anabranch.llm.local_server import free_port

TOKEN = "example-token"
graphs = create_app(
    [analysis_chat()],  # the analysis on local analysts: no LLM needed
    api_token=TOKEN,
    threads_db=":memory:",
)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await graphs.aclose()  # the thread store of the mounted app


backend = FastAPI(lifespan=lifespan)
backend.mount("/graphs", graphs)


@backend.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def main() -> None:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(backend, port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/graphs/v1", api_key=TOKEN)
    reply = await client.chat.completions.create(
        model="analyze",
        messages=[{"role": "user", "content": "The new release is fast and a joy to use."}],
        extra_headers={"X-Thread-Id": "example"},
    )
    print(reply.choices[0].message.content)
    # The same graph through the Responses API, with its progress as the thinking a chat UI shows.
    response = await client.responses.create(model="analyze", input="Slow and buggy, sadly.")
    print(response.output_text.splitlines()[0])
    whole = await client.chat.completions.create(
        model="analyze",
        messages=[{"role": "user", "content": "Slow and buggy, sadly."}],
        extra_headers={"X-Anabranch-Progress": "reasoning"},
    )
    print(whole.choices[0].message.reasoning_content.splitlines()[0])  # type: ignore[attr-defined]
    server.should_exit = True
    await serving


if __name__ == "__main__":
    asyncio.run(main())
