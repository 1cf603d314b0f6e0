"""The fault server's Batch API: files, batches and their states, with faults on demand.

OpenAI's Batch API (also served by Azure OpenAI, Groq, Together, Mistral, vLLM's `run-batch`)
takes a JSONL file of requests (`POST /v1/files`, purpose `batch`), runs it as a batch
(`POST /v1/batches`) and, within its window, writes an output file and an error file. Here a
batch walks the same states, validating -> in_progress -> finalizing -> completed (or failed,
expired, cancelled), each lasting `step_seconds` instead of hours, and its requests are answered
as the server answers a live chat. On demand the next batches fail validation, expire with part
of their requests done (the rest in the error file as `batch_expired`), or lose requests (in
neither file, as a provider's bug would). The server counts what it was paid for, request by
request, so a test can tell a request paid twice.

State changes are worked out when a batch is read (`GET /v1/batches/ID`), from the time since it
was created: nothing runs in the background, and a client that dies and comes back finds the
batch where the clock says it is.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

RequestFault = Literal["invalid", "400", "500"]
"""What one request of a batch may get instead of its answer: content that fails the schema,
a permanent error, or a transient one (each in the error file but `invalid`)."""

Response = tuple[int, dict[str, str], bytes]


class BatchFaults(BaseModel):
    """How the Batch API behaves; part of the fault server's `FaultConfig`."""

    step_seconds: float = 0.05
    """How long each of validating, in_progress and finalizing lasts (hours, compressed)."""
    fail: int = 0
    """The next this many batches fail validation (no output, every request unfinished)."""
    expire: int = 0
    """The next this many batches expire, with `expire_done` of their requests answered."""
    expire_done: float = 0.5
    """The share of an expiring batch's requests answered before it expires."""
    lose: int = 0
    """The next this many batches complete but leave `lose_share` of their requests out of both
    files."""
    lose_share: float = 0.1
    """The share of a losing batch's requests found in neither file."""
    request_faults: dict[RequestFault, float] = Field(default_factory=dict)
    """Probability of each fault per request of a batch, e.g. {"500": 0.05}."""
    max_requests: int = 50_000
    """Requests one input file may hold (OpenAI's limit); more fails the batch's validation."""
    max_bytes: int = 200 * 1024 * 1024
    """Bytes one input file may hold (OpenAI's limit); a larger upload is refused."""
    max_enqueued_tokens: int | None = None
    """Tokens (a request's words plus its max_tokens) that may wait in unfinished batches at
    once (OpenAI's enqueued token limit); a batch that would go over fails validation."""
    seed: int = 0


Fate = Literal["complete", "fail", "expire", "lose"]

_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class _Batch:
    id: str
    input_file_id: str
    created: float
    fate: Fate
    requests: list[dict[str, Any]]
    metadata: dict[str, str]
    echoed: str | None
    tokens: int
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )


