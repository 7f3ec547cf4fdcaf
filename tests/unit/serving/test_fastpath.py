"""The plain-ASGI route for POST /recommend (lmrec.serving.fastpath), driven over ASGI messages.

The Serve integration tests run it behind real HTTP; these pin down which requests it takes,
which it leaves to FastAPI, and the bodies it writes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from lmrec.serving import fastpath
from lmrec.serving.schemas import RecommendRequest


class Handler:
    """A recommend handler as the Ingress registers it: echoes what it was given."""

    api_key_header = b"x-api-key"

    def __init__(self) -> None:
        self.observed: list[tuple[str, int]] = []

    async def recommend_handler(
        self, api_key: str | None, body: RecommendRequest, t0: float
    ) -> tuple[int, dict[str, Any]]:
        assert t0 <= time.perf_counter()
        if api_key != "k":
            return 401, {"error": "missing or invalid X-API-Key header", "detail": None}
        return 200, {"items": list(range(body.k)), "history": body.history, "explore": body.explore}

    def observe(self, endpoint: str, status: int, t0: float) -> None:
        self.observed.append((endpoint, status))


async def _downstream(scope: dict, receive: Any, send: Any) -> None:
    """Stands in for FastAPI: answers 299 so the tests can tell who answered."""
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"fastapi"})


def _call(
    body: bytes,
    method: str = "POST",
    path: str = "/recommend",
    headers: list | None = None,
    root_path: str = "",
    chunks: int = 1,
    disconnect: bool = False,
) -> tuple[int | None, bytes, dict]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": headers if headers is not None else [(b"content-type", b"application/json"), (b"x-api-key", b"k")],
    }
    step = max(1, len(body) // chunks)
    parts = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    messages = (
        [{"type": "http.disconnect"}]
        if disconnect
        else [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    )
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(fastpath.RecommendFastPath(_downstream)(scope, receive, send))
    if not sent:
        return None, b"", {}
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), dict(sent[0]["headers"])


@pytest.fixture
def handler():
    h = Handler()
    fastpath.register(h)
    yield h
    fastpath.register(None)


def test_recommend_is_answered_by_the_handler(handler: Handler) -> None:
    body = json.dumps({"history": [3, 1, 2], "k": 4, "explore": False}).encode()
    status, out, headers = _call(body, chunks=3)  # a body in several ASGI messages
    assert status == 200
    assert json.loads(out) == {"items": [0, 1, 2, 3], "history": [3, 1, 2], "explore": False}
    assert headers[b"content-type"] == b"application/json" and int(headers[b"content-length"]) == len(out)
    # below a route prefix, and with a JSON content type that carries parameters
    assert (
        _call(
            body,
            path="/api/recommend",
            root_path="/api",
            headers=[(b"content-type", b"application/json; charset=utf-8"), (b"x-api-key", b"k")],
        )[0]
        == 200
    )
    # no content type at all is read as JSON, as FastAPI does
    assert _call(body, headers=[(b"x-api-key", b"k")])[0] == 200
    assert _call(body, headers=[(b"content-type", b"application/json")])[0] == 401  # the key header is passed on


@pytest.mark.parametrize(
    "raw, loc",
    [
        (b"{not json", ["body"]),
        (b"[]", ["body"]),
        (json.dumps({"k": 5}).encode(), ["body"]),  # neither user_id nor history
        (json.dumps({"history": [1], "k": "ten"}).encode(), ["body", "k"]),
        (json.dumps({"history": [1], "k": 0}).encode(), ["body", "k"]),
        (json.dumps({"user_id": 1.5, "k": 5}).encode(), ["body", "user_id"]),
        (json.dumps({"history": [1], "k": 5, "bogus": 1}).encode(), ["body", "bogus"]),
    ],
)
def test_invalid_bodies_get_422_with_locations(handler: Handler, raw: bytes, loc: list) -> None:
    status, out, _ = _call(raw)
    assert status == 422
    body = json.loads(out)
    assert body["error"] == "invalid request" and body["detail"][0]["loc"] == loc and body["detail"][0]["msg"]
    assert handler.observed == [("recommend", 422)]  # counted in the latency histogram like any answer


def test_everything_else_goes_to_fastapi(handler: Handler) -> None:
    body = json.dumps({"history": [1], "k": 2}).encode()
    assert _call(body, method="GET")[0] == 299
    assert _call(body, path="/feedback")[0] == 299
    assert _call(body, path="/recommend/")[0] == 299
    assert _call(body, headers=[(b"content-type", b"text/plain")])[0] == 299  # FastAPI's own 4xx for these
    assert _call(body, disconnect=True)[0] is None  # client gone before its body: nothing is sent
    fastpath.register(None)
    assert _call(body)[0] == 299  # no handler registered (http_fast_path: false)
