"""The chat server's edge: what a client sends is checked there, so a malformed request is the
client's 400 (a 500 would tell it to retry the same broken request)."""

from __future__ import annotations

import httpx
import pytest
from conftest import start_server


@pytest.fixture(scope="module")
def local_server(tmp_path_factory):
    db = tmp_path_factory.mktemp("threads") / "threads.sqlite"
    process, url = start_server("--backend", "local", "--graph", "analyze",
                                "--threads-db", str(db))  # fmt: skip
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ([{"type": "text", "text": 5}], "text"),
        ([{"type": "text"}], "text"),
        (["just a string"], "content"),
    ],
)
def test_a_malformed_content_part_is_400(local_server, content, why):
    reply = httpx.post(f"{local_server}/chat/completions", timeout=30,
                       headers={"Authorization": "Bearer test-token-123"},
                       json={"model": "analyze", "messages": [{"role": "user",
                                                               "content": content}]})  # fmt: skip
    assert reply.status_code == 400, reply.text
    assert why in reply.json()["error"]["message"]


def test_text_parts_are_read(local_server):
    content = [{"type": "text", "text": "I love it."}, {"type": "image_url", "image_url": {}}]
    reply = httpx.post(f"{local_server}/chat/completions", timeout=30,
                       headers={"Authorization": "Bearer test-token-123"},
                       json={"model": "analyze", "messages": [{"role": "user",
                                                               "content": content}]})  # fmt: skip
    assert reply.status_code == 200, reply.text