class BatchApi:
    """The routes `/v1/files` and `/v1/batches`, mounted into the fault server's app.

    `answer(body)` is the server's live answer to a chat request body (a completion dict)."""

    def __init__(self, faults: BatchFaults, answer: Callable[[dict[str, Any], bool], Any]) -> None:
        self.faults = faults
        self._answer = answer
        self._random = random.Random(faults.seed)
        self._ids = itertools.count(1)
        self._files: dict[str, tuple[str, bytes]] = {}
        self._batches: dict[str, _Batch] = {}
        self._left = {"fail": faults.fail, "expire": faults.expire, "lose": faults.lose}
        self.paid: Counter[str] = Counter()
        """Answers paid for, per request (a digest of its body)."""
        self.created_sizes: list[int] = []
        """Requests per batch created, in order."""
        self.uploads = 0
        self.most_enqueued = 0
        """The most tokens waiting in unfinished batches at once, the new one included."""
        self.over_token_limit = 0
        """Batches failed for going over `max_enqueued_tokens`."""

    def stats(self) -> dict[str, Any]:
        """What the server counts: files, batches by state, requests paid (and paid twice)."""
        for batch in self._batches.values():
            self._advance(batch)
        return {
            "files_uploaded": self.uploads,
            "batches_created": len(self._batches),
            "requests_per_batch": self.created_sizes,
            "states": dict(Counter(b.status for b in self._batches.values())),
            "requests_paid": sum(self.paid.values()),
            "paid_twice": sum(1 for n in self.paid.values() if n > 1),
            "most_enqueued_tokens": self.most_enqueued,
            "over_token_limit": self.over_token_limit,
        }

    def handle(
        self, method: str, path: str, body: bytes, echoed: str | None = None
    ) -> Response | None:
        """The answer for a Batch API route, or None when `path` is not one. `echoed`: a bearer
        token the error file's messages quote (`echo_credentials`)."""
        if method == "POST" and path == "/v1/files":
            return self._upload(body)
        if m := re.fullmatch(r"/v1/files/([\w-]+)(/content)?", path):
            if m[1] not in self._files:
                return _error(404, f"no file {m[1]}")
            name, data = self._files[m[1]]
            if m[2]:
                return 200, {"content-type": "application/octet-stream"}, data
            return _json(200, _file(m[1], name, data))
        if method == "POST" and path == "/v1/batches":
            return self._create(json.loads(body or b"{}"), echoed)
        if method == "GET" and path == "/v1/batches":
            listed = [self._object(self._advance(b)) for b in reversed(self._batches.values())]
            return _json(200, {"object": "list", "data": listed, "has_more": False})
        if m := re.fullmatch(r"/v1/batches/([\w-]+)(/cancel)?", path):
            if (batch := self._batches.get(m[1])) is None:
                return _error(404, f"no batch {m[1]}")
            self._advance(batch)
            if m[2] and method == "POST" and batch.status in ("validating", "in_progress"):
                batch.status = "cancelled"
                self._finish(batch, done=0, lost=0)
            return _json(200, self._object(batch))
        return None

    def _upload(self, body: bytes) -> Response:
        fields = _multipart(body)
        data = fields.get("file", b"")
        if fields.get("purpose") != b"batch":
            return _error(400, "purpose must be 'batch'")
        if len(data) > self.faults.max_bytes:
            return _error(400, f"file of {len(data)} bytes exceeds {self.faults.max_bytes}")
        file_id = f"file-{next(self._ids)}"
        self._files[file_id] = ("input.jsonl", data)
        self.uploads += 1
        return _json(200, _file(file_id, "input.jsonl", data))

    def _create(self, ask: dict[str, Any], echoed: str | None) -> Response:
        file_id = ask.get("input_file_id", "")
        if file_id not in self._files:
            return _error(400, f"no input file {file_id}")
        if ask.get("endpoint") != "/v1/chat/completions" or ask.get("completion_window") != "24h":
            return _error(400, "endpoint must be /v1/chat/completions and the window 24h")
        lines = self._files[file_id][1].splitlines()
        requests = [json.loads(line) for line in lines if line.strip()]
        fate: Fate = "complete"
        tokens = sum(_tokens(r.get("body") or {}) for r in requests)
        waiting = sum(b.tokens for b in self._batches.values()
                      if self._advance(b).status not in _ENDED)  # fmt: skip
        limit = self.faults.max_enqueued_tokens
        if limit is not None and waiting + tokens > limit:
            fate = "fail"
            self.over_token_limit += 1
        self.most_enqueued = max(self.most_enqueued, waiting + tokens)
        kinds: tuple[Fate, ...] = ("fail", "expire", "lose")
        for kind in kinds:
            if fate == "complete" and self._left[kind] > 0:
                self._left[kind] -= 1
                fate = kind
                break
        batch = _Batch(
            f"batch_{next(self._ids)}",
            file_id,
            time.monotonic(),
            fate,
            requests,
            dict(ask.get("metadata") or {}),
            echoed,
            tokens,
        )
        batch.counts["total"] = len(requests)
        if limit is not None and waiting + tokens > limit:
            message = f"enqueued token limit reached: {waiting} + {tokens} > {limit}"
            batch.errors = [{"code": "token_limit_exceeded", "message": message, "line": None}]
        self._batches[batch.id] = batch
        self.created_sizes.append(len(requests))
        return _json(200, self._object(batch))

    def _advance(self, batch: _Batch) -> _Batch:
        """Move the batch along its states, by the time since it was created."""
        if batch.status in _ENDED:
            return batch
        steps = (time.monotonic() - batch.created) / self.faults.step_seconds
        too_many = len(batch.requests) > self.faults.max_requests
        if steps >= 1 and (batch.fate == "fail" or too_many):
            batch.status = "failed"
            message = (
                f"{len(batch.requests)} requests exceed {self.faults.max_requests}"
                if too_many
                else "the batch failed validation (fault on demand)"
            )
            batch.errors = batch.errors or [
                {"code": "invalid_file", "message": message, "line": None}
            ]
        elif steps >= 2 and batch.fate == "expire":
            batch.status = "expired"
            self._finish(batch, done=int(len(batch.requests) * self.faults.expire_done), lost=0)
        elif steps >= 3:
            batch.status = "completed"
            share = self.faults.lose_share if batch.fate == "lose" else 0.0
            self._finish(batch, done=len(batch.requests), lost=int(len(batch.requests) * share))
        elif steps >= 2:
            batch.status = "finalizing"
        elif steps >= 1:
            batch.status = "in_progress"
        return batch

    def _finish(self, batch: _Batch, *, done: int, lost: int) -> None:
        """Write the batch's output and error files: `done` requests answered (the last `lost`
        of them in neither file), the rest unfinished."""
        output, errors = [], []
        for i, request in enumerate(batch.requests):
            custom_id = request.get("custom_id")
            if i >= done:
                code = "batch_expired" if batch.status == "expired" else "batch_cancelled"
                errors.append(
                    {
                        "id": f"req_{i}",
                        "custom_id": custom_id,
                        "response": None,
                        "error": {"code": code, "message": f"the batch {batch.status}"},
                    }
                )
                continue
            if i >= done - lost:
                continue
            body = request.get("body") or {}
            fault = self._pick()
            if fault in ("400", "500"):
                status = int(fault)
                message = "bad request" if status == 400 else "server error"
                if batch.echoed is not None:
                    message += f": Incorrect API key provided: {batch.echoed}"
                response = {
                    "status_code": status,
                    "request_id": f"r{i}",
                    "body": {"error": {"message": message, "type": fault}},
                }
                errors.append(
                    {"id": f"req_{i}", "custom_id": custom_id, "response": response, "error": None}
                )
                continue
            self.paid[_digest(body)] += 1  # a provider bills the answers, not the errors
            completion = self._answer(body, fault == "invalid")
            output.append(
                {
                    "id": f"req_{i}",
                    "custom_id": custom_id,
                    "error": None,
                    "response": {"status_code": 200, "request_id": f"r{i}", "body": completion},
                }
            )
        batch.counts.update(completed=len(output), failed=len(errors))
        if output:
            batch.output_file_id = self._store_lines("output.jsonl", output)
        if errors:
            batch.error_file_id = self._store_lines("errors.jsonl", errors)

    def _pick(self) -> str:
        roll = self._random.random()
        for fault, rate in self.faults.request_faults.items():
            if roll < rate:
                return fault
            roll -= rate
        return "ok"

    def _store_lines(self, name: str, lines: list[dict[str, Any]]) -> str:
        file_id = f"file-{next(self._ids)}"
        self._files[file_id] = (name, b"".join(json.dumps(x).encode() + b"\n" for x in lines))
        return file_id

    def _object(self, batch: _Batch) -> dict[str, Any]:
        """The batch as OpenAI's API shows it."""
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(time.time()),
            "request_counts": batch.counts,
            "metadata": batch.metadata,
        }


def _tokens(body: dict[str, Any]) -> int:
    """A request's tokens as the server counts them: its messages' words and its max_tokens."""
    words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return words + int(body.get("max_tokens") or 0)


def _multipart(body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, found by the boundary its first line gives."""
    boundary = body.split(b"\r\n", 1)[0]
    fields = {}
    for part in body.split(boundary)[1:]:
        head, _, content = part.partition(b"\r\n\r\n")
        if name := re.search(rb'name="([^"]*)"', head):
            fields[name[1].decode()] = content.removesuffix(b"\r\n")
    return fields


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _file(file_id: str, name: str, data: bytes) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": len(data),
        "created_at": int(time.time()),
        "filename": name,
        "purpose": "batch",
        "status": "processed",
    }


def _json(status: int, payload: Any) -> Response:
    return status, {"content-type": "application/json"}, json.dumps(payload).encode()


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": {"message": message, "type": "invalid_request_error"}})
