"""POST /recommend as a plain ASGI route in front of FastAPI's own layers (no Ray imports).

Serve's direct ingress already wraps every request in its own ASGI layers; FastAPI then adds
about ten more (exception and body-limit middlewares, router, dependency solving, response-model
validation, serialisation). On a CPU replica that Python runs per request on the same
interpreter as the batcher: profiled at c64 on 2 cores, FastAPI's part was about a quarter of
the replica event loop's busy samples (docs/benchmarks.md, Serving).

`RecommendFastPath` parses and validates the body with the same pydantic model
(`RecommendRequest`), calls the same handler as the FastAPI route, and writes the same JSON.
Anything else (other paths, methods or content types, or no handler registered in this
process) goes on to FastAPI, which also keeps documenting /recommend in the OpenAPI schema.

The handler is registered per process (`register`), one Serve replica per process. It lives
in this installed module, not in the app file, because Serve freezes the FastAPI app with
cloudpickle: a middleware class from the app file arrives with its own copy of that file's
globals, so a registry there is never the one the replica's constructor fills.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from pydantic import ValidationError

from lmrec.serving.schemas import RecommendRequest


class RecommendHandler(Protocol):
    api_key_header: bytes  # lower-case, as ASGI gives header names

    def recommend_handler(
        self, api_key: str | None, body: RecommendRequest, t0: float
    ) -> Awaitable[tuple[int, dict[str, Any]]]:
        """(status, JSON body) of one validated request."""

    def observe(self, endpoint: str, status: int, t0: float) -> None:
        """Record one request's latency."""


_handler: dict[str, RecommendHandler] = {}


def register(handler: RecommendHandler | None) -> None:
    """Serve POST /recommend in this process through `handler` (None: through FastAPI)."""
    _handler.pop("recommend", None)
    if handler is not None:
        _handler["recommend"] = handler


def invalid_body(errors: Any, prefix: tuple = ()) -> dict[str, Any]:
    """The 422 body of a request that failed validation: each error's location and message."""
    return {
        "error": "invalid request",
        "detail": [{"loc": [*prefix, *e.get("loc", ())], "msg": e.get("msg", "")} for e in errors],
    }


class RecommendFastPath:
    """ASGI middleware: POST /recommend with a JSON (or no) content type skips FastAPI."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        handler = _handler.get("recommend")
        if handler is None or scope["type"] != "http" or scope["method"] != "POST" or route_path(scope) != "/recommend":
            return await self.app(scope, receive, send)
        ctype = header(scope, b"content-type")
        if ctype is not None:
            mime = ctype.split(b";", 1)[0].strip().lower()
            if mime != b"application/json" and not mime.endswith(b"+json"):
                return await self.app(scope, receive, send)  # FastAPI answers it as it would
        t0 = time.perf_counter()
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away before its body arrived
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            body = RecommendRequest.model_validate_json(b"".join(chunks))
        except ValidationError as exc:
            handler.observe("recommend", 422, t0)
            status, content = 422, invalid_body(exc.errors(include_url=False), prefix=("body",))
        else:
            key = header(scope, handler.api_key_header)
            status, content = await handler.recommend_handler(None if key is None else key.decode("latin-1"), body, t0)
        payload = json.dumps(content, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def route_path(scope: dict[str, Any]) -> str:
    """The request path below the app's route prefix, as Starlette's router matches it."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    """The first value of header `name` (lower-case bytes), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None
